"""The report stage: gather the run results, put the paper's numbers beside them, write tables, Figure 1, REPORT.md.

Inputs under ``results_dir`` (``results/<preset>``), all optional (whatever is missing prints as "—" with a note):

- ``eval/<run>.json``: the evaluation of one run (``primkd evaluate``; the schema of :mod:`primkd.engine.results`):
  per checkpoint (``last``, ``best``) and mode (``single``, ``multi_scale_flip``) every seed's metrics. A student
  run has one entry per seed of params.yaml ``seeds``, and the tables report mean ± sample standard deviation (ddof 1)
  over them; a teacher has one entry with ``seed: null`` and reports its value alone. Each table reads the mode the
  paper used (``eval`` in paper.yaml) for the checkpoint ``eval.checkpoint`` names (last by default);
- ``eval/<run>_per_image.npz`` (named by the JSON's ``per_image``): per-image counts of the checkpoint
  ``eval.checkpoint`` selects, both modes; every table with an mIoU column tests each run row against its reference
  row (:func:`primkd.report.tables.reference_row`) by a paired bootstrap over test images pooled over seeds
  (:mod:`primkd.report.significance`) and says whether the direction agrees with the paper's, and the runs table
  gives each run's last-epoch difference to CMX with its interval;
- ``eval/<run>.train.json``: the same models scored on their own train split (last epoch, single scale; the
  evaluate stages write it beside the test split's): the runs table gives each run's train-split mIoU and train − test,
  the regime the numbers come from (data-limited: far above 0, as the paper's; compute-limited: near 0);
- ``models/<run>/seed<k>/train.json`` (students) or ``models/<run>/train.json`` (teachers): backbone, epochs,
  training time;
- ``analysis/cka.json`` (Table 8) and ``analysis/figure3_qualitative.png``, ``analysis/figure4_histograms.png``.

Outputs: ``out_dir/tables/<table>.md|.csv|.tex`` for Tables 1–8 (and ``<table>_significance.csv``),
``out_dir/figure1.png|.pdf`` and ``REPORT.md``
(``report_path``, by default ``out_dir/REPORT.md``), all written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from primkd.engine.results import Evaluation, evaluation_files
from primkd.io import read_json, write_text
from primkd.report.compare import regime
from primkd.report.figures import figure1
from primkd.report.significance import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    Counts,
    compare_runs,
    direction_agreement,
    interval_text,
    load_run_counts,
    seed_mious,
)
from primkd.report.tables import (
    EVAL_KEYS,
    EVAL_MODES,
    MISSING,
    Column,
    FilledTable,
    PaperSpec,
    Row,
    SignificanceRow,
    Stat,
    TableSpec,
    agreement_counts,
    fill_table,
    load_paper,
    reference_row,
    to_csv,
    to_latex,
    to_markdown,
    to_significance_csv,
)


@dataclass
class RunResult:
    """One trained model: run name, seed (None for a run trained once, the teachers), metrics and train.json.

    ``metrics`` holds this seed's ``miou``, ``macc`` and ``pacc`` (in [0, 1]); ``num_classes`` is the length of the
    run's per-class IoU (None when the evaluation has none).
    """

    name: str
    seed: int | None
    metrics: dict
    train: dict | None
    num_classes: int | None
    scales: list | None = None  # the evaluation mode of ``metrics``
    flip: bool | None = None
    epoch: int | None = None  # the epoch of the evaluated model, when the evaluation records it


def _read_train(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def run_results(results_dir: Path, name: str, evaluation: Evaluation, checkpoint: str = "last",
                mode: str = "single") -> list[RunResult]:
    """The results of run ``name`` in ``checkpoint`` and ``mode`` of its evaluation: one per seed (a run trained
    once has one, seed None); none when the evaluation lacks that block."""
    block = evaluation.get(checkpoint, mode)
    if block is None:
        return []
    num_classes = len(block.iou) or None
    results = []
    for entry in block.per_seed:
        folder = results_dir / "models" / name / ("" if entry.seed is None else f"seed{entry.seed}")
        results.append(RunResult(name, entry.seed, {k: getattr(entry, k) for k in EVAL_KEYS},
                                 _read_train(folder / "train.json"), num_classes, list(block.scales), block.flip,
                                 entry.epoch))
    return results


def collect_runs(results_dir: str | os.PathLike, checkpoint: str = "last",
                 mode: str = "single") -> dict[str, list[RunResult]]:
    """Every evaluated run under ``results_dir/eval`` by run name, one :class:`RunResult` per seed (or just one), for
    one checkpoint and evaluation mode (runs whose file lacks that block are left out)."""
    results_dir = Path(results_dir)
    runs = {name: run_results(results_dir, name, Evaluation.read(path), checkpoint, mode)
            for name, path in evaluation_files(results_dir / "eval").items()}
    return {name: group for name, group in runs.items() if group}


def load_cka(path: str | os.PathLike) -> dict[tuple[str, str, int], float] | None:
    """``{(student, reference, stage): cka}`` from the analysis stage's ``cka.json``; None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return {(r["student"], r["reference"], int(r["stage"])): float(r["cka"]) for r in read_json(path)["rows"]}


