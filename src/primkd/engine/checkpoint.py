"""Model files: weights plus everything needed to rebuild the network, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from primkd.io import DataError, atomic_path
from primkd.models.segmentors import build_student, build_teacher

MODEL_FORMAT = "primkd-model-v1"


def architecture(cfg: dict, kind: str, num_classes: int) -> dict:
    """Builder arguments of a ``"teacher"`` (single-stream) or ``"student"`` (CMX) network from params."""
    model = cfg["model"]
    eps = model["teacher_decoder_bn_eps"] if kind == "teacher" else model["decoder_bn_eps"]
    return {"kind": kind, "variant": model["backbone"], "num_classes": num_classes,
            "decoder_embed_dim": model["decoder_embed_dim"], "drop_path_rate": model["drop_path_rate"],
            "decoder_bn_eps": eps}


def build_model(arch: dict) -> nn.Module:
    """Instantiate the network described by :func:`architecture`."""
    kwargs = {k: v for k, v in arch.items() if k != "kind"}
    return build_teacher(**kwargs) if arch["kind"] == "teacher" else build_student(**kwargs)


def save_model(path: str | os.PathLike, model: nn.Module, arch: dict, inputs: list[str], info: dict) -> None:
    """Write ``{format, arch, inputs, info, state_dict}`` to ``path`` atomically.

    Args:
        path: destination ``.pt``.
        model: the trained network (a DDP wrapper is unwrapped).
        arch: builder arguments (:func:`architecture`).
        inputs: the batch keys the network takes, e.g. ``["rgb"]`` or ``["rgb", "modal"]``.
        info: run metadata (preset, seed, experiment, classes, ...).
    """
    model = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "arch": arch, "inputs": inputs, "info": info, "state_dict": state}, tmp)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild and load a model file; returns the network (eval mode) and the file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model file not found; run the training stage that produces it")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: cannot read the model file ({e}); delete it and re-run its training stage") from e
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise DataError(f"{path}: not a primkd model file (expected format {MODEL_FORMAT!r})")
    model = build_model(blob["arch"])
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if missing or unexpected:
        raise DataError(f"{path}: weights do not fit the architecture {blob['arch']} "
                        f"(missing: {missing[:5]}, unexpected: {unexpected[:5]}); re-run its training stage")
    model.to(device).eval()
    return model, {k: v for k, v in blob.items() if k != "state_dict"}
