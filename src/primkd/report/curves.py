"""Training curves as PNG files (matplotlib, no browser or network needed): one figure per run and an ablation
overlay, from each run's ``curves.csv`` (loss terms per epoch) and ``eval_curve.csv`` (test mIoU at the evaluated
epochs). They complement ``dvc plots show``, whose HTML page needs a browser and the checkout's workflow/plots/.

A student run has one folder per seed (``models/<run>/seed<k>/``): its figure draws each seed of params.yaml ``seeds``,
and the overlay the mean over those seeds of each run (a folder of a seed no longer listed is ignored, see
:mod:`primkd.engine.seeds`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from primkd.engine.seeds import seed_folders
from primkd.io import DataError, save_figure

LOSS_TERMS = {"loss": "total", "seg": "cross-entropy", "pred": "KL (prediction)", "feat": "feature"}


def read_curve(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A curve CSV as columns of floats by header name (``epoch`` first)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: curve file not found; re-run the run's train stage")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise DataError(f"{path}: no rows or no `epoch` column; re-run the run's train stage")
    try:
        return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: a value is not a number ({e}); re-run the run's train stage") from e


def run_folders(run_dir: str | os.PathLike, seeds: Sequence[int] | None = None) -> dict[str, Path]:
    """The folders of a run holding curves: ``seed<k>/`` of a student (by label ``seed k``), those of ``seeds``
    (params.yaml ``seeds``; None: every one) that have curves yet, else the run folder."""
    run_dir = Path(run_dir)
    found = seed_folders(run_dir, "curves.csv", seeds, missing_ok=True)
    if found:
        return {f"seed {seed}": folder for seed, folder in found.items()}
    if (run_dir / "curves.csv").is_file():
        return {"": run_dir}
    raise DataError(f"{run_dir}: no curves.csv (nor seed<k>/curves.csv); re-run the run's train stage")


def _save(fig, path: str | os.PathLike) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)


def plot_run(run_dir: str | os.PathLike, png: str | os.PathLike, title: str | None = None,
             seeds: Sequence[int] | None = None) -> Path:
    """One run's figure: the loss terms per epoch (left, those that are not zero throughout) and the test mIoU per
    evaluated epoch (right), one line style per seed (of ``seeds``, see :func:`run_folders`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=110)
    ax_loss, ax_miou = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    for i, (label, folder) in enumerate(run_folders(run_dir, seeds).items()):
        curves, style = read_curve(folder / "curves.csv"), styles[i % len(styles)]
        for j, (key, name) in enumerate(LOSS_TERMS.items()):
            if key in curves and np.any(curves[key] != 0):
                ax_loss.plot(curves["epoch"], curves[key], style, color=f"C{j}",
                             label=f"{name}, {label}" if label else name)
        if (folder / "eval_curve.csv").is_file():
            ev = read_curve(folder / "eval_curve.csv")
            ax_miou.plot(ev["epoch"], 100 * ev["miou"], style, marker="o", ms=3, color="C0", label=label or None)
    ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="loss")
    ax_miou.set(xlabel="epoch", ylabel="test mIoU (%)", title="test mIoU (single scale)")
    for ax in (ax_loss, ax_miou):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title or Path(run_dir).name, fontsize=10)
    return _save(fig, png)


def _mean_over_seeds(run_dir: Path, name: str, key: str,
                     seeds: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, mean over the seeds of ``seeds``) of column ``key`` of ``name``, on the epochs every seed has."""
    curves = [read_curve(folder / name) for folder in run_folders(run_dir, seeds).values()
              if (folder / name).is_file()]
    curves = [c for c in curves if key in c]
    if not curves:
        return None
    epochs = sorted(set.intersection(*(set(c["epoch"].tolist()) for c in curves)))
    values = [[c[key][c["epoch"].tolist().index(e)] for e in epochs] for c in curves]
    return np.array(epochs), np.mean(values, axis=0)


def plot_ablation(runs: Mapping[str, str | os.PathLike], png: str | os.PathLike, title: str = "",
                  seeds: Sequence[int] | None = None) -> Path:
    """Runs overlaid: training loss (left) and test mIoU (right) per epoch, each the mean over the run's seeds (of
    ``seeds``, see :func:`run_folders`)."""
    from matplotlib.figure import Figure

    if not runs:
        raise DataError(f"{png}: no runs to overlay; train at least one run first")
    fig = Figure(figsize=(10, 4), dpi=110)
    ax_loss, ax_miou = fig.subplots(1, 2)
    for i, (name, run_dir) in enumerate(runs.items()):
        style = {"color": f"C{i % 10}", "linestyle": ["-", "--", ":"][i // 10 % 3], "label": name}
        loss = _mean_over_seeds(Path(run_dir), "curves.csv", "loss", seeds)
        if loss is not None:
            ax_loss.plot(*loss, **style)
        miou = _mean_over_seeds(Path(run_dir), "eval_curve.csv", "miou", seeds)
        if miou is not None:
            ax_miou.plot(miou[0], 100 * miou[1], marker="o", ms=3, **style)
    ax_loss.set(xlabel="epoch", ylabel="training loss (mean over seeds)", title="loss")
    ax_miou.set(xlabel="epoch", ylabel="test mIoU (%, mean over seeds)", title="test mIoU (single scale)")
    ax_miou.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, png)


def plot_curves(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                order: Sequence[str] = (), seeds: Sequence[int] | None = None) -> list[Path]:
    """Every trained run of a preset's results folder: ``out_dir/<run>.png`` each and ``out_dir/ablation.png``
    (students only: the teachers train on other inputs). Runs named in ``order`` come first, in that order; a
    student's curves are those of ``seeds`` (params.yaml ``seeds``; None: every seed folder)."""
    models = Path(results_dir) / "models"
    found = sorted(p.name for p in models.glob("*") if p.is_dir()) if models.is_dir() else []
    names = [n for n in order if n in found] + [n for n in found if n not in order]
    runs = {}
    for name in names:
        try:
            run_folders(models / name, seeds)
        except DataError:
            continue  # a run still training has no curves yet
        runs[name] = models / name
    if not runs:
        raise DataError(f"{models}: no trained run with curves.csv; run the train stages first")
    out_dir = Path(out_dir)
    written = [plot_run(path, out_dir / f"{name}.png", title=name, seeds=seeds) for name, path in runs.items()]
    students = {n: p for n, p in runs.items() if not n.startswith("teacher_")}
    if students:
        written.append(plot_ablation(students, out_dir / "ablation.png",
                                     title=f"{Path(results_dir).name}: students, mean over seeds", seeds=seeds))
    return written