def resolve_run(row: Row, cfg: Mapping | None) -> tuple[str | None, str | None]:
    """The run that fills ``row`` under the active params, and a note when it is not the row's own ``run``.

    A row naming ``kd`` keys stands for the preset's distillation settings with those keys: its ``run`` when that
    experiment resolves to them, else the first experiment (same teacher) that does, else none.
    """
    if row.kd is None or cfg is None or row.run not in cfg["experiments"]:
        return row.run, None
    from primkd.config import experiment_kd

    wanted = {**cfg["kd"], **row.kd}
    teacher = cfg["experiments"][row.run]["teacher"]
    candidates = [row.run, *(n for n in cfg["experiments"] if n != row.run)]
    for name in candidates:
        kd = experiment_kd(cfg, name).as_dict()
        if kd.pop("teacher_modality") == teacher and kd == wanted:
            return name, None if name == row.run else (f"{row.label}: `{name}` has this row's settings under the "
                                                        f"active preset (`{row.run}` has other kd values)")
    keys = ", ".join(f"{k}: {v}" for k, v in row.kd.items())
    return None, (f"{row.label}: no experiment of this preset has the kd settings of the row ({keys}, the rest as "
                  f"the preset's kd); add one under params.yaml `experiments`")


class _Gatherer:
    """Our value of each (row, column) of a table, and the notes that explain the missing ones."""

    def __init__(self, results_dir: Path, cka: Mapping | None, input_size: tuple[int, int], decoder_embed_dim: int,
                 cfg: Mapping | None = None, checkpoint: str = "last") -> None:
        self.results_dir, self.cka, self.cfg, self.checkpoint = results_dir, cka, cfg, checkpoint
        self.runs = collect_runs(results_dir)  # the runs table: last epoch, single scale
        self.by_mode = {mode: collect_runs(results_dir, checkpoint, mode) for mode in EVAL_MODES}
        self.input_size, self.decoder_embed_dim = input_size, decoder_embed_dim
        self.complexity: dict[tuple, dict[str, int]] = {}
        self.released: set[str] = set()  # the runs of released-checkpoint rows (build_report sets them)
        self._counts: dict[tuple, tuple[Counts | None, str | None]] = {}

    def counts(self, run: str, mode: str, checkpoint: str | None = None) -> tuple[Counts | None, str | None]:
        """``run``'s per-image counts in ``mode`` of ``checkpoint`` (default: the tables'), read once."""
        key = (run, mode, checkpoint or self.checkpoint)
        if key not in self._counts:
            self._counts[key] = load_run_counts(self.results_dir, run, mode, key[2])
        return self._counts[key]

    def significance(self, spec: TableSpec, setting: str) -> tuple[list[SignificanceRow], str | None, list[str]]:
        """Each run row of ``spec`` against its reference row (:func:`reference_row`): our seeds' mIoU, the paired
        bootstrap interval of the difference, the paper's difference in ``setting`` and the direction agreement.

        Returns the rows, the reference row's label (None: the table has no significance block) and the notes.
        """
        ref = reference_row(spec)
        if ref is None:
            return [], None, []
        column = next(c for c in spec.columns if c.source == "eval" and c.key == "miou")
        names = [resolve_run(row, self.cfg)[0] for row in spec.rows]
        notes: list[str] = []

        def counts(name: str | None) -> Counts | None:
            if name is None or name not in self.by_mode[spec.eval_mode]:  # unevaluated: the table notes it already
                return None
            found, note = self.counts(name, spec.eval_mode)
            if note and note not in notes:
                notes.append(note)
            return found

        reference = counts(names[ref])
        paper_ref = spec.paper_value(spec.rows[ref], column, setting)
        rows = []
        for i, (row, name) in enumerate(zip(spec.rows, names)):
            if row.paper_only or row.released:  # a released checkpoint is shown beside the runs, not tested
                continue
            own = reference if i == ref else counts(name)
            ours = None if own is None else Stat.of(list(100 * seed_mious(own)))
            if i == ref:
                rows.append(SignificanceRow(row.label, ours, None, None, "reference"))
                continue
            paper = spec.paper_value(row, column, setting)
            paper_delta = None if paper is None or paper_ref is None else paper - paper_ref
            if own is None or reference is None:
                rows.append(SignificanceRow(row.label, ours, None, paper_delta, MISSING))
                continue
            comparison = compare_runs(reference, own)
            rows.append(SignificanceRow(row.label, ours, comparison, paper_delta,
                                        direction_agreement(comparison, paper_delta)))
        return rows, spec.rows[ref].label, notes

    def released_note(self, run: str) -> str:
        """Why a released checkpoint's row is empty: the evaluate_released stage's line, or that it has not run."""
        path = self.results_dir / "eval" / f"{run}.json"
        if not path.is_file():
            return f"`{run}`: no {path}: run the evaluate_released stage"
        return read_json(path).get("note") or f"`{run}`: {path} has no evaluation in this table's mode"

    def mode_text(self, spec: TableSpec) -> str:
        """How this table's values were evaluated, for its caption: mode (from the JSON) and checkpoint."""
        runs = self.by_mode[spec.eval_mode]
        found = next((r for row in spec.rows for r in runs.get(resolve_run(row, self.cfg)[0] or "", [])), None)
        if found is None or found.scales is None:
            mode = "single-scale" if spec.eval_mode == "single" else "multi-scale + flip (eval.scales, eval.flip)"
        elif list(found.scales) == [1.0] and not found.flip:
            mode = "single-scale (scale 1, no flip)"
        else:
            mode = (f"multi-scale (scales {', '.join(f'{s:g}' for s in found.scales)})"
                    + (" + flip" if found.flip else ", no flip"))
        which = ("the best test-split epoch (test-set selection, the official practice)" if self.checkpoint == "best"
                 else "the last epoch")
        return f"Ours: {mode}, {which}."

    def single_scale_only(self, spec: TableSpec) -> bool:
        """Whether a multi-scale table's runs were in fact evaluated single-scale (eval.scales [1], no flip)."""
        runs = self.by_mode[spec.eval_mode]
        found = [r for row in spec.rows for r in runs.get(row.run or "", [])]
        return bool(found) and all(r.scales is not None and list(r.scales) == [1.0] and not r.flip for r in found)

    def table(self, spec: TableSpec) -> tuple[list[dict[str, Stat | None]], list[str]]:
        values, notes = [], []
        runs = self.by_mode[spec.eval_mode]
        resolved = [resolve_run(row, self.cfg) for row in spec.rows]
        notes += list(dict.fromkeys(note for _, note in resolved if note))
        missing = [f"`{name}`" for row, (name, _) in zip(spec.rows, resolved)
                   if name is not None and not row.paper_only and not row.released and name not in runs]
        notes += [self.released_note(row.run) for row in spec.rows if row.released and row.run not in runs]
        if missing:
            what = {"single": "evaluation", "multi_scale_flip": "multi-scale + flip evaluation"}[spec.eval_mode]
            where = " of the best test-split epoch (model_best.pt)" if self.checkpoint == "best" else ""
            notes.append(f"no {what}{where} in {self.results_dir / 'eval'} for {', '.join(dict.fromkeys(missing))}: "
                         f"run their evaluate stages (a student experiment must be listed in params.yaml "
                         f"`experiments`)")
        for row, (name, _) in zip(spec.rows, resolved):
            row_values = {}
            for column in spec.columns:
                row_values[column.key], note = self.value(replace(row, run=name), column, runs)
                if note and note not in notes:
                    notes.append(note)
            values.append(row_values)
        seeded = [f"{row.label} (n = {v.n})" for row, vals in zip(spec.rows, values) for v in vals.values()
                  if v is not None and v.n > 1]
        if seeded:
            notes.append(f"ours is mean ± sample standard deviation over seeds: {', '.join(dict.fromkeys(seeded))}")
        return values, notes

    def value(self, row: Row, column: Column, runs: Mapping[str, list[RunResult]]) -> tuple[Stat | None, str | None]:
        if column.source == "cka":
            return self._cka(row, column)
        if row.paper_only or row.run not in runs:  # missing runs are noted once per table by `table`
            return None, None
        if column.source == "eval":
            return Stat.of([r.metrics.get(column.key) * column.scale for r in runs[row.run]
                            if r.metrics.get(column.key) is not None]), None
        return self._complexity(row, column, runs)

    def _cka(self, row: Row, column: Column) -> tuple[Stat | None, str | None]:
        if self.cka is None:
            return None, f"no {self.results_dir / 'analysis' / 'cka.json'}: run the analyze stage"
        value = self.cka.get((row.student, row.reference, int(column.key.removeprefix("stage"))))
        if value is None:
            return None, f"cka.json has no `{row.student}` vs `{row.reference}`: pass that student to the analyze stage"
        return Stat.of([value]), None

    def _complexity(self, row: Row, column: Column, runs: Mapping[str, list[RunResult]]) -> tuple[Stat | None,
                                                                                                  str | None]:
        result = next((r for r in runs[row.run] if r.train is not None), runs[row.run][0])
        if result.train is None or result.num_classes is None:
            return None, (f"`{row.run}`: parameters and FLOPs need its train.json under models/{row.run}/ (backbone) "
                          f"and the per-class IoU of its evaluation (number of classes)")
        key = (result.train["backbone"], result.num_classes, *self.input_size, self.decoder_embed_dim)
        if key not in self.complexity:  # torch only now: the report runs without it until a table needs a size
            from primkd.models.segmentors import measure_complexity

            self.complexity[key] = measure_complexity(*key)
        measured = self.complexity[key]
        return Stat.of([measured["params"] / 1e6 if column.key == "params_m" else measured["macs"] / 1e9]), None


