"""Experiments side by side: what each run changes and what it scores, from ``results/<preset>/eval/*.json``.

:func:`build_summary` gives the compact record that git and DVC keep per preset (``results/<preset>/summary.json``:
per run its seed count, mIoU/mAcc/pAcc mean ± std, the parameters that define it), :func:`compare_table` the table
that ``primkd compare`` and ``make compare`` print, :func:`headline` the few lines ``make demo`` ends with (the
teachers, CMX and PrimKD, and the PrimKD − CMX interval). All report the mean ± sample standard deviation (ddof 1) over
seeds, as the report's tables do; a run trained once (the teachers) has no std. Where a run's per-image counts exist
(``eval/<run>_per_image.npz``, of the last epoch), its difference to CMX comes with the paired bootstrap interval of
:mod:`primkd.report.significance`, the same as the report's runs table.

Beside each run's test-split mIoU all three show its train-split mIoU (``eval/<run>.train.json``, last epoch, single
scale) and train − test, the regime: a network that fits its training images far better than unseen ones is
data-limited (the paper's, ImageNet-initialised on NYU's 795 images), one that scores both alike is compute-limited.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from primkd.engine.results import Evaluation, evaluation_files
from primkd.io import DataError, write_json
from primkd.report.significance import (
    CONFIDENCE,
    Comparison,
    compare_runs,
    interval_text,
    load_run_counts,
)
from primkd.report.tables import EVAL_KEYS, Stat

TEACHERS = ("teacher_rgb", "teacher_depth")
BASELINE = "cmx"


def load_evaluations(results_dir: str | os.PathLike, split: str = "test") -> dict[str, Evaluation]:
    """Every evaluation of ``split`` in a preset's results folder (``eval/<run>.json``, ``eval/<run>.train.json``), by
    run name (confusion matrices are CSV, skipped)."""
    folder = Path(results_dir) / "eval"
    if not folder.is_dir():
        raise DataError(f"{folder}: no evaluations found; run the pipeline first (make demo, or dvc repro)")
    return {run: Evaluation.read(path) for run, path in evaluation_files(folder, split).items()}


def regime(test: Evaluation, train: Evaluation | None) -> tuple[Stat | None, Stat | None]:
    """The last epoch's single-scale train-split mIoU and train − test mIoU (fractions), each mean ± sample std over
    seeds; the gap is taken seed by seed (the seeds evaluated on both splits) before its mean and std. None each
    without a train-split evaluation."""
    train_block, test_block = (train.get("last", "single") if train is not None else None), test.get("last", "single")
    if train_block is None:
        return None, None
    tested = {s.seed: s.miou for s in test_block.per_seed} if test_block is not None else {}
    gaps = [s.miou - tested[s.seed] for s in train_block.per_seed
            if s.miou is not None and tested.get(s.seed) is not None]
    return Stat.of([s.miou for s in train_block.per_seed if s.miou is not None]), Stat.of(gaps)


def seed_stats(evaluation: Evaluation) -> dict[str, Stat | None]:
    """Mean ± sample std over the seeds of the last epoch's single-scale evaluation for each of :data:`EVAL_KEYS`
    (None each for a released checkpoint that was not scored)."""
    block = evaluation.get("last", "single")
    if block is None:
        return dict.fromkeys(EVAL_KEYS)
    return {k: Stat.of([getattr(entry, k) for entry in block.per_seed]) for k in EVAL_KEYS}


def run_parameters(cfg: Mapping, run: str) -> dict:
    """The parameters that define ``run`` beyond the preset's common ones: its role, the teacher it distils from and
    the ``kd`` keys its experiment sets to other values than the ``kd`` section (empty for the plain settings)."""
    if run in TEACHERS:
        return {"role": "teacher", "input": run.removeprefix("teacher_")}
    if run == BASELINE:
        return {"role": "student", "distillation": False}
    experiment = cfg["experiments"].get(run)
    if experiment is None:
        return {"role": "student", "experiment": "not in params.yaml"}
    changed = {f"kd.{k}": v for k, v in experiment.get("kd", {}).items() if cfg["kd"][k] != v}
    return {"role": "student", "distillation": True, "teacher": experiment["teacher"], **changed}


def common_parameters(cfg: Mapping) -> dict:
    """The preset's settings every run shares (what tells one preset's summary from another's)."""
    t, m = cfg["train"], cfg["model"]
    return {"preset": cfg["preset"], "backbone": m["backbone"], "epochs": t["epochs"], "batch_size": t["batch_size"],
            "lr": t["lr"], "seeds": list(cfg["seeds"]), "kd": dict(cfg["kd"]),
            "eval_scales": list(cfg["eval"]["scales"]), "eval_flip": cfg["eval"]["flip"]}


