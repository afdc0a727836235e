"""Where ``model.pretrained`` points and what the weights there hash to (layer 0: below the models, which load the
weights, and beside the configuration, whose effective parameters record the digest).

No code here reads the weights as tensors, so the pipeline's parameter step and the Snakefile can name and hash them
without importing torch: loading them is :mod:`primkd.weights` and :mod:`primkd.models.io`.
"""

from __future__ import annotations

import os
from pathlib import Path

from primkd.io import DataError, path_digest

SEGFORMER_IMAGENET_URL = "https://drive.google.com/drive/folders/1b7bwrInTW4VLEm27YawHOAMSMikga2Ia"
HF_MIT_URL = "https://huggingface.co/nvidia/{repo}"  # repo = mit-b0 … mit-b5
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in the order they are looked for
IMAGENET_VARIANTS = tuple(f"mit_b{i}" for i in range(6))  # variants with released ImageNet weights


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


def pretrained_digest(path: str | os.PathLike | None) -> str | None:
    """Digest of ImageNet weights: a file (its name and contents), or every file of a Hugging Face folder
    (:func:`primkd.io.path_digest`); None when training from scratch. Training-state checkpoints record it
    (a run resumes only with the same weights) and the training stages depend on it (``inputs.pretrained`` of the
    effective parameters)."""
    if path is None:
        return None
    return path_digest(path)


# Stands for weights that model.pretrained names but that are not there yet: the parameter step and the Snakefile
# run before anything is downloaded, and training itself stops with the download hint (resolve_pretrained).
MISSING = "missing"


def pretrained_input(spec: str, variant: str, search_dir: str | os.PathLike) -> str | None:
    """The value of ``inputs.pretrained``: :func:`pretrained_digest` of what ``spec`` resolves to, None when training
    from scratch, :data:`MISSING` when the weights are not found (so that placing them changes the value)."""
    try:
        return pretrained_digest(resolve_pretrained(spec, variant, search_dir))
    except DataError:
        return MISSING