def _setting_text(paper: PaperSpec, preset: str, matched: str | None) -> str:
    if matched is None:
        s = paper.settings[paper.default_setting]
        return (f"The active preset `{preset}` is not one of the paper's settings: its tables show the paper's "
                f"numbers ({s['dataset']}, {s['backbone']} where a table has several settings) for reference only, "
                f"without Δ.")
    s = paper.settings[matched]
    return (f"The active preset `{preset}` is in the paper's {s['dataset']}, {s['backbone']} setting (`{matched}`): Δ "
            f"is printed where a table was measured in that setting; the ablations (Tables 1, 3-8) were measured in "
            f"NYU Depth V2 with MiT-B4 only.")


def _schedule_text(paper: PaperSpec, matched: str | None, runs: Mapping[str, list[RunResult]]) -> str:
    """A warning when the runs trained for fewer epochs than the paper's schedule (a rehearsal, a trial run): their
    numbers, and so the Δ columns, say nothing about the method then."""
    paper_epochs = paper.settings[matched].get("epochs") if matched is not None else None
    ours = sorted({r.train["epochs"] for group in runs.values() for r in group if r.train and "epochs" in r.train})
    if paper_epochs is None or not ours or ours[0] >= paper_epochs:
        return ""
    return (f"**Short schedule: these runs trained {', '.join(map(str, ours))} epochs, the paper {paper_epochs}. "
            f"After so few iterations the numbers are meaningless; the Δ columns show only that the comparison is "
            f"filled in (a rehearsal, `make rehearse`, or a trial run), not how the method compares.**\n")