def _order(names: list[str], cfg: Mapping) -> list[str]:
    """Teachers, the CMX baseline, the experiments in params.yaml order, then any other evaluated run."""
    known = [*TEACHERS, BASELINE, *cfg["experiments"]]
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def versus_baseline(results_dir: str | os.PathLike, run: str) -> tuple[Comparison | None, str | None]:
    """``run`` against CMX on the last epoch's single-scale per-image counts: the paired bootstrap of the report, or
    None and why not."""
    base, note = load_run_counts(results_dir, BASELINE, "single", "last")
    if base is None:
        return None, note
    own, note = load_run_counts(results_dir, run, "single", "last")
    return (None, note) if own is None else (compare_runs(base, own), None)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 4)


def build_summary(results_dir: str | os.PathLike, cfg: Mapping) -> dict:
    """The preset's compact record: common parameters and, per evaluated run, seeds, test-split metric means and
    stds, the train-split mIoU and train − test mIoU (``train_miou_pct``, ``train_gap_miou_pct``: :func:`regime`;
    null without a train-split evaluation) and (where per-image counts exist) ``vs_cmx``: the mIoU difference to CMX
    with its bootstrap interval; metrics in % (the unit in the key, as in the evaluation JSON), rounded to 4
    decimals."""
    evaluations, on_train = load_evaluations(results_dir), load_evaluations(results_dir, "train")
    runs = {}
    for name in _order(list(evaluations), cfg):
        stats = seed_stats(evaluations[name])
        train, gap = regime(evaluations[name], on_train.get(name))
        entry: dict = {"seeds": max((s.n for s in stats.values() if s is not None), default=0)}
        for key, stat in {**stats, "train_miou": train, "train_gap_miou": gap}.items():
            entry[f"{key}_pct"] = None if stat is None else _pct(stat.mean)
            entry[f"{key}_pct_std"] = None if stat is None else _pct(stat.std)
        c, _ = versus_baseline(results_dir, name) if name != BASELINE else (None, None)
        if c is not None:
            entry["vs_cmx"] = {"delta_pct": _pct(c.delta), "ci_low_pct": _pct(c.ci_low), "ci_high_pct": _pct(c.ci_high),
                               "confidence": c.confidence, "significant": c.significant}
        runs[name] = {**entry, "params": run_parameters(cfg, name)}
    return {"preset": cfg["preset"], "params": common_parameters(cfg), "runs": runs}


def write_summary(results_dir: str | os.PathLike, cfg: Mapping, path: str | os.PathLike | None = None) -> Path:
    """Write :func:`build_summary` to ``path`` (default ``<results_dir>/summary.json``) atomically."""
    path = Path(path) if path is not None else Path(results_dir) / "summary.json"
    write_json(path, build_summary(results_dir, cfg))
    return path


def _describe(params: Mapping) -> str:
    if params["role"] == "teacher":
        return f"teacher, {params['input']} input"
    if "experiment" in params:
        return "not an experiment of params.yaml"
    if not params["distillation"]:
        return "no distillation (baseline)"
    changed = [f"{k}={v}" for k, v in params.items() if k.startswith("kd.")]
    if params["teacher"] != "rgb":
        changed.insert(0, f"teacher={params['teacher']}")
    return ", ".join(changed) or "kd as in params.yaml"


def _percent(mean: float | None, std: float | None, sign: str = "") -> str:
    if mean is None:
        return "—"
    return f"{mean:{sign}.2f}" + ("" if std is None else f" ± {std:.2f}")


