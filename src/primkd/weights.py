"""Pretrained weights: ImageNet MiT initialisation and the official CMX / PrimKD checkpoints (reading, saving and
exporting model files: :mod:`primkd.models.io`; finding and hashing the ImageNet weights that ``model.pretrained``
names, without torch: :mod:`primkd.pretrained`).

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

from primkd.data.dataset import MODALITY_INPUTS, STUDENT_INPUTS
from primkd.distill.losses import OFFICIAL_ALIGNER_PREFIX
from primkd.io import DataError, sha256_file
from primkd.models.convert import StateDict
from primkd.models.io import (
    MODEL_FORMAT,
    CheckpointMismatchError,
    load_model,
    load_state_dict_checked,
    read_mit_pretrained,
    read_state_dict,
    save_model,
)
from primkd.models.mit import MIT_VARIANTS
from primkd.models.segmentors import (
    CMX,
    SegFormer,
    build_student,
    build_teacher,
    cmx_from_official,
    teacher_from_official,
)

log = logging.getLogger(__name__)

OFFICIAL_INPUTS = {"student": list(STUDENT_INPUTS), "teacher": list(MODALITY_INPUTS["rgb"])}
OFFICIAL_DROP_PATH = 0.1  # the official mit_b* builders' stochastic depth (matters only when fine-tuning)


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
    log.info("initialised %s from ImageNet weights %s: all %d encoder tensors matched (each); fresh: %s",
             ", ".join(encoders), path, len(weights), ", ".join(fresh))
    return {"pretrained": str(path), "loaded": list(encoders), "fresh": fresh, "tensors": len(weights)}


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
        ours = _convert_official(sd, cmx_from_official, path, drop=(OFFICIAL_ALIGNER_PREFIX,))
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


def official_architecture(path: str | os.PathLike) -> dict[str, Any]:
    """What an official CMX / PrimKD checkpoint holds, read from its tensors' names and shapes.

    Returns:
        ``kind`` (``"student"`` when it has the second branch ``backbone.extra_*``, else ``"teacher"``), ``variant``
        (the ``MIT_VARIANTS`` entry of its stage widths and depths), ``num_classes`` and ``decoder_embed_dim``.

    Raises:
        DataError: unreadable file. CheckpointMismatchError: not an official MiT + MLP-decoder checkpoint.
    """
    sd = read_state_dict(path)
    dims = [sd[f"backbone.patch_embed{s}.proj.weight"].shape[0] for s in range(1, 5)
            if f"backbone.patch_embed{s}.proj.weight" in sd]
    depths = [len({k.split(".")[2] for k in sd if k.startswith(f"backbone.block{s}.")}) for s in range(1, 5)]
    heads = [sd.get(f"decode_head.linear_{n}.weight") for n in ("fuse.0", "pred")]
    if len(dims) < 4 or any(h is None for h in heads):
        raise CheckpointMismatchError(f"{path}: not an official CMX / PrimKD checkpoint (no backbone.patch_embed1-4 "
                                      f"or decode_head.linear_fuse / linear_pred); pass the .pth of their releases")
    variant = next((name for name, v in MIT_VARIANTS.items()
                    if list(v["embed_dims"]) == dims and list(v["depths"]) == depths), None)
    if variant is None:
        raise CheckpointMismatchError(f"{path}: an encoder of stage widths {dims} and depths {depths}, none of the "
                                      f"MiT variants {sorted(MIT_VARIANTS)}")
    kind = "student" if any(k.startswith("backbone.extra_") for k in sd) else "teacher"
    return {"kind": kind, "variant": variant, "num_classes": heads[1].shape[0], "decoder_embed_dim": heads[0].shape[0]}


def official_model(path: str | os.PathLike, kind: str | None = None, variant: str | Mapping[str, Any] | None = None,
                   num_classes: int | None = None, bgr: bool = True, decoder_bn_eps: float = 1e-5,
                   decoder_embed_dim: int | None = None) -> tuple[nn.Module, dict]:
    """An official checkpoint as a network (eval mode) and the metadata of a model file (``arch``, ``inputs``,
    ``info``; ``info["bgr"]`` holds the channel order).

    ``kind``, ``variant``, ``num_classes`` and ``decoder_embed_dim`` given as None are read from the checkpoint
    (:func:`official_architecture`); given ones must fit it (a mismatch names what differs). See
    :func:`import_official` for the arguments.
    """
    if None in (kind, variant, num_classes, decoder_embed_dim):
        found = official_architecture(path)
        kind = kind or found["kind"]
        variant = variant or found["variant"]
        num_classes = num_classes or found["num_classes"]
        decoder_embed_dim = decoder_embed_dim or found["decoder_embed_dim"]
    if kind not in OFFICIAL_INPUTS:
        raise ValueError(f"kind must be one of {sorted(OFFICIAL_INPUTS)}, got {kind!r}")
    model = _load_official(path, kind, variant, num_classes, decoder_bn_eps=decoder_bn_eps,
                           decoder_embed_dim=decoder_embed_dim, drop_path_rate=OFFICIAL_DROP_PATH)
    arch = {"kind": kind, "variant": variant if isinstance(variant, str) else dict(variant),
            "num_classes": num_classes, "decoder_embed_dim": decoder_embed_dim,
            "drop_path_rate": OFFICIAL_DROP_PATH, "decoder_bn_eps": decoder_bn_eps}
    info: dict[str, Any] = {"run": f"official_{kind}", "source": str(path), "bgr": bool(bgr)}
    return model, {"arch": arch, "inputs": OFFICIAL_INPUTS[kind], "info": info}


def import_official(path: str | os.PathLike, kind: str | None, variant: str | Mapping[str, Any] | None,
                    num_classes: int | None, out_path: str | os.PathLike, bgr: bool = True,
                    decoder_bn_eps: float = 1e-5, decoder_embed_dim: int | None = None,
                    classes: Sequence[str] | None = None) -> dict:
    """Convert an official checkpoint into a project model file (:mod:`primkd.models.io` format), atomically.

    Args:
        path: the official checkpoint.
        kind: ``"student"`` (CMX / PrimKD student, inputs ``STUDENT_INPUTS``) or ``"teacher"`` (PrimKD RGB
            teacher, inputs ``["rgb"]``); None: read from the checkpoint, as the next three.
        variant: MiT variant name (``mit_b2``, ``mit_b4``) or settings mapping.
        num_classes: classes of the checkpoint.
        out_path: model file to write (``.pt``).
        bgr: record that the model expects BGR input (true for every official checkpoint).
        decoder_bn_eps: decoder BatchNorm eps (1e-5 as in the official evaluation; see :func:`load_official_student`).
        decoder_embed_dim: decoder width.
        classes: class names to store with the model (optional; inference colours labels by index anyway).

    Returns:
        The metadata written (``arch``, ``inputs``, ``info``).
    """
    model, meta = official_model(path, kind, variant, num_classes, bgr, decoder_bn_eps, decoder_embed_dim)
    arch, info = meta["arch"], meta["info"]
    if classes is not None:
        if len(classes) != arch["num_classes"]:
            raise ValueError(f"{len(classes)} class names given for a {arch['num_classes']}-class checkpoint")
        info["classes"] = list(classes)
    save_model(out_path, model, arch, meta["inputs"], info)
    log.info("wrote %s (%s %s, %d classes, bgr=%s)", out_path, arch["kind"], arch["variant"], arch["num_classes"], bgr)
    return meta


def _is_model_file(path: Path) -> bool:
    """Whether ``path`` is a readable model file of this package (an official checkpoint is not)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises several types for foreign or truncated files
        return False
    return isinstance(blob, dict) and blob.get("format") == MODEL_FORMAT