def _comparison(spec: TableSpec, paper: PaperSpec, preset: str, matched: str | None,
                gatherer: _Gatherer) -> tuple[str, bool, list[str]]:
    """The paper setting whose values a table shows, whether Δ is printed, and the note saying why not."""
    if spec.by_setting or spec.paper_setting is None:
        setting = matched or paper.default_setting
        compared = matched is not None
    else:
        setting, compared = spec.paper_setting, matched == spec.paper_setting
    notes = []
    s = paper.settings[setting]
    if not compared:
        notes.append(f"Δ omitted: the paper measured these numbers in {s['dataset']} with {s['backbone']}; the "
                     f"active preset `{preset}` is another setting (the paper column is for reference)")
    elif spec.eval_mode == "multi_scale_flip" and gatherer.single_scale_only(spec):
        compared = False
        notes.append("Δ omitted: the paper's values are multi-scale + flip, this preset tests single-scale "
                     "(eval.scales [1.0], eval.flip false, as the released configuration)")
    return setting, compared, notes


def _miou_text(group: Sequence[RunResult]) -> str:
    miou = Stat.of([100 * r.metrics["miou"] for r in group if r.metrics.get("miou") is not None])
    return "—" if miou is None else f"{miou.mean:.1f}" + (f" ± {miou.std:.1f}" if miou.std is not None else "")


