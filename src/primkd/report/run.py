"""The report stage: gather the run results, put the paper's numbers beside them, write tables, Figure 1, REPORT.md.

Inputs under ``results_dir`` (``results/<preset>``), all optional (whatever is missing prints as "—" with a note):

- ``eval/<run>.json``: the evaluation of one run (``primkd evaluate``): ``miou``, ``macc``, ``pacc`` in [0, 1], the
  per-class ``iou`` and ``per_seed``, one ``{seed, miou, macc, pacc}`` per trained seed. A student run has one entry
  per seed of params.yaml ``seeds``, and the tables report mean ± sample standard deviation (ddof 1) over them, not
  the file's ``miou_std`` (population std); a teacher has one entry with ``seed: null`` and reports its value alone;
- ``models/<run>/seed<k>/train.json`` (students) or ``models/<run>/train.json`` (teachers): backbone, epochs,
  training time;
- ``analysis/cka.json`` (Table 8) and ``analysis/figure3_qualitative.png``, ``analysis/figure4_histograms.png``.

Outputs: ``out_dir/tables/<table>.md|.csv|.tex`` for Tables 1–8, ``out_dir/figure1.png|.pdf`` and ``REPORT.md``
(``report_path``, by default ``out_dir/REPORT.md``), all written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from primkd.io import DataError, read_json, write_text
from primkd.report.figures import figure1
from primkd.report.tables import (
    EVAL_KEYS,
    Column,
    FilledTable,
    PaperSpec,
    Row,
    Stat,
    TableSpec,
    fill_table,
    load_paper,
    to_csv,
    to_latex,
    to_markdown,
)

if TYPE_CHECKING:  # torch is imported only when a table needs the network's size: the report runs without it
    import torch
    from torch import nn


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


def _read_train(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def run_results(results_dir: Path, name: str, evaluation: Mapping) -> list[RunResult]:
    """The results of run ``name`` from its evaluation JSON: one per ``per_seed`` entry with a seed, else one."""
    num_classes = len(evaluation["iou"]) if evaluation.get("iou") else None
    seeded = [e for e in evaluation.get("per_seed", []) if e.get("seed") is not None]
    if not seeded:
        metrics = {k: evaluation.get(k) for k in EVAL_KEYS}
        return [RunResult(name, None, metrics, _read_train(results_dir / "models" / name / "train.json"),
                          num_classes)]
    results = []
    for entry in seeded:
        if not isinstance(entry["seed"], int):
            raise DataError(f"{results_dir / 'eval' / name}.json: per_seed has seed {entry['seed']!r}, not an "
                            f"integer; re-run its evaluate stage")
        train = _read_train(results_dir / "models" / name / f"seed{entry['seed']}" / "train.json")
        results.append(RunResult(name, entry["seed"], {k: entry.get(k) for k in EVAL_KEYS}, train, num_classes))
    return results


def collect_runs(results_dir: str | os.PathLike) -> dict[str, list[RunResult]]:
    """Every evaluated run under ``results_dir/eval`` by run name, one :class:`RunResult` per seed (or just one)."""
    results_dir = Path(results_dir)
    return {path.stem: run_results(results_dir, path.stem, read_json(path))
            for path in sorted((results_dir / "eval").glob("*.json"))}


def load_cka(path: str | os.PathLike) -> dict[tuple[str, str, int], float] | None:
    """``{(student, reference, stage): cka}`` from the analysis stage's ``cka.json``; None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return {(r["student"], r["reference"], int(r["stage"])): float(r["cka"]) for r in read_json(path)["rows"]}


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (torch's FlopCounterMode counts two FLOPs per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() // 2


def measure_complexity(variant: str, num_classes: int, height: int, width: int,
                       decoder_embed_dim: int = 512) -> dict[str, int]:
    """Parameters and multiply-accumulates of the CMX inference network on one ``height×width`` RGB-HHA pair.

    The network is built on the meta device (no memory, no weights), so MiT-B4 at 530×730 takes about a second.
    There, attention runs its math path (two batched matmuls), which the counter sees; the CPU's fused attention
    kernel has no FLOP formula in ``FlopCounterMode`` and would be missed.

    Returns:
        ``{"params": parameter elements, "macs": multiply-accumulates}``.
    """
    import torch

    from primkd.models.segmentors import build_student, count_parameters

    with torch.device("meta"):
        model = build_student(variant, num_classes, decoder_embed_dim=decoder_embed_dim).eval()
        x = torch.empty(1, 3, height, width)  # (B, 3, H, W), RGB and HHA alike
    return {"params": count_parameters(model), "macs": count_macs(model, x, x)}


class _Gatherer:
    """Our value of each (row, column) of a table, and the notes that explain the missing ones."""

    def __init__(self, results_dir: Path, runs: Mapping[str, list[RunResult]], cka: Mapping | None,
                 input_size: tuple[int, int], decoder_embed_dim: int) -> None:
        self.results_dir, self.runs, self.cka = results_dir, runs, cka
        self.input_size, self.decoder_embed_dim = input_size, decoder_embed_dim
        self.complexity: dict[tuple, dict[str, int]] = {}

    def table(self, spec: TableSpec) -> tuple[list[dict[str, Stat | None]], list[str]]:
        values, notes = [], []
        missing = [f"`{row.run}`" for row in spec.rows if row.run is not None and row.run not in self.runs]
        if missing:
            notes.append(f"no evaluation in {self.results_dir / 'eval'} for {', '.join(dict.fromkeys(missing))}: run "
                         f"their evaluate stages (a student experiment must be listed in params.yaml `experiments`)")
        for row in spec.rows:
            row_values = {}
            for column in spec.columns:
                row_values[column.key], note = self.value(row, column)
                if note and note not in notes:
                    notes.append(note)
            values.append(row_values)
        seeded = [f"{row.label} (n = {v.n})" for row, vals in zip(spec.rows, values) for v in vals.values()
                  if v is not None and v.n > 1]
        if seeded:
            notes.append(f"ours is mean ± sample standard deviation over seeds: {', '.join(dict.fromkeys(seeded))}")
        return values, notes

    def value(self, row: Row, column: Column) -> tuple[Stat | None, str | None]:
        if column.source == "cka":
            return self._cka(row, column)
        if row.run not in self.runs:  # noted once per table by `table`
            return None, None
        if column.source == "eval":
            return Stat.of([r.metrics.get(column.key) * column.scale for r in self.runs[row.run]
                            if r.metrics.get(column.key) is not None]), None
        return self._complexity(row, column)

    def _cka(self, row: Row, column: Column) -> tuple[Stat | None, str | None]:
        if self.cka is None:
            return None, f"no {self.results_dir / 'analysis' / 'cka.json'}: run the analyze stage"
        value = self.cka.get((row.student, row.reference, int(column.key.removeprefix("stage"))))
        if value is None:
            return None, f"cka.json has no `{row.student}` vs `{row.reference}`: pass that student to the analyze stage"
        return Stat.of([value]), None

    def _complexity(self, row: Row, column: Column) -> tuple[Stat | None, str | None]:
        result = next((r for r in self.runs[row.run] if r.train is not None), self.runs[row.run][0])
        if result.train is None or result.num_classes is None:
            return None, (f"`{row.run}`: parameters and FLOPs need its train.json under models/{row.run}/ (backbone) "
                          f"and the per-class IoU of its evaluation (number of classes)")
        key = (result.train["backbone"], result.num_classes, *self.input_size, self.decoder_embed_dim)
        if key not in self.complexity:
            self.complexity[key] = measure_complexity(*key)
        measured = self.complexity[key]
        return Stat.of([measured["params"] / 1e6 if column.key == "params_m" else measured["macs"] / 1e9]), None


def _setting_text(paper: PaperSpec, preset: str, setting: str) -> str:
    s = paper.settings[setting]
    text = f"The paper column is the paper's {s['dataset']}, {s['backbone']} setting (`{setting}`)"
    if preset != setting:
        text += (f"; the active preset `{preset}` is not one of the paper's settings, so Δ is the gap to the paper's "
                 f"numbers on another dataset and backbone, not a reproduction error")
    return text + "."


def _runs_table(runs: Mapping[str, list[RunResult]]) -> str:
    lines = ["| run | seeds | backbone | epochs | train time (s) | mIoU (%) |", "|---|---:|---|---:|---:|---:|"]
    for name, group in sorted(runs.items()):
        trains = [r.train for r in group if r.train is not None]
        seconds = Stat.of([t["train_seconds"] for t in trains if "train_seconds" in t])
        miou = Stat.of([100 * r.metrics["miou"] for r in group if r.metrics.get("miou") is not None])
        backbone = trains[0].get("backbone", "—") if trains else "—"
        epochs = trains[0].get("epochs", "—") if trains else "—"
        seeds = ", ".join(str(r.seed) for r in group if r.seed is not None)
        if not seeds:  # a teacher: trained once, with train.seed
            seeds = f"once (seed {trains[0]['seed']})" if trains and "seed" in trains[0] else "once"
        cells = [f"`{name}`", seeds, str(backbone), str(epochs), "—" if seconds is None else f"{seconds.mean:.0f}",
                 "—" if miou is None else f"{miou.mean:.1f}" + (f" ± {miou.std:.1f}" if miou.std is not None else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _image(title: str, target: Path, report_dir: Path, missing: str, notes: Sequence[str] = ()) -> str:
    if not target.is_file():
        return f"## {title}\n\n{missing}\n"
    text = f"## {title}\n\n![{title}]({os.path.relpath(target, report_dir)})\n"
    return text + ("\n" + "\n".join(f"- {note}" for note in notes) + "\n" if notes else "")


def _report_markdown(paper: PaperSpec, preset: str, setting: str, tables: Mapping[str, FilledTable],
                     figure1_notes: Sequence[str], runs: Mapping[str, list[RunResult]], results_dir: Path,
                     out_dir: Path, report_dir: Path) -> str:
    parts = [f"# PrimKD reproduction report: preset `{preset}`\n",
             f"Paper: {paper.source}. Each table gives ours, the paper's value and Δ = ours − paper; \"—\" marks a "
             f"value that is missing, and the notes under the table say why. {_setting_text(paper, preset, setting)} "
             f"Tables as CSV and LaTeX: `{os.path.relpath(out_dir / 'tables', report_dir)}/`.\n"]
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
    parts.append("## Runs\n\n" + (_runs_table(runs) if runs else "No evaluated run yet.\n"))
    return "\n".join(parts)


def build_report(results_dir: str | os.PathLike, preset: str, out_dir: str | os.PathLike,
                 paper_path: str | os.PathLike | None = None, report_path: str | os.PathLike | None = None,
                 decoder_embed_dim: int = 512) -> dict:
    """Write Tables 1–8, Figure 1 and REPORT.md for one preset (see the module docstring for the files).

    Args:
        results_dir: the preset's results folder (``results/<preset>``).
        preset: preset name; a paper setting of the same name is compared with, else the paper's default setting.
        out_dir: folder of the tables and Figure 1.
        paper_path: paper table file (default: the packaged ``paper.yaml``).
        report_path: where to write REPORT.md (default ``out_dir/REPORT.md``); its links are relative to it.
        decoder_embed_dim: decoder width of the measured network (Table 2 parameters and FLOPs).

    Returns:
        ``{"tables": {key: [md, csv, tex paths]}, "figure1": [png, pdf], "report": path, "notes": count}``.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    report_path = Path(report_path) if report_path is not None else out_dir / "REPORT.md"
    # 1. Inputs: the paper's layout and values, our runs, the CKA table.
    paper = load_paper(paper_path)
    setting = paper.setting_for(preset)
    gatherer = _Gatherer(results_dir, collect_runs(results_dir), load_cka(results_dir / "analysis" / "cka.json"),
                         tuple(paper.settings[setting]["input"]), decoder_embed_dim)
    # 2. Tables 1–8.
    tables, written = {}, {}
    for key, spec in paper.tables.items():
        values, notes = gatherer.table(spec)
        tables[key] = fill_table(spec, values, setting, notes)
        paths = [out_dir / "tables" / f"{key}.{ext}" for ext in ("md", "csv", "tex")]
        for path, render in zip(paths, (to_markdown, to_csv, to_latex)):
            write_text(path, render(tables[key]))
        written[key] = [str(p) for p in paths]
    # 3. Figure 1 and REPORT.md.
    values, notes = gatherer.table(paper.figure1)
    fig1 = fill_table(paper.figure1, values, setting, notes)
    s = paper.settings[setting]
    fig_paths = [out_dir / "figure1.png", out_dir / "figure1.pdf"]
    figure1(fig1, *fig_paths, subtitle=f"ours: preset {preset}; paper: {s['dataset']}, {s['backbone']}")
    write_text(report_path, _report_markdown(paper, preset, setting, tables, fig1.notes, gatherer.runs, results_dir,
                                             out_dir, report_path.parent))
    return {"tables": written, "figure1": [str(p) for p in fig_paths], "report": str(report_path),
            "notes": sum(len(t.notes) for t in tables.values())}

