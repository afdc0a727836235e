"""Weight-name conversion between the official checkpoints and this package's modules, and checked loading.

Official names: the SegFormer release (``mit_bX.pth``: ``patch_embed{S}.*``, ``block{S}.{j}.*``, ``norm{S}.*``,
stage ``S`` 1-based), CMX / PrimKD (the same names under ``backbone.``, the depth branch under ``backbone.extra_``,
``backbone.FRMs.{i}``, ``backbone.FFMs.{i}``, ``decode_head.*``) and Hugging Face ``nvidia/mit-bX``
(``segformer.encoder.*``, transformers 4 names, or the ``stages.*`` names transformers 5 uses in memory).
Ours: ``stages.{s}.patch_embed`` / ``.blocks.{j}`` / ``.norm`` (``s`` 0-based) inside ``encoder``,
``encoder_rgb``, ``encoder_modal``; ``frms.{i}``, ``ffms.{i}``, ``decoder``.

Each name table is a list of ``(official, ours)`` templates read in order, first match wins, in both directions.
Template fields: ``{S}`` 1-based stage, ``{s}`` the same stage 0-based, ``{j}`` block, ``{i}`` module index,
``{rest}`` the remaining dotted tail.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from primkd.io import DataError

StateDict = dict[str, Tensor]
NameTable = list[tuple[str, str]]

log = logging.getLogger(__name__)

_FIELD_REGEX = {"S": r"(?P<S>\d+)", "s": r"(?P<s>\d+)", "j": r"(?P<j>\d+)", "i": r"(?P<i>\d+)", "rest": r"(?P<rest>.+)"}

# SegFormer ImageNet release (encoder-relative) <-> MixVisionTransformer.
_MIT: NameTable = [
    ("patch_embed{S}.{rest}", "stages.{s}.patch_embed.{rest}"),
    ("block{S}.{j}.mlp.dwconv.dwconv.{rest}", "stages.{s}.blocks.{j}.mlp.dwconv.{rest}"),
    ("block{S}.{j}.{rest}", "stages.{s}.blocks.{j}.{rest}"),
    ("norm{S}.{rest}", "stages.{s}.norm.{rest}"),
]
_DECODER: NameTable = [
    ("decode_head.linear_c{S}.proj.{rest}", "decoder.proj.{s}.{rest}"),
    ("decode_head.linear_fuse.0.{rest}", "decoder.fuse.{rest}"),
    ("decode_head.linear_fuse.1.{rest}", "decoder.fuse_bn.{rest}"),
    ("decode_head.linear_pred.{rest}", "decoder.classifier.{rest}"),
]
_FUSION: NameTable = [
    ("backbone.FRMs.{i}.channel_weights.mlp.0.{rest}", "frms.{i}.channel_fc1.{rest}"),
    ("backbone.FRMs.{i}.channel_weights.mlp.2.{rest}", "frms.{i}.channel_fc2.{rest}"),
    ("backbone.FRMs.{i}.spatial_weights.mlp.0.{rest}", "frms.{i}.spatial_conv1.{rest}"),
    ("backbone.FRMs.{i}.spatial_weights.mlp.2.{rest}", "frms.{i}.spatial_conv2.{rest}"),
    ("backbone.FFMs.{i}.cross.channel_proj1.{rest}", "ffms.{i}.cross.proj_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.channel_proj2.{rest}", "ffms.{i}.cross.proj_modal.{rest}"),
    ("backbone.FFMs.{i}.cross.cross_attn.kv1.{rest}", "ffms.{i}.cross.kv_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.cross_attn.kv2.{rest}", "ffms.{i}.cross.kv_modal.{rest}"),
    ("backbone.FFMs.{i}.cross.end_proj1.{rest}", "ffms.{i}.cross.out_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.end_proj2.{rest}", "ffms.{i}.cross.out_modal.{rest}"),
    ("backbone.FFMs.{i}.cross.norm1.{rest}", "ffms.{i}.cross.norm_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.norm2.{rest}", "ffms.{i}.cross.norm_modal.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.residual.{rest}", "ffms.{i}.channel_embed.residual.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.0.{rest}", "ffms.{i}.channel_embed.conv_in.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.1.{rest}", "ffms.{i}.channel_embed.dwconv.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.3.{rest}", "ffms.{i}.channel_embed.conv_out.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.4.{rest}", "ffms.{i}.channel_embed.bn.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.norm.{rest}", "ffms.{i}.channel_embed.norm.{rest}"),
]
_CMX: NameTable = [
    *[("backbone.extra_" + o, "encoder_modal." + u) for o, u in _MIT],
    *[("backbone." + o, "encoder_rgb." + u) for o, u in _MIT],
    *_FUSION,
    *_DECODER,
]
_TEACHER: NameTable = [*[("backbone." + o, "encoder." + u) for o, u in _MIT], *_DECODER]

# Hugging Face (encoder-relative, transformers 4 and 5 names) -> SegFormer release names; ``attn.k``/``attn.v``
# are merged into ``attn.kv`` afterwards.
_HF_BLOCK = [
    ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
    ("attention.self.query", "attn.q"), ("attention.self.key", "attn.k"), ("attention.self.value", "attn.v"),
    ("attention.self.sr", "attn.sr"), ("attention.self.layer_norm", "attn.norm"),
    ("attention.output.dense", "attn.proj"), ("attention.q_proj", "attn.q"), ("attention.k_proj", "attn.k"),
    ("attention.v_proj", "attn.v"), ("attention.o_proj", "attn.proj"),
    ("attention.sequence_reduction.sequence_reduction", "attn.sr"),
    ("attention.sequence_reduction.layer_norm", "attn.norm"),
    ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
    ("mlp.dwconv.dwconv", "mlp.dwconv.dwconv"),
]
_HF: NameTable = [
    ("patch_embeddings.{s}.proj.{rest}", "patch_embed{S}.proj.{rest}"),
    ("patch_embeddings.{s}.layer_norm.{rest}", "patch_embed{S}.norm.{rest}"),
    ("stages.{s}.patch_embeddings.proj.{rest}", "patch_embed{S}.proj.{rest}"),
    ("stages.{s}.patch_embeddings.layer_norm.{rest}", "patch_embed{S}.norm.{rest}"),
    *[(f"block.{{s}}.{{j}}.{hf}.{{rest}}", f"block{{S}}.{{j}}.{off}.{{rest}}") for hf, off in _HF_BLOCK],
    *[(f"stages.{{s}}.blocks.{{j}}.{hf}.{{rest}}", f"block{{S}}.{{j}}.{off}.{{rest}}") for hf, off in _HF_BLOCK],
    ("layer_norm.{s}.{rest}", "norm{S}.{rest}"),
    ("stages.{s}.layer_norm.{rest}", "norm{S}.{rest}"),
]


@functools.cache
def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(_FIELD_REGEX[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts))


def _rename(key: str, table: NameTable, to_ours: bool) -> str | None:
    """Translate one name through ``table`` (official → ours if ``to_ours``); ``None`` if no template matches."""
    for official, ours in table:
        source, target = (official, ours) if to_ours else (ours, official)
        match = _compile(source).fullmatch(key)
        if match:
            fields = dict(match.groupdict())
            if "S" in fields:
                fields["s"] = str(int(fields["S"]) - 1)
            elif "s" in fields:
                fields["S"] = str(int(fields["s"]) + 1)
            return target.format(**fields)
    return None


def _convert(sd: Mapping[str, Tensor], table: NameTable, to_ours: bool, what: str,
             drop: Iterable[str] = ()) -> StateDict:
    """Rename every entry; keys starting with a ``drop`` prefix are left out (and logged), unknown keys raise
    ``KeyError``."""
    drop = tuple(drop)
    out, unknown, dropped = {}, [], []
    for key, value in sd.items():
        if key.startswith(drop):
            dropped.append(key)
            continue
        new = _rename(key, table, to_ours)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise KeyError(f"{what}: {len(unknown)} names not recognised, e.g. {unknown[:5]}; is this the right kind of "
                       f"checkpoint (strip wrappers such as 'module.' with strip_prefix first)?")
    if dropped:
        log.info("%s: left out %d entries not used here (%s), e.g. %s", what, len(dropped),
                 ", ".join(f"{p}*" for p in drop if any(k.startswith(p) for k in dropped)), dropped[0])
    return out


def strip_prefix(sd: Mapping[str, Tensor], prefix: str) -> StateDict:
    """Remove ``prefix`` (e.g. ``"module."`` from DDP checkpoints) from every key that starts with it."""
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def cmx_from_official(sd: Mapping[str, Tensor], drop: Iterable[str] = ()) -> StateDict:
    """Official CMX state dict (``backbone.*``, ``decode_head.*``) → ``CMX`` names.

    Args:
        sd: the official state dict (unwrapped, without ``module.``).
        drop: key prefixes to leave out, e.g. ``("decode_head.align_loss",)`` for PrimKD's training-only aligners.
    """
    return _convert(sd, _CMX, True, "CMX checkpoint", drop)


def cmx_to_official(sd: Mapping[str, Tensor]) -> StateDict:
    """``CMX`` state dict → official CMX names (inverse of ``cmx_from_official``)."""
    return _convert(sd, _CMX, False, "CMX model state")


def teacher_from_official(sd: Mapping[str, Tensor], drop: Iterable[str] = ()) -> StateDict:
    """Official single-stream state dict (PrimKD's ``RGBXTransformer2`` + ``DecoderHead``) → ``SegFormer`` names."""
    return _convert(sd, _TEACHER, True, "teacher checkpoint", drop)


def teacher_to_official(sd: Mapping[str, Tensor]) -> StateDict:
    """``SegFormer`` state dict → official names (inverse of ``teacher_from_official``)."""
    return _convert(sd, _TEACHER, False, "teacher model state")


def mit_from_segformer(sd: Mapping[str, Tensor]) -> StateDict:
    """SegFormer ImageNet weights (``mit_bX.pth``) → ``MixVisionTransformer`` names; the classifier ``head.*`` is
    dropped."""
    return _convert(sd, _MIT, True, "SegFormer MiT weights", drop=("head.",))


def _merge_kv(sd: StateDict) -> StateDict:
    """Stack separate ``attn.k.*`` and ``attn.v.*`` entries (rows k then v) into ``attn.kv.*``."""
    out = {k: v for k, v in sd.items() if ".attn.k." not in k and ".attn.v." not in k}
    for key in (k for k in sd if ".attn.k." in k):
        partner = key.replace(".attn.k.", ".attn.v.")
        if partner not in sd:
            raise KeyError(f"Hugging Face MiT weights: {key} has no matching value projection; the file is incomplete")
        out[key.replace(".attn.k.", ".attn.kv.")] = torch.cat([sd[key], sd[partner]], dim=0)  # (2C, …)
    return out


def mit_from_hf(sd: Mapping[str, Tensor]) -> StateDict:
    """Hugging Face ``nvidia/mit-bX`` / ``SegformerModel`` weights → ``MixVisionTransformer`` names.

    Accepts transformers 4 names with or without the ``segformer.`` prefix (``segformer.encoder.block.0.0.…``) and
    transformers 5 in-memory names (``stages.0.blocks.0.…``); separate key/value projections are stacked into
    ``kv`` (key rows first). Classifier and decoder-head entries are dropped.
    """
    encoder = {k.removeprefix("segformer.").removeprefix("encoder."): v for k, v in sd.items()}
    official = _convert(encoder, _HF, True, "Hugging Face MiT weights", drop=("classifier.", "decode_head."))
    return mit_from_segformer(_merge_kv(official))


class CheckpointMismatchError(DataError):
    """A state dict does not fit the model it is offered to; the message lists what differs."""


def _mit_summary(names_shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Describe the MiT encoder(s) in a state dict by width and depth per stage, naming a matching variant."""
    from primkd.models.mit import MIT_VARIANTS

    found: dict[str, dict[int, tuple[int, int]]] = {}
    for name, shape in names_shapes.items():
        match = re.fullmatch(r"(.*?)stages\.(\d+)\.blocks\.(\d+)\.norm1\.weight", name)
        if match:
            stages = found.setdefault(match[1], {})
            s, j = int(match[2]), int(match[3])
            stages[s] = (shape[0], max(j + 1, stages.get(s, (0, 0))[1]))
    parts = []
    for prefix, stages in sorted(found.items()):
        dims = tuple(stages[s][0] for s in sorted(stages))
        depths = tuple(stages[s][1] for s in sorted(stages))
        names = [n for n, v in MIT_VARIANTS.items() if tuple(v["embed_dims"]) == dims and tuple(v["depths"]) == depths]
        variant = f" = {names[0]}" if names else ""
        parts.append(f"{prefix.rstrip('.') or 'encoder'}: dims {dims} depths {depths}{variant}")
    return "; ".join(parts)


def load_state_dict_checked(module: nn.Module, sd: Mapping[str, Tensor], what: str) -> None:
    """Load ``sd`` into ``module`` strictly, or raise ``CheckpointMismatchError`` saying what does not fit.

    The message lists missing and unexpected names, shape mismatches, and the encoder width/depth per stage of both
    sides (so that, e.g., B2 weights offered to a B4 model are named as such).

    Args:
        module: the model (names as in this package; convert official checkpoints first).
        sd: the state dict to load.
        what: what the weights are, for the message (e.g. a file name).
    """
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in sd.items()}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    mismatched = [f"{k}: weights {given[k]} vs model {own[k]}" for k in sorted(set(own) & set(given))
                  if own[k] != given[k]]
    if missing or unexpected or mismatched:
        lines = [f"{what} do not fit the {type(module).__name__} model:"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                lines.append(f"  {len(items)} {label}: {', '.join(items[:6])}{' …' if len(items) > 6 else ''}")
        lines.append(f"  weights: {_mit_summary(given) or 'no MiT encoder found'}")
        lines.append(f"  model:   {_mit_summary(own) or 'no MiT encoder found'}")
        lines.append("  Build the model with the variant the weights were made for, or convert official names first.")
        raise CheckpointMismatchError("\n".join(lines))
    module.load_state_dict(sd, strict=True)


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read the tensors of a checkpoint: a ``.safetensors`` file or a torch pickle (loaded with ``weights_only``).

    A ``{"state_dict": …}`` or ``{"model": …}`` wrapper (as training engines save, next to optimizer state) is
    unwrapped and a DDP ``module.`` prefix removed; names are otherwise left as they are.

    Raises:
        DataError: the file is missing, unreadable, or holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise several types for truncated or foreign files
        raise DataError(f"{path}: cannot read the checkpoint ({e}); re-download it") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    tensors = isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values())
    if not tensors or not obj:
        raise DataError(f"{path}: expected a state dict (name → tensor), optionally under 'model' or 'state_dict'; "
                        f"found {type(obj).__name__} with keys {list(obj)[:5] if isinstance(obj, dict) else None}")
    return strip_prefix(obj, "module.")


def read_mit_pretrained(path: str | os.PathLike) -> StateDict:
    """Read ImageNet MiT weights as ``MixVisionTransformer`` names.

    Args:
        path: a SegFormer release file (``mit_bX.pth``), a Hugging Face file (``model.safetensors`` or
            ``pytorch_model.bin``) or a local copy of a Hugging Face ``nvidia/mit-bX`` folder.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise DataError(f"ImageNet MiT weights not found at {path}. Download mit_bX.pth from the SegFormer release "
                        "(github.com/NVlabs/SegFormer, 'ImageNet-1K pretrained weights') or the Hugging Face repo "
                        "nvidia/mit-bX (model.safetensors), and set the pretrained-weights path to that file.")
    sd = read_state_dict(path)
    if any(k.startswith("patch_embed1.") for k in sd):
        return mit_from_segformer(sd)
    return mit_from_hf(sd)


def load_mit_pretrained(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Initialise a ``MixVisionTransformer`` from ImageNet weights (see ``read_mit_pretrained``), strictly."""
    load_state_dict_checked(encoder, read_mit_pretrained(path), f"ImageNet MiT weights {path}")
