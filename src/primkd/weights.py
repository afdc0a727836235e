"""Pretrained weights: ImageNet MiT initialisation, the official CMX / PrimKD checkpoints, and safetensors export.

Where the files come from (no code here downloads them; machines running the pipeline are often offline):

- ImageNet MiT B0–B5: ``mit_b0.pth`` … ``mit_b5.pth`` from the SegFormer release (``SEGFORMER_IMAGENET_URL``), or
  the Hugging Face repos ``nvidia/mit-b0`` … ``nvidia/mit-b5`` (a local copy of the folder, or its
  ``model.safetensors`` / ``pytorch_model.bin``).
- Official CMX checkpoints (``{"model": state_dict, "optimizer": …}``) from the CMX README, PrimKD students and the
  PrimKD RGB teacher (``nyu-rgb.pth``) from the PrimKD README.

The official code reads images as BGR (a cv2 flag) and normalises them with the RGB statistics, so imported official
models record ``info["bgr"] = True`` in their model file (and ``"bgr": true`` in an export's ``config.json``);
evaluation and inference feed such models BGR images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from primkd.engine.checkpoint import build_model, load_model, save_model
from primkd.io import DataError, atomic_dir, read_json, write_json
from primkd.models.convert import (
    CheckpointMismatchError,
    StateDict,
    cmx_from_official,
    load_state_dict_checked,
    read_mit_pretrained,
    read_state_dict,
    teacher_from_official,
)
from primkd.models.segmentors import CMX, SegFormer, build_student, build_teacher

log = logging.getLogger(__name__)

IMAGENET_VARIANTS = tuple(f"mit_b{i}" for i in range(6))  # variants with released ImageNet weights
SEGFORMER_IMAGENET_URL = "https://drive.google.com/drive/folders/1b7bwrInTW4VLEm27YawHOAMSMikga2Ia"
HF_MIT_URL = "https://huggingface.co/nvidia/{repo}"  # repo = mit-b0 … mit-b5
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
ALIGNER_PREFIX = "decode_head.align_loss"  # PrimKD's training-only feature aligners in student checkpoints
OFFICIAL_INPUTS = {"student": ["rgb", "modal"], "teacher": ["rgb"]}
OFFICIAL_DROP_PATH = 0.1  # the official mit_b* builders' stochastic depth (matters only when fine-tuning)
EXPORT_FORMAT = "primkd-export-v1"
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"


# ---------------------------------------------------------------------------------------------------------------
# ImageNet initialisation
# ---------------------------------------------------------------------------------------------------------------

def _encoders(model: nn.Module) -> dict[str, nn.Module]:
    """The MiT encoder(s) of a model by attribute name: one for ``SegFormer``, both branches for ``CMX``."""
    if isinstance(model, CMX):
        return {"encoder_rgb": model.encoder_rgb, "encoder_modal": model.encoder_modal}
    if isinstance(model, SegFormer):
        return {"encoder": model.encoder}
    raise TypeError(f"ImageNet initialisation needs a SegFormer (teacher) or CMX (student), got {type(model).__name__}")


def init_from_imagenet(model: SegFormer | CMX, path: str | os.PathLike) -> dict[str, Any]:
    """Load ImageNet MiT weights into the encoder(s) of ``model``; everything else keeps its fresh initialisation.

    A teacher's encoder gets the weights; a CMX student's RGB **and** depth/HHA encoders both get the same weights
    (separate copies), while FRMs, FFMs and the decoder stay as built. The ImageNet classifier ``head.*`` (HF:
    ``classifier.*``) is the only part of the file left out, and that is logged; any other missing, unexpected or
    wrongly shaped tensor is an error that lists them and names the variant of the file and of the model.

    Args:
        model: a freshly built ``SegFormer`` or ``CMX``.
        path: ``mit_bX.pth`` (SegFormer release), an HF ``model.safetensors`` / ``pytorch_model.bin`` or a local
            ``nvidia/mit-bX`` folder (transformers 4 or 5 names).

    Returns:
        A summary for run metadata: ``{"pretrained": path, "loaded": [encoder names], "fresh": [other modules],
        "tensors": tensors per encoder}``.

    Raises:
        DataError: the file is missing or unreadable. CheckpointMismatchError (a DataError): the weights do not fit.
    """
    weights = read_mit_pretrained(path)
    encoders = _encoders(model)
    for name, encoder in encoders.items():
        load_state_dict_checked(encoder, weights, f"ImageNet MiT weights {path} (offered to {name})")
    fresh = [name for name, _ in model.named_children() if name not in encoders]
    log.info("initialised %s from ImageNet weights %s (%d tensors each); fresh: %s", ", ".join(encoders), path,
             len(weights), ", ".join(fresh))
    return {"pretrained": str(path), "loaded": list(encoders), "fresh": fresh, "tensors": len(weights)}


def _download_hint(variant: str, where: Path) -> str:
    repo = variant.replace("_", "-")
    return (f"Download {variant}.pth (ImageNet-1K) from the SegFormer release ({SEGFORMER_IMAGENET_URL}) and put it "
            f"at {where / f'{variant}.pth'}, or download the Hugging Face repo {HF_MIT_URL.format(repo=repo)} "
            f"(model.safetensors and config.json) into {where / repo}/. Set the pretrained path to `none` to train "
            "from scratch.")


def _hf_folder_has_weights(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in HF_WEIGHT_FILES)


def resolve_pretrained(spec: str, variant: str, search_dir: str | os.PathLike) -> Path | None:
    """Turn a pretrained-weights setting into a file or folder to load, or ``None`` to start from scratch.

    Args:
        spec: ``"none"`` (from scratch), ``"imagenet"`` (look in ``search_dir`` for ``<variant>.pth``, then for a
            Hugging Face folder ``mit-bX/`` holding model.safetensors or pytorch_model.bin) or a path to a weights
            file or HF folder (relative paths are taken from the current directory).
        variant: the model's MiT variant (``mit_b0`` … ``mit_b5`` have ImageNet weights).
        search_dir: folder where ``"imagenet"`` weights are kept (e.g. ``pretrained/``).

    Raises:
        DataError: the weights are not there (the message gives the download URLs and the place to put the file),
            or ``"imagenet"`` is asked for a variant that has no released ImageNet weights.
    """
    search_dir = Path(search_dir)
    if spec == "none":
        return None
    if spec == "imagenet":
        if variant not in IMAGENET_VARIANTS:
            raise DataError(f"no ImageNet weights exist for the MiT variant {variant!r} (only "
                            f"{', '.join(IMAGENET_VARIANTS)} were released); set the pretrained path to `none` to "
                            "train it from scratch")
        file, folder = search_dir / f"{variant}.pth", search_dir / variant.replace("_", "-")
        if file.is_file():
            return file
        if _hf_folder_has_weights(folder):
            return folder
        raise DataError(f"ImageNet weights for {variant} not found (looked for {file} and {folder}/). "
                        + _download_hint(variant, search_dir))
    path = Path(spec)
    if path.is_file() or _hf_folder_has_weights(path):
        return path
    hint = _download_hint(variant, search_dir) if variant in IMAGENET_VARIANTS else "Check the path."
    raise DataError(f"pretrained weights {path} not found (or a folder without {' / '.join(HF_WEIGHT_FILES)}). {hint}")


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------------

def _convert_official(sd: StateDict, convert: Callable[..., StateDict], path: Path, drop: Sequence[str]) -> StateDict:
    """Official names → ours; unknown names become a CheckpointMismatchError naming the file."""
    try:
        return convert(sd, drop=drop)
    except KeyError as e:
        raise CheckpointMismatchError(f"{path}: {e.args[0]}") from e


def _load_official(path: str | os.PathLike, kind: str, variant: str | Mapping[str, Any], num_classes: int,
                   **build: Any) -> nn.Module:
    """Build a ``kind`` network and load an official checkpoint into it strictly (eval mode)."""
    path = Path(path)
    sd = read_state_dict(path)
    if kind == "student":
        model = build_student(variant, num_classes, **build)
        ours = _convert_official(sd, cmx_from_official, path, drop=(ALIGNER_PREFIX,))
    else:
        model = build_teacher(variant, num_classes, **build)
        ours = _convert_official(sd, teacher_from_official, path, drop=())
    load_state_dict_checked(model, ours, f"official {kind} checkpoint {path}")
    log.info("loaded official %s checkpoint %s (%d tensors)", kind, path, len(ours))
    return model.eval()


def load_official_student(path: str | os.PathLike, variant: str | Mapping[str, Any], num_classes: int,
                          decoder_bn_eps: float = 1e-5, decoder_embed_dim: int = 512,
                          drop_path_rate: float = OFFICIAL_DROP_PATH) -> CMX:
    """Load an official CMX or PrimKD student checkpoint into this package's ``CMX`` (eval mode).

    Accepts ``{"model": state_dict, …}``, ``{"state_dict": …}`` or a bare state dict, with or without a DDP
    ``module.`` prefix. PrimKD's training-only aligners (``decode_head.align_loss*``) are left out and logged.

    Args:
        path: the checkpoint (``.pth`` or ``.safetensors``).
        variant: MiT variant the checkpoint was trained with (``mit_b2``, ``mit_b4``, …) or a settings mapping.
        num_classes: classes of its classifier (NYU Depth V2: 40, SUN-RGBD: 37).
        decoder_bn_eps: eps of the decoder BatchNorm. The official evaluation scripts build the network without a
            criterion and so keep 1e-5, which reproduces the reported numbers; the training builder uses 1e-3.
        decoder_embed_dim: decoder width (512 in CMX and PrimKD).
        drop_path_rate: stochastic depth, used only if the model is fine-tuned.

    Raises:
        DataError: unreadable file. CheckpointMismatchError: names or shapes that do not fit (wrong variant, wrong
            number of classes, a checkpoint of another kind).
    """
    return _load_official(path, "student", variant, num_classes, decoder_bn_eps=decoder_bn_eps,
                          decoder_embed_dim=decoder_embed_dim, drop_path_rate=drop_path_rate)


def load_official_teacher(path: str | os.PathLike, variant: str | Mapping[str, Any], num_classes: int,
                          decoder_bn_eps: float = 1e-5, decoder_embed_dim: int = 512,
                          drop_path_rate: float = OFFICIAL_DROP_PATH) -> SegFormer:
    """Load PrimKD's single-stream RGB teacher (``nyu-rgb.pth``) into a ``SegFormer`` (eval mode).

    Same wrappers and prefixes as :func:`load_official_student`; the teacher's decoder BatchNorm keeps eps 1e-5.
    """
    return _load_official(path, "teacher", variant, num_classes, decoder_bn_eps=decoder_bn_eps,
                          decoder_embed_dim=decoder_embed_dim, drop_path_rate=drop_path_rate)


def import_official(path: str | os.PathLike, kind: str, variant: str | Mapping[str, Any], num_classes: int,
                    out_path: str | os.PathLike, bgr: bool = True, decoder_bn_eps: float = 1e-5,
                    decoder_embed_dim: int = 512, classes: Sequence[str] | None = None) -> dict:
    """Convert an official checkpoint into a project model file (``primkd.engine.checkpoint`` format), atomically.

    Args:
        path: the official checkpoint.
        kind: ``"student"`` (CMX / PrimKD student, inputs ``["rgb", "modal"]``) or ``"teacher"`` (PrimKD RGB
            teacher, inputs ``["rgb"]``).
        variant: MiT variant name (``mit_b2``, ``mit_b4``) or settings mapping.
        num_classes: classes of the checkpoint.
        out_path: model file to write (``.pt``).
        bgr: record that the model expects BGR input (true for every official checkpoint).
        decoder_bn_eps: decoder BatchNorm eps (1e-5 as in the official evaluation; see :func:`load_official_student`).
        decoder_embed_dim: decoder width.
        classes: class names to store with the model (optional; inference colours labels by index anyway).

    Returns:
        The metadata written (``arch``, ``inputs``, ``info``); ``info["bgr"]`` holds the channel order.
    """
    if kind not in OFFICIAL_INPUTS:
        raise ValueError(f"kind must be one of {sorted(OFFICIAL_INPUTS)}, got {kind!r}")
    model = _load_official(path, kind, variant, num_classes, decoder_bn_eps=decoder_bn_eps,
                           decoder_embed_dim=decoder_embed_dim, drop_path_rate=OFFICIAL_DROP_PATH)
    arch = {"kind": kind, "variant": variant if isinstance(variant, str) else dict(variant),
            "num_classes": num_classes, "decoder_embed_dim": decoder_embed_dim,
            "drop_path_rate": OFFICIAL_DROP_PATH, "decoder_bn_eps": decoder_bn_eps}
    info: dict[str, Any] = {"run": f"official_{kind}", "source": str(path), "bgr": bool(bgr)}
    if classes is not None:
        if len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names given for a {num_classes}-class checkpoint")
        info["classes"] = list(classes)
    save_model(out_path, model, arch, OFFICIAL_INPUTS[kind], info)
    log.info("wrote %s (%s %s, %d classes, bgr=%s)", out_path, kind, arch["variant"], num_classes, bgr)
    return {"arch": arch, "inputs": OFFICIAL_INPUTS[kind], "info": info}


# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------

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
    model = build_model(config["arch"])
    load_state_dict_checked(model, load_file(weights), str(weights))
    model.to(device).eval()
    info = {**config.get("info", {}), "bgr": bool(config["bgr"]), "classes": config.get("classes")}
    return model, {"format": config["format"], "arch": config["arch"], "inputs": config["inputs"], "info": info}


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`export_safetensors` (it holds ``config.json``)."""
    return (Path(path) / EXPORT_CONFIG).is_file()


def load_any(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load an exported folder (:func:`is_export`) or a project model file; same return value as ``load_model``."""
    return load_exported(path, device) if is_export(path) else load_model(path, device)
