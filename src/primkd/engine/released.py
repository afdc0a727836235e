"""The published checkpoints scored by this project's evaluator: the work of the ``evaluate_released`` stage.

What the releases publish (READMEs of PrimKD c816fd7 and CMX e251d86): PrimKD, the ImageNet SegFormer weights (the
``model.pretrained`` files) and its RGB teacher ``nyu-rgb.pth`` (MiT-B4, NYU Depth V2, 40 classes), no student; CMX,
for NYU Depth V2 and SUN-RGBD, one model: NYU Depth V2 MiT-B2 (its README prints 54.1 % single-scale and 54.4 %
multi-scale + flip; the B4 and B5 rows and SUN-RGBD have no file). Each file that ``eval.released`` names and that is
there is imported from its official format (BGR input, :func:`primkd.weights.import_official`) and scored on the
prepared test split in both evaluation modes, as a run's evaluation; the report shows it as a "released checkpoint"
row. A missing file, or one made for another number of classes, gets one line saying what to do, in the log and in
the output, which the report repeats.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

from primkd.config import RELEASED_ENTRIES
from primkd.data.dataset import MODALITY_INPUTS
from primkd.data.layout import read_meta
from primkd.engine.evaluate_run import evaluate_run
from primkd.io import DataError, atomic_path, sha256_file, write_json, write_text
from primkd.weights import import_official, import_teacher, official_architecture

log = logging.getLogger("primkd")

# eval.released entry (primkd.config.RELEASED_ENTRIES) -> (what it is, where it is published)
RELEASED = dict(zip(RELEASED_ENTRIES, (
    ("PrimKD's released RGB teacher (MiT-B4, NYU Depth V2)",
     "https://drive.google.com/file/d/1sIt0GWczeMTjfYI55jFeihj8ZDpTMY0G/view"),
    ("CMX's released NYU Depth V2 model (MiT-B2)",
     "https://drive.google.com/file/d/1hlyglGnEB0pnWXfHPtBtCGGlKMDh2K--/view"),
), strict=True))


def released_name(entry: str) -> str:
    """The run name of an ``eval.released`` entry in the results and the report (``eval/<run>.json``)."""
    return f"released_{entry}"


def evaluate_released(cfg: dict, data: str | os.PathLike, hha: str | os.PathLike | None,
                      out_dir: str | os.PathLike, progress: bool = True) -> dict[str, dict]:
    """Score every checkpoint of ``eval.released`` that is there; write ``out_dir/released_<entry>.json`` for each.

    Args:
        cfg: the resolved parameters (``eval``, ``train.device``/``crop``/``num_workers``).
        data, hha: the prepared dataset and its HHA folder (the CMX model reads HHA).
        out_dir: where the JSONs go (``results/<preset>/eval``). Each holds ``status``: ``evaluated``, with the
            evaluation JSON of ``primkd evaluate`` (:mod:`primkd.engine.results`, no per-image counts) and ``file``,
            ``sha256``, ``description``, ``arch``; or ``missing`` / ``skipped`` with ``note``, one line saying what
            to do (read as an :class:`~primkd.engine.results.Evaluation` without results).

    Returns:
        What was written, by entry.
    """
    results = {}
    for entry, path in cfg["eval"]["released"].items():
        results[entry] = _evaluate_one(entry, Path(path), cfg, data, hha, progress)
        write_json(Path(out_dir) / f"{released_name(entry)}.json", results[entry])
    return results


def _evaluate_one(name: str, path: Path, cfg: dict, data: str | os.PathLike, hha: str | os.PathLike | None,
                  progress: bool) -> dict:
    what, url = RELEASED[name]
    if not path.is_file():
        return _not_scored("missing", f"{what}: {path} not found; download it from {url} and save it as {path} "
                                      f"(eval.released.{name})")
    arch = official_architecture(path)
    classes = read_meta(data)["classes"]
    if arch["num_classes"] != len(classes):
        return _not_scored("skipped", f"{what}: {path} predicts {arch['num_classes']} classes, the prepared dataset "
                                      f"has {len(classes)}; it is scored on NYU Depth V2 (data.source: nyuv2)")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        import_official(path, None, None, None, model, classes=classes)
        evaluation = evaluate_run(model, data, hha, cfg, Path(tmp) / "eval.json", progress=progress)
    # the bootstrap counts stayed in the temporary folder: the report tests trained runs only
    evaluation = dataclasses.replace(evaluation, model=released_name(name), per_image=None)
    log.info("%s (%s): single-scale mIoU %.2f%%", what, path, 100 * evaluation.get("last", "single").per_seed[0].miou)
    return {"status": "evaluated", "file": str(path), "sha256": sha256_file(path), "description": what,
            "arch": arch, **evaluation.to_json()}


def _not_scored(status: str, note: str) -> dict:
    log.warning("%s", note)
    return {"status": status, "note": note}


def teacher_from_file(path: str | os.PathLike, modality: str, data: str | os.PathLike,
                      out_dir: str | os.PathLike) -> dict:
    """The train_teacher stage with ``kd.teachers.<modality>`` naming a file that is there: import it (a model file
    or an official checkpoint, :func:`primkd.weights.import_teacher`) instead of training, into the outputs training
    writes: ``model.pt`` and ``model_best.pt`` (the same weights: the file is the only checkpoint), ``train.json``
    (``teacher_source``: the file and its SHA-256; no epoch was trained) and the curves without rows.

    Raises:
        DataError: the file is not a teacher of ``modality`` for this dataset's classes.
    """
    out_dir, name = Path(out_dir), f"teacher_{modality}"
    meta = import_teacher(path, out_dir / "model.pt", read_meta(data)["classes"], {"run": name, "modality": modality})
    wanted = list(MODALITY_INPUTS[modality])
    if meta["inputs"] != wanted:
        (out_dir / "model.pt").unlink()
        raise DataError(f"{path}: a teacher of inputs {meta['inputs']}, but kd.teachers.{modality} names it for the "
                        f"{modality} teacher; name it under the modality it reads")
    with atomic_path(out_dir / "model_best.pt") as tmp:
        shutil.copyfile(out_dir / "model.pt", tmp)
    write_text(out_dir / "curves.csv", "epoch,loss\n")  # no training: the curves have no rows
    write_text(out_dir / "eval_curve.csv", "epoch,miou\n")
    source = f"the file {path} (sha256 {meta['info']['sha256']}), imported, not trained"
    summary = {"run": name, "kind": "teacher", "inputs": meta["inputs"], "backbone": meta["arch"]["variant"],
               "epochs": 0, "iterations": 0, "train_seconds": 0.0, "teacher_source": source}
    write_json(out_dir / "train.json", summary)
    log.info("%s: %s", name, source)
    return summary