def _versus_baseline(gatherer: _Gatherer, runs: Mapping[str, list[RunResult]]) -> tuple[dict[str, str], list[str]]:
    """Each run's single-scale last-epoch mIoU minus CMX's with its bootstrap interval (points; * significant)."""
    base, note = gatherer.counts("cmx", "single", "last") if "cmx" in runs else (None, None)
    notes = [note] if note else []
    out = {}
    for name in runs:
        if base is None or name == "cmx" or name in gatherer.released:  # released checkpoints: shown, not tested
            continue
        own, note = gatherer.counts(name, "single", "last")
        if own is None:
            notes.append(note)
            continue
        c = compare_runs(base, own)
        out[name] = interval_text(c) + (" *" if c.significant else "")
    return out, notes


def _regimes(results_dir: Path) -> dict[str, tuple[Stat | None, Stat | None]]:
    """Each run's train-split mIoU and train − test (:func:`primkd.report.compare.regime`), for the runs with both
    evaluations."""
    folder = results_dir / "eval"
    tested = evaluation_files(folder)
    return {name: regime(Evaluation.read(tested[name]), Evaluation.read(path))
            for name, path in evaluation_files(folder, "train").items() if name in tested}


def _points(stat: Stat | None, sign: str = "") -> str:
    return "—" if stat is None else f"{100 * stat.mean:{sign}.1f}" + (
        f" ± {100 * stat.std:.1f}" if stat.std is not None else "")


