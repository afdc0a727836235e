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

import logging
import os
import tempfile
from pathlib import Path

from primkd.data.layout import read_meta
from primkd.engine.evaluate_run import evaluate_run
from primkd.io import sha256_file, write_json
from primkd.weights import import_official, official_architecture

log = logging.getLogger("primkd")

# eval.released entry -> (what it is, where it is published)
RELEASED = {
    "teacher_rgb": ("PrimKD's released RGB teacher (MiT-B4, NYU Depth V2)",
                    "https://drive.google.com/file/d/1sIt0GWczeMTjfYI55jFeihj8ZDpTMY0G/view"),
    "cmx": ("CMX's released NYU Depth V2 model (MiT-B2)",
            "https://drive.google.com/file/d/1hlyglGnEB0pnWXfHPtBtCGGlKMDh2K--/view"),
}


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
            evaluation JSON of ``primkd evaluate`` (no per-image counts) and ``file``, ``sha256``, ``description``,
            ``arch``; or ``missing`` / ``skipped`` with ``note``, one line saying what to do.

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
        metrics = evaluate_run(model, data, hha, cfg, Path(tmp) / "eval.json", progress=progress)
    metrics.pop("per_image")  # the bootstrap counts stayed in the temporary folder: the report tests runs only
    log.info("%s (%s): single-scale mIoU %.4f", what, path, metrics["miou"])
    return {"status": "evaluated", "file": str(path), "sha256": sha256_file(path), "description": what,
            "arch": arch, **metrics}


def _not_scored(status: str, note: str) -> dict:
    log.warning("%s", note)
    return {"status": status, "note": note}
