"""The analysis stage: Table 8 (linear CKA per stage), Figure 4 (feature histograms), Figure 3 (predictions).

Each model is given as a model file or as a run folder of ``primkd train``: a teacher's folder holds ``model.pt``;
a student's holds one ``seed<k>/model.pt`` per seed, and the analysis uses the lowest seed of params.yaml ``seeds``
(CKA, histograms and predictions describe one trained network, not an average over seeds; a folder of a seed no longer
listed is ignored, see :mod:`primkd.engine.seeds`).

Outputs in ``out_dir`` (all written atomically):

- ``cka.csv`` / ``cka.json``: one row per student × reference × stage (``student, reference, stage, cka, samples``);
  references are ``rgb`` (the RGB teacher) and ``depth`` (the depth-only model). ``cka.json`` also records, for each
  model, the path given, the model file used and its seed (null for a model file or a teacher);
- ``figure4_histograms.png`` / ``.pdf`` / ``.csv``: feature-value densities of the RGB teacher and each student;
- ``figure3_qualitative.png`` / ``.pdf``: RGB, HHA, ground truth, RGB-only SegFormer and each student's prediction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from primkd.analysis.features import LoadedModel, PairwiseStageCKA, iterate_features, load_for_analysis
from primkd.analysis.histograms import StageHistograms, histogram_rows, plot_histograms
from primkd.analysis.qualitative import predict_samples, qualitative_figure
from primkd.config import ConfigError
from primkd.data.dataset import RGBDDataset, hha_input, reads_depth
from primkd.engine.seeds import model_files
from primkd.io import csv_text, write_json, write_text

log = logging.getLogger(__name__)

# Display names of the usual runs in figures; other runs are shown under their own name.
DISPLAY_NAMES = {"rgb": "RGB teacher", "depth": "depth-only model", "cmx": "CMX", "primkd": "PrimKD"}


def display_name(name: str) -> str:
    """Figure label of a run or reference name."""
    return DISPLAY_NAMES.get(name, name)


def resolve_model(path: str | os.PathLike, seeds: Sequence[int] | None = None) -> dict:
    """The model file to analyse for ``path``: a model file, a teacher's run folder or a student's run folder.

    ``seeds``: params.yaml ``seeds``; a student's folder gives the model of the lowest of them (None: of the lowest
    seed in the folder).

    Returns:
        ``{"given": path as given, "model": model file, "seed": the seed of a student's folder, or None for a model
        file or a teacher's folder}``.

    Raises:
        DataError: ``path`` is none of these, or a student's folder lacks the seed (see
        :func:`primkd.engine.seeds.model_files`).
    """
    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():
        return {"given": str(path), "model": str(path / "model.pt"), "seed": None}
    seed, model = next(iter(model_files(path, None if seeds is None else [min(seeds)]).items()))
    return {"given": str(path), "model": str(model), "seed": seed}


def _check_names(student_models: Mapping[str, str | os.PathLike]) -> None:
    if not student_models:
        raise ConfigError("analyze needs at least one student: --student NAME=PATH (e.g. cmx=results/<preset>/models/"
                          "cmx)")
    clash = set(student_models) & {"rgb", "depth"}
    if clash:
        raise ConfigError(f"student names {sorted(clash)} are reserved for the reference models; rename them")


def _load_all(models: Mapping[str, dict], device: torch.device) -> tuple[dict, dict]:
    """Students and references (``rgb``, and ``depth`` when given) as :class:`LoadedModel` by name."""
    loaded = {}
    for name, m in models.items():
        seed = "" if m["seed"] is None else f" (seed {m['seed']}, the lowest of its seeds)"
        log.info("%s: %s%s", name, m["model"], seed)
        loaded[name] = load_for_analysis(m["model"], device)
    references = {k: loaded.pop(k) for k in ("rgb", "depth") if k in loaded}
    if "depth" not in references:
        log.warning("no depth-only model given: Table 8 gets CKA against the RGB teacher only")
    return loaded, references


def _feature_pass(nets: Mapping[str, LoadedModel], students: list[str], references: list[str], loader: DataLoader,
                  device: torch.device, num_bins: int, calibration_images: int,
                  progress: bool) -> tuple[list[dict], dict]:
    """One pass over the test loader: CKA rows (student × reference × stage) and the stage histograms."""
    cka = PairwiseStageCKA([(s, r) for s in students for r in references])
    hist = StageHistograms(num_bins=num_bins, calibration_images=calibration_images)
    batches = tqdm(loader, desc="analyze", unit="batch", disable=not progress, leave=False)
    for features in iterate_features(nets, batches, device):
        cka.update(features)
        hist.update({name: features[name] for name in ["rgb", *students]})
    rows = [{"student": r["a"], "reference": r["b"], "stage": r["stage"], "cka": r["cka"], "samples": r["samples"]}
            for r in cka.rows()]
    return rows, hist.result()


def analyze(student_models: Mapping[str, str | os.PathLike], rgb_model: str | os.PathLike,
            depth_model: str | os.PathLike | None, data_root: str | os.PathLike, hha_root: str | os.PathLike | None,
            out_dir: str | os.PathLike, max_images: int | None = None, batch_size: int = 4,
            num_qualitative: int = 4, num_bins: int = 100, calibration_images: int = 8,
            device: torch.device | str = "cpu", num_workers: int = 0, bgr: bool = False,
            progress: bool = True, seeds: Sequence[int] | None = None) -> dict:
    """Run the analysis over the test split and write every output (see the module docstring).

    Args:
        student_models: run name → model file or run folder of each CMX student (e.g. ``cmx``, ``primkd``), in
            figure order; a run folder contributes the lowest of ``seeds``.
        rgb_model: the RGB teacher (single-stream SegFormer on RGB), model file or run folder; also the "RGB-only
            SegFormer" of Figure 3.
        depth_model: the depth-only SegFormer (on HHA), model file or run folder, or None to skip the depth reference
            of Table 8.
        data_root: prepared dataset folder.
        hha_root: HHA folder (needed by the students and the depth-only model).
        out_dir: output folder.
        max_images: use only the first test images (None: all of them).
        batch_size: test images per forward pass (all images must then share one size). Changes no result beyond
            the float32 rounding of the forward pass: CKA and histograms add image by image and the histogram range
            comes from a number of images (params.yaml ``eval.batch_size`` is result-free for this stage too).
        num_qualitative: first test images shown in Figure 3.
        num_bins: histogram bins per stage.
        calibration_images: first test images that fix the histogram range (:mod:`primkd.analysis.histograms`).
        device: where to run the networks.
        num_workers: DataLoader worker processes.
        bgr: feed images in BGR order (official checkpoints).
        progress: show a progress bar.
        seeds: params.yaml ``seeds`` (see :func:`resolve_model`; None: the lowest seed of each run folder).

    Returns:
        ``{"cka": rows, "models": {name: resolve_model(...)} (references rgb/depth included), "outputs": [files]}``.

    Raises:
        ConfigError: no student, a student named ``rgb`` or ``depth``, or a count (images, bins, batch size) below 1.
        DataError: a model path that is neither a model file nor a run folder, or HHA needed but not given.
    """
    _check_names(student_models)
    counts = {"--max-images": 1 if max_images is None else max_images, "--batch-size": batch_size,
              "--qualitative-images": num_qualitative, "--bins": num_bins, "--calibration-images": calibration_images}
    bad = {flag: n for flag, n in counts.items() if n < 1}
    if bad:
        raise ConfigError(f"analyze needs positive counts; got {bad}")
    device = torch.device(device)
    out_dir = Path(out_dir)
    # 1. Networks and data (HHA is read when any network takes it).
    given = {**student_models, "rgb": rgb_model, **({} if depth_model is None else {"depth": depth_model})}
    models = {name: resolve_model(path, seeds) for name, path in given.items()}
    students, references = _load_all(models, device)
    nets = {**references, **students}
    depth_read = any(reads_depth(net.inputs) for net in nets.values())
    hha = hha_input(hha_root, depth_read, "a student or the depth-only model")
    dataset = RGBDDataset(data_root, "test", hha, bgr=bgr)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=batch_size, num_workers=num_workers)
    log.info("analysing %s against %s on %d test images", list(students), list(references), count)
    # 2. Table 8 and Figure 4 in one pass.
    cka_rows, hist = _feature_pass(nets, list(students), list(references), loader, device, num_bins,
                                   calibration_images, progress)
    write_text(out_dir / "cka.csv", csv_text(cka_rows))
    write_json(out_dir / "cka.json", {"test_images": count, "references": {k: models.get(k) for k in ("rgb", "depth")},
                                      "students": {k: models[k] for k in students}, "rows": cka_rows})
    write_text(out_dir / "figure4_histograms.csv", csv_text(histogram_rows(hist)))
    plot_histograms(hist, {n: display_name(n) for n in hist["counts"]}, out_dir / "figure4_histograms.png",
                    out_dir / "figure4_histograms.pdf")
    # 3. Figure 3 on the first test images.
    columns = {"RGB-only SegFormer": references["rgb"], **{display_name(n): net for n, net in students.items()}}
    samples = predict_samples(columns, dataset, range(min(num_qualitative, count)), device)
    qualitative_figure(samples, dataset.classes, out_dir / "figure3_qualitative.png",
                       out_dir / "figure3_qualitative.pdf")
    outputs = [out_dir / f for f in ("cka.csv", "cka.json", "figure4_histograms.csv", "figure4_histograms.png",
                                     "figure4_histograms.pdf", "figure3_qualitative.png", "figure3_qualitative.pdf")]
    return {"cka": cka_rows, "models": models, "outputs": [str(p) for p in outputs]}