def _runs_table(runs: Mapping[str, list[RunResult]], best: Mapping[str, list[RunResult]],
                versus: Mapping[str, str] | None = None,
                regimes: Mapping[str, tuple[Stat | None, Stat | None]] | None = None) -> str:
    """One line per run: seeds, backbone, epochs, time, the single-scale mIoU of the last epoch, its train-split mIoU
    and train − test (``regimes``, from :func:`_regimes`), the mIoU of the best test-split epoch (test-set selection,
    as the official code reports; its epochs in brackets), and the last epoch's difference to CMX with its paired
    bootstrap interval (``versus``, from :func:`_versus_baseline`)."""
    versus, regimes = versus or {}, regimes or {}
    lines = ["| run | seeds | backbone | epochs | train time (s) | mIoU (%) last epoch | mIoU (%) train split "
             "| train − test | mIoU (%) best test-split epoch | Δ vs cmx [interval] |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, group in sorted(runs.items()):
        trains = [r.train for r in group if r.train is not None]
        seconds = Stat.of([t["train_seconds"] for t in trains if "train_seconds" in t])
        epochs_best = [r.epoch for r in best.get(name, []) if r.epoch is not None]
        best_text = _miou_text(best.get(name, [])) + (f" (epoch {', '.join(map(str, epochs_best))})"
                                                      if epochs_best else "")
        backbone = trains[0].get("backbone", "—") if trains else "—"
        epochs = trains[0].get("epochs", "—") if trains else "—"
        seeds = ", ".join(str(r.seed) for r in group if r.seed is not None)
        if not seeds:  # a teacher: trained once, with train.seed
            seeds = f"once (seed {trains[0]['seed']})" if trains and "seed" in trains[0] else "once"
        train, gap = regimes.get(name, (None, None))
        cells = [f"`{name}`", seeds, str(backbone), str(epochs), "—" if seconds is None else f"{seconds.mean:.0f}",
                 _miou_text(group), _points(train), _points(gap, "+"), best_text, versus.get(name, MISSING)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _image(title: str, target: Path, report_dir: Path, missing: str, notes: Sequence[str] = ()) -> str:
    if not target.is_file():
        return f"## {title}\n\n{missing}\n"
    text = f"## {title}\n\n![{title}]({os.path.relpath(target, report_dir)})\n"
    return text + ("\n" + "\n".join(f"- {note}" for note in notes) + "\n" if notes else "")


def _agreement_text(tables: Mapping[str, FilledTable]) -> str:
    """The count of rows whose direction against their table's reference agrees with the paper's."""
    counts = agreement_counts(list(tables.values()))
    total = sum(counts.values())
    if total == 0:
        return ""
    return (f"**Significance.** Every table with an mIoU column tests each row against its reference row (CMX, or the "
            f"paper's chosen setting of an ablation): paired bootstrap of the mIoU difference over the test images, "
            f"pooled over seeds ({BOOTSTRAP_RESAMPLES} resamples, {100 * CONFIDENCE:g}% interval). Direction against "
            f"the paper over {total} comparisons: **{counts['agrees']} agree, {counts['disagrees']} disagree**, "
            f"{counts['n.s.']} not significant, {counts['no paper value']} without a paper value"
            + (f", {counts[MISSING]} without an interval" if counts[MISSING] else "") + ".\n")


def _report_markdown(paper: PaperSpec, preset: str, matched: str | None, tables: Mapping[str, FilledTable],
                     figure1_notes: Sequence[str], runs: Mapping[str, list[RunResult]], results_dir: Path,
                     out_dir: Path, report_dir: Path, gatherer: _Gatherer) -> str:
    parts = [f"# PrimKD reproduction report: preset `{preset}`\n",
             f"Paper: {paper.source}. Each table gives ours, the paper's value and Δ = ours − paper; \"—\" marks a "
             f"value that is missing, and the notes under the table say why. {_setting_text(paper, preset, matched)} "
             f"Tables as CSV and LaTeX: `{os.path.relpath(out_dir / 'tables', report_dir)}/`.\n"]
    schedule = _schedule_text(paper, matched, gatherer.runs)
    if schedule:
        parts.append(schedule)
    agreement = _agreement_text(tables)
    if agreement:
        parts.append(agreement)
    sources = {name: group[0].train["teacher_source"] for name, group in runs.items()
               if group[0].train is not None and "teacher_source" in group[0].train}
    if sources:  # a teacher taken from a file (kd.teachers), or trained because that file is missing
        parts.append("Teachers: " + "; ".join(f"`{name}`: {text}" for name, text in sources.items()) + ".\n")
    for key, table in tables.items():
        spec = table.spec
        parts.append(f"## {key.replace('table', 'Table ')}: {spec.title}\n\n{spec.caption}\n\n{to_markdown(table)}")
    analysis = results_dir / "analysis"
    parts.append(_image("Figure 1: single-modal models, CMX and PrimKD", out_dir / "figure1.png", report_dir, "",
                        figure1_notes))
    parts.append(_image("Figure 3: qualitative predictions", analysis / "figure3_qualitative.png", report_dir,
                        "Not found: run the analyze stage."))
    parts.append(_image("Figure 4: feature-value histograms", analysis / "figure4_histograms.png", report_dir,
                        "Not found: run the analyze stage."))
    if runs:
        versus, notes = _versus_baseline(gatherer, runs)
        regimes = _regimes(results_dir)
        if regimes:
            notes.append("mIoU (%) train split: the last epoch's models scored single-scale on their own training "
                         "images (eval/<run>.train.json, no augmentation); train − test taken seed by seed (mean ± "
                         "std): far above 0, the networks fit their training set beyond unseen images (data-limited, "
                         "the paper's regime on NYU); near 0, they are still learning both alike (compute-limited)")
        text = _runs_table(runs, collect_runs(results_dir, "best"), versus, regimes)
        text += ("\n" + "\n".join(f"- {n}" for n in dict.fromkeys(notes)) + "\n") if notes else ""
        parts.append("## Runs\n\n" + text)
    else:
        parts.append("## Runs\n\nNo evaluated run yet.\n")
    return "\n".join(parts)


def _source_and_backbone(cfg: Mapping | None) -> tuple[str | None, str | None]:
    return (cfg["data"]["source"], cfg["model"]["backbone"]) if cfg is not None else (None, None)


def build_report(results_dir: str | os.PathLike, preset: str, out_dir: str | os.PathLike,
                 paper_path: str | os.PathLike | None = None, report_path: str | os.PathLike | None = None,
                 decoder_embed_dim: int = 512, cfg: Mapping | None = None) -> dict:
    """Write Tables 1–8, Figure 1 and REPORT.md for one preset (see the module docstring for the files).

    Args:
        results_dir: the preset's results folder (``results/<preset>``).
        preset: preset name; a paper setting of the same name is compared with, else the paper's default setting.
        out_dir: folder of the tables and Figure 1.
        paper_path: paper table file (default: the packaged ``paper.yaml``).
        report_path: where to write REPORT.md (default ``out_dir/REPORT.md``); its links are relative to it.
        decoder_embed_dim: decoder width of the measured network (Table 2 parameters and FLOPs).
        cfg: the resolved params (:func:`primkd.config.load_params`): data.source and model.backbone match the
            preset to a paper setting, eval.checkpoint picks the last or best epoch, the experiments fill rows by
            their kd settings. None: match by preset name, last epoch, rows by run name.

    Returns:
        ``{"tables": {key: [md, csv, tex paths]}, "figure1": [png, pdf], "report": path, "notes": count}``.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    report_path = Path(report_path) if report_path is not None else out_dir / "REPORT.md"
    # 1. Inputs: the paper's layout and values, our runs, the CKA table.
    paper = load_paper(paper_path)
    matched = paper.match(preset, *_source_and_backbone(cfg))
    setting = matched or paper.default_setting
    checkpoint = cfg["eval"]["checkpoint"] if cfg is not None else "last"
    gatherer = _Gatherer(results_dir, load_cka(results_dir / "analysis" / "cka.json"),
                         tuple(paper.settings[setting]["input"]), decoder_embed_dim, cfg, checkpoint)
    gatherer.released = {row.run for spec in (*paper.tables.values(), paper.figure1) for row in spec.rows
                         if row.released}
    # 2. Tables 1–8, each in the evaluation mode the paper used, with Δ only in the paper's setting.
    tables, written = {}, {}
    for key, spec in paper.tables.items():
        values, notes = gatherer.table(spec)
        table_setting, compared, why = _comparison(spec, paper, preset, matched, gatherer)
        if any(c.source == "eval" for c in spec.columns):
            spec = replace(spec, caption=f"{spec.caption} {gatherer.mode_text(spec)}")
        tables[key] = fill_table(spec, values, table_setting, [*why, *notes], compared)
        table = tables[key]
        table.significance, table.reference, table.significance_notes = gatherer.significance(spec, table_setting)
        paths = [out_dir / "tables" / f"{key}.{ext}" for ext in ("md", "csv", "tex")]
        for path, render in zip(paths, (to_markdown, to_csv, to_latex)):
            write_text(path, render(table))
        if table.significance:
            paths.append(out_dir / "tables" / f"{key}_significance.csv")
            write_text(paths[-1], to_significance_csv(table))
        written[key] = [str(p) for p in paths]
    # 3. Figure 1 and REPORT.md.
    values, notes = gatherer.table(paper.figure1)
    fig1 = fill_table(paper.figure1, values, setting, notes, matched is not None)
    s = paper.settings[setting]
    fig_paths = [out_dir / "figure1.png", out_dir / "figure1.pdf"]
    figure1(fig1, *fig_paths, subtitle=f"ours: preset {preset}; paper: {s['dataset']}, {s['backbone']}")
    write_text(report_path, _report_markdown(paper, preset, matched, tables, fig1.notes, gatherer.runs, results_dir,
                                             out_dir, report_path.parent, gatherer))
    return {"tables": written, "figure1": [str(p) for p in fig_paths], "report": str(report_path),
            "notes": sum(len(t.notes) for t in tables.values())}

