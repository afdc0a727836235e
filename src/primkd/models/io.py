"""Model weights in and out, in one place: read a state dict, load it checked, save and load model files, export
and read safetensors folders.

- **State dicts**: :func:`read_state_dict` reads ``.pth`` / ``.bin`` / ``.safetensors`` files (wrappers and a DDP
  ``module.`` prefix removed); :func:`load_state_dict_checked` loads one strictly and names what does not fit. The
  names of official and Hugging Face files are translated by the model files that own them
  (:func:`primkd.models.mit.mit_from_segformer`, :func:`primkd.models.segmentors.cmx_from_official`, ...).
- **Model files** (``model.pt``): ``{format, arch, inputs, info, state_dict}``; :func:`architecture` gives the
  builder arguments from params, :func:`build_model` the network.
- **Exports**: ``model.safetensors`` + ``config.json`` (:func:`export_safetensors`); :func:`load_any` reads either form.
- Where the ImageNet MiT weights come from: :mod:`primkd.pretrained` (:data:`~primkd.pretrained.HF_WEIGHT_FILES`,
  the download addresses).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from primkd.config import ModelConfig
from primkd.io import DataError, atomic_dir, atomic_path, read_json, write_json
from primkd.models.convert import StateDict, strip_prefix
from primkd.models.mit import MIT_VARIANTS, mit_from_hf, mit_from_segformer
from primkd.models.segmentors import build_student, build_teacher
from primkd.pretrained import HF_MIT_URL, HF_WEIGHT_FILES, SEGFORMER_IMAGENET_URL

log = logging.getLogger(__name__)

MODEL_FORMAT = "primkd-model-v1"
EXPORT_FORMAT = "primkd-export-v1"
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"


# --- State dicts ------------------------------------------------------------------------------------------------


class CheckpointMismatchError(DataError):
    """A state dict does not fit the model it is offered to; the message lists what differs."""


def _mit_summary(names_shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Describe the MiT encoder(s) in a state dict by width and depth per stage, naming a matching variant."""
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


def load_state_dict_checked(module: nn.Module, sd: Mapping[str, Tensor], what: str, fix: str | None = None) -> None:
    """Load ``sd`` into ``module`` strictly, or raise ``CheckpointMismatchError`` saying what does not fit.

    The message lists missing and unexpected names, shape mismatches, and the encoder width/depth per stage of both
    sides (so that, e.g., B2 weights offered to a B4 model are named as such).

    Args:
        module: the model (names as in this package; convert official checkpoints first).
        sd: the state dict to load.
        what: what the weights are, for the message (e.g. a file name).
        fix: what to do about a mismatch (default: build the right variant or convert official names).
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
        lines.append("  " + (fix or "Build the model with the variant the weights were made for, or convert official "
                                  "names first."))
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
        candidates = [path / name for name in HF_WEIGHT_FILES]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise DataError(f"ImageNet MiT weights not found at {path}. Download mit_bX.pth from the SegFormer release "
                        f"({SEGFORMER_IMAGENET_URL}) or the Hugging Face repo {HF_MIT_URL.format(repo='mit-bX')} "
                        f"({HF_WEIGHT_FILES[0]}), and set the pretrained-weights path to that file.")
    sd = read_state_dict(path)
    if any(k.startswith("patch_embed1.") for k in sd):
        return mit_from_segformer(sd)
    return mit_from_hf(sd)


# --- Model files ------------------------------------------------------------------------------------------------


def architecture(model: ModelConfig, kind: str, num_classes: int) -> dict:
    """Builder arguments of a ``"teacher"`` (single-stream) or ``"student"`` (CMX) network from the ``model``
    settings."""
    eps = model.teacher_decoder_bn_eps if kind == "teacher" else model.decoder_bn_eps
    return {"kind": kind, "variant": model.backbone, "num_classes": num_classes,
            "decoder_embed_dim": model.decoder_embed_dim, "drop_path_rate": model.drop_path_rate,
            "decoder_bn_eps": eps, "decoder_dropout": model.decoder_dropout}


def build_model(arch: dict) -> nn.Module:
    """Instantiate the network described by :func:`architecture`."""
    kwargs = {k: v for k, v in arch.items() if k != "kind"}
    return build_teacher(**kwargs) if arch["kind"] == "teacher" else build_student(**kwargs)


def model_blob(model: nn.Module, arch: dict, inputs: list[str], info: dict) -> dict:
    """The contents of a model file, ``{format, arch, inputs, info, state_dict}``, the weights copied to the CPU (so
    that the blob keeps them while the network trains on).

    Args:
        model: the trained network (a DDP wrapper is unwrapped).
        arch: builder arguments (:func:`architecture`).
        inputs: the batch keys the network takes, e.g. ``["rgb"]`` or ``["rgb", "modal"]``.
        info: run metadata (preset, seed, experiment, classes, ...).
    """
    model = getattr(model, "module", model)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return {"format": MODEL_FORMAT, "arch": arch, "inputs": inputs, "info": info, "state_dict": state}


def save_model(path: str | os.PathLike, model: nn.Module, arch: dict, inputs: list[str], info: dict) -> None:
    """Write the model file of ``model`` (:func:`model_blob`) to ``path`` atomically."""
    save_torch_file(path, model_blob(model, arch, inputs, info))


def save_torch_file(path: str | os.PathLike, blob: dict) -> None:
    """``torch.save`` to ``path`` atomically, the same bytes for the same contents: torch names the entries of its
    zip archive after the file it writes (here a random temporary name), but ``archive/`` when given an open file,
    so the file's digest, which DVC, Snakemake and the fingerprints follow, changes only with the weights."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(blob, f)