def read_teacher(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A teacher file as ``kd.teachers`` names it: a model file (``primkd train`` / ``primkd import-official``) or an
    official single-stream checkpoint (PrimKD's ``nyu-rgb.pth``: official names, BGR input), converted on the fly.

    Returns:
        The network (eval mode, on ``device``) and its model-file metadata (``arch``, ``inputs``, ``info``).

    Raises:
        DataError: missing or unreadable file, or an official checkpoint of a two-stream (CMX) network.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: teacher file not found; place it there or set its kd.teachers entry to train")
    if _is_model_file(path):
        return load_model(path, device)
    if official_architecture(path)["kind"] != "teacher":
        raise DataError(f"{path}: an RGB-D (CMX) checkpoint, not a single-stream teacher; kd.teachers names a teacher")
    model, meta = official_model(path, kind="teacher")
    return model.to(device), meta


def import_teacher(path: str | os.PathLike, out_path: str | os.PathLike, classes: Sequence[str],
                   info: Mapping[str, Any]) -> dict:
    """Write the teacher file ``path`` (see :func:`read_teacher`) as the model file ``out_path``, for a dataset of
    ``classes``, with ``info`` added to its metadata (``source``: the file, ``sha256``: its contents' digest).

    Raises:
        DataError: the file is not a teacher, or predicts another number of classes than the dataset has.
    """
    model, meta = read_teacher(path)
    if meta["arch"]["kind"] != "teacher":
        raise DataError(f"{path}: a {meta['arch']['kind']} model, not a teacher; kd.teachers names a teacher file")
    if meta["arch"]["num_classes"] != len(classes):
        raise DataError(f"{path}: the teacher predicts {meta['arch']['num_classes']} classes, the prepared dataset has "
                        f"{len(classes)}; name a teacher of this dataset in kd.teachers, or train (kd.teachers: train)")
    meta["info"] = {**meta["info"], "classes": list(classes), **info, "source": str(path), "sha256": sha256_file(path)}
    save_model(out_path, model, meta["arch"], meta["inputs"], meta["info"])
    log.info("teacher %s from %s (%s, %s)", out_path, path, meta["arch"]["variant"], meta["info"]["sha256"][:12])
    return meta