def compare_table(summary: Mapping) -> str:
    """A Markdown table of the runs of :func:`build_summary`: changed parameters, seeds, test-split metrics in % (mean
    ± sample std over seeds), the train-split mIoU and train − test (the regime), and the mIoU difference to the CMX
    baseline."""
    base = summary["runs"].get(BASELINE, {}).get("miou_pct")
    p = summary["params"]
    kd = ", ".join(f"{k} {v}" for k, v in p["kd"].items())
    # The values are the last epoch's single-scale evaluation, whatever eval.scales say (the multi-scale + flip one
    # is the report's Table 2).
    multi = "" if p["eval_scales"] == [1.0] and not p["eval_flip"] else (
        f" (scales {p['eval_scales']}" + (" + flip" if p["eval_flip"] else "") + ": REPORT.md Table 2)")
    lines = [f"preset {summary['preset']}: {p['backbone']}, {p['epochs']} epochs, batch {p['batch_size']}, "
             f"lr {p['lr']}, seeds {p['seeds']}; evaluation single scale; kd: {kd}{multi}", "",
             f"| run | changed parameters | seeds | mIoU % | mAcc % | pAcc % | train mIoU % | train − test | "
             f"Δ mIoU vs cmx [{100 * CONFIDENCE:g}% interval] |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, run in summary["runs"].items():
        miou = run["miou_pct"]
        delta = "—" if base is None or miou is None or name == BASELINE else f"{miou - base:+.2f}"
        if "vs_cmx" in run and delta != "—":
            v = run["vs_cmx"]
            delta += f" [{v['ci_low_pct']:+.2f}, {v['ci_high_pct']:+.2f}]" + (" *" if v["significant"] else "")
        metrics = " | ".join([*(_percent(run[f"{k}_pct"], run[f"{k}_pct_std"]) for k in EVAL_KEYS),
                              _percent(run["train_miou_pct"], run["train_miou_pct_std"]),
                              _percent(run["train_gap_miou_pct"], run["train_gap_miou_pct_std"], "+")])
        lines.append(f"| {name} | {_describe(run['params'])} | {run['seeds']} | {metrics} | {delta} |")
    lines += ["", "mIoU, mAcc, pAcc: the test split. train mIoU: the same models on their own training images (no "
              "augmentation); train − test far above 0: data-limited (the paper's regime), near 0: compute-limited."]
    return "\n".join(lines) + "\n"


def _stat_text(stat: Stat | None, sign: str = "") -> str:
    """A fraction's mean ± std in points, as :func:`headline` prints it."""
    return "—" if stat is None else _percent(100 * stat.mean, None if stat.std is None else 100 * stat.std, sign)


HEADLINE_RUNS = {"teacher_rgb": "RGB teacher", "teacher_depth": "depth teacher", "cmx": "CMX", "primkd": "PrimKD"}


def headline(results_dir: str | os.PathLike) -> str:
    """What ``make demo`` prints: the mIoU (mean ± sample std over seeds) of the teachers, CMX and PrimKD (those
    evaluated), PrimKD − CMX with its paired bootstrap interval over the test images, pooled over seeds, and the
    same models' train-split mIoU and train − test (:func:`regime`; those with a train-split evaluation)."""
    evaluations, on_train = load_evaluations(results_dir), load_evaluations(results_dir, "train")
    lines = ["Test-split mIoU (%), last epoch, single scale (mean ± sample std over seeds):"]
    for run, label in HEADLINE_RUNS.items():
        if run not in evaluations:
            continue
        stat = seed_stats(evaluations[run])["miou"]
        text = "—" if stat is None else f"{100 * stat.mean:.2f}" + (
            f" ± {100 * stat.std:.2f} ({stat.n} seeds)" if stat.std is not None else " (trained once)")
        lines.append(f"  {label:<14} {text}")
    if "primkd" in evaluations and BASELINE in evaluations:
        c, note = versus_baseline(results_dir, "primkd")
        if c is None:
            lines.append(f"  PrimKD − CMX   no interval: {note}")
        else:
            verdict = "significant" if c.significant else "not significant (the interval contains 0)"
            lines.append(f"  PrimKD − CMX   {interval_text(c, 2)} points: {100 * c.confidence:g}% paired bootstrap "
                         f"interval over {c.num_images} test images pooled over seeds ({c.num_boot} resamples), "
                         f"{verdict}")
    regimes = {label: regime(evaluations[run], on_train[run]) for run, label in HEADLINE_RUNS.items()
               if run in evaluations and run in on_train}
    if regimes:
        lines.append("Train-split mIoU (%) of the same models, and train − test (points; far above 0: data-limited, "
                     "near 0: compute-limited):")
        for label, (train, gap) in regimes.items():
            lines.append(f"  {label:<14} {_stat_text(train)}   train − test {_stat_text(gap, '+')}")
    return "\n".join(lines) + "\n"