def read_torch_file(path: Path, fmt: str, what: str, fix: str) -> dict:
    """Load a torch file of format ``fmt`` (tensors and plain Python values only) or raise :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {fix}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: cannot read the {what} ({e}); delete it and {fix}") from e
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise DataError(f"{path}: not a primkd {what} (expected format {fmt!r}); {fix}")
    return blob


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild and load a model file; returns the network (eval mode) and the file's metadata.

    Raises:
        DataError: the file is missing, unreadable, not a model file, or its weights do not fit its architecture.
    """
    path = Path(path)
    fix = "re-run the training stage that produces it"
    blob = read_torch_file(path, MODEL_FORMAT, "model file", fix)
    try:
        model = build_model(blob["arch"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: cannot build the architecture {blob.get('arch')} ({e}); {fix}") from e
    load_state_dict_checked(model, blob["state_dict"], f"{path}: weights",
                            f"The architecture is {blob['arch']}; {fix}.")
    check_finite(blob["state_dict"], path, fix)
    model.to(device).eval()
    return model, {k: v for k, v in blob.items() if k != "state_dict"}


def check_finite(sd: Mapping[str, Tensor], path: Path, fix: str) -> None:
    """Raise :class:`DataError` when a floating-point tensor of ``sd`` holds NaN or inf: such a network predicts
    nothing (an inference would colour every pixel as class 0, a teacher would make the student's loss NaN)."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        raise DataError(f"{path}: the weights hold NaN or inf values ({bad[0]}{more}); the file is broken: {fix}")


# --- Exports ---------------------------------------------------------------------------------------------------


def export_safetensors(model_file: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Export a project model file as ``<out_dir>/model.safetensors`` + ``<out_dir>/config.json`` (atomically).

    ``config.json``: ``{"format", "arch" (builder arguments), "inputs" (e.g. ["rgb", "modal"]), "classes" (names or
    null), "bgr" (input channel order), "info" (the model file's run metadata)}``. :func:`load_exported` reads it
    back with nothing else needed.
    """
    from safetensors.torch import save_file

    model, meta = load_model(model_file)
    info = dict(meta["info"])
    config = {"format": EXPORT_FORMAT, "arch": meta["arch"], "inputs": list(meta["inputs"]),
              "classes": info.get("classes"), "bgr": bool(info.get("bgr", False)), "info": info}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / EXPORT_WEIGHTS), metadata={"format": EXPORT_FORMAT})
        write_json(tmp / EXPORT_CONFIG, config)
    log.info("exported %s to %s (%d tensors)", model_file, out_dir, len(state))
    return Path(out_dir)


def load_exported(out_dir: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model exported by :func:`export_safetensors`.

    Returns:
        The network (eval mode, on ``device``) and metadata shaped like ``load_model``'s: ``{"format", "arch",
        "inputs", "info"}``, with ``info["bgr"]`` and ``info["classes"]`` taken from ``config.json``.
    """
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    config = read_json(out_dir / EXPORT_CONFIG)
    if config.get("format") != EXPORT_FORMAT:
        raise DataError(f"{out_dir / EXPORT_CONFIG}: not a primkd export (expected format {EXPORT_FORMAT!r}); "
                        "re-run `primkd export`")
    weights = out_dir / EXPORT_WEIGHTS
    if not weights.is_file():
        raise DataError(f"{weights}: file not found; re-run `primkd export`")
    model, state = build_model(config["arch"]), load_file(weights)
    load_state_dict_checked(model, state, str(weights))
    check_finite(state, weights, "re-run `primkd export` from a good model file")
    model.to(device).eval()
    info = {**config.get("info", {}), "bgr": bool(config["bgr"]), "classes": config.get("classes")}
    return model, {"format": config["format"], "arch": config["arch"], "inputs": config["inputs"], "info": info}


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`export_safetensors` (it holds ``config.json``)."""
    return (Path(path) / EXPORT_CONFIG).is_file()


def load_any(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load an exported folder (:func:`is_export`) or a project model file; same return value as ``load_model``."""
    return load_exported(path, device) if is_export(path) else load_model(path, device)
