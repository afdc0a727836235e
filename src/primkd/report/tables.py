"""Report tables: the layout and paper values of ``paper.yaml``, our values beside them, and three renderings.

Every table has, for each of its columns, three cells per row: ours (``mean ± std`` over seeds when a run has
several, the sample standard deviation), the paper's value, and Δ = ours − paper. Δ is printed only where the active
preset is in the setting the paper measured that table in (dataset, backbone, evaluation mode); elsewhere the paper's
column is shown for reference. A value that is missing on either side prints as "—" and the table's notes say why,
so a partial grid still reports.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from primkd.engine.metrics import seed_spread
from primkd.engine.results import MODES, SCALARS
from primkd.io import DataError
from primkd.report.significance import CONFIDENCE, Comparison

PAPER_YAML = Path(__file__).with_name("paper.yaml")
SOURCES = ("eval", "cka", "complexity")
EVAL_MODES = MODES  # the blocks of an evaluation JSON (primkd.engine.evaluate.evaluation_modes)
COMPLEXITY_KEYS = ("params_m", "gflops")
EVAL_KEYS = SCALARS  # the metrics an eval column can show: each seed's of the evaluation JSON
MISSING = "—"


@dataclass(frozen=True)
class Column:
    """One quantity of a table (see the header of ``paper.yaml`` for ``source``)."""

    key: str
    label: str
    source: str
    scale: float = 1.0
    digits: int = 1


@dataclass(frozen=True)
class Row:
    """One table row: a ``run`` (eval / complexity columns) or a ``student`` and ``reference`` (cka columns)."""

    label: str
    run: str | None = None
    student: str | None = None
    reference: str | None = None
    paper: Mapping = field(default_factory=dict)
    kd: Mapping | None = None  # the distillation keys the row stands for (see paper.yaml)
    paper_only: bool = False  # another method of the paper: no run of ours
    released: bool = False  # a published checkpoint (the evaluate_released stage): shown, not tested


@dataclass(frozen=True)
class TableSpec:
    """A table of ``paper.yaml``; ``by_setting`` tables hold the paper's values per setting."""

    key: str
    title: str
    row_header: str
    caption: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    by_setting: bool = False
    eval_mode: str = "single"  # the evaluation mode the paper used and the JSON block read
    paper_setting: str | None = None  # the one setting the paper measured this table in (ablations)

    def paper_value(self, row: Row, column: Column, setting: str) -> float | None:
        """The paper's number for this row and column in ``setting`` (None: not transcribed)."""
        values = row.paper.get(setting, {}) if self.by_setting else row.paper
        value = values.get(column.key)
        return None if value is None else float(value)


@dataclass(frozen=True)
class PaperSpec:
    """Everything in ``paper.yaml``."""

    source: str
    default_setting: str
    settings: Mapping[str, Mapping]
    tables: Mapping[str, TableSpec]
    figure1: TableSpec

    def match(self, preset: str, source: str | None = None, variant: str | None = None) -> str | None:
        """The paper setting a preset reproduces: the one of the same name, else the one with its dataset source and
        backbone (params.yaml data.source, model.backbone); None for any other preset (demo, smoke)."""
        if preset in self.settings:
            return preset
        return next((k for k, v in self.settings.items()
                     if source is not None and v.get("source") == source and v.get("variant") == variant), None)


def _column(raw: Mapping, where: str) -> Column:
    column = Column(**raw)
    if column.source not in SOURCES:
        raise DataError(f"{where}: column {column.key!r} has source {column.source!r}; use one of {SOURCES}")
    if column.source == "cka" and not re.fullmatch(r"stage[1-9]", column.key):
        raise DataError(f"{where}: cka column {column.key!r} must be named stage<k> (k = 1..4)")
    if column.source == "eval" and column.key not in EVAL_KEYS:
        raise DataError(f"{where}: eval column {column.key!r} must be one of {EVAL_KEYS}")
    if column.source == "complexity" and column.key not in COMPLEXITY_KEYS:
        raise DataError(f"{where}: complexity column {column.key!r} must be one of {COMPLEXITY_KEYS}")
    return column


def _table(key: str, raw: Mapping, settings: Mapping, where: str) -> TableSpec:
    try:
        columns = tuple(_column(c, f"{where}.{key}") for c in raw["columns"])
        spec = TableSpec(key=key, title=raw["title"], row_header=raw["row_header"], caption=raw["caption"],
                         columns=columns, rows=tuple(Row(**r) for r in raw["rows"]),
                         by_setting=raw.get("by_setting", False), eval_mode=raw.get("eval", "single"),
                         paper_setting=raw.get("paper_setting"))
    except (KeyError, TypeError) as e:
        raise DataError(f"{where}.{key}: malformed table ({e}); see the layout described at the top of "
                        f"{PAPER_YAML}") from e
    if spec.eval_mode not in EVAL_MODES:
        raise DataError(f"{where}.{key}: eval {spec.eval_mode!r} is not one of {EVAL_MODES}")
    if spec.paper_setting is not None and spec.paper_setting not in settings:
        raise DataError(f"{where}.{key}: paper_setting {spec.paper_setting!r} is not under `settings`")
    keys = {c.key for c in columns}
    for row in spec.rows:
        needs_run = any(c.source != "cka" for c in columns) and not row.paper_only
        needs_pair = not row.paper_only and not needs_run
        if (needs_run and row.run is None) or (needs_pair and (row.student is None or row.reference is None)):
            raise DataError(f"{where}.{key}: row {row.label!r} needs " + ("`run`" if needs_run else
                            "`student` and `reference`"))
        per_setting = row.paper.values() if spec.by_setting else [row.paper]
        unknown = (set(row.paper) - set(settings)) if spec.by_setting else set()
        unknown |= {k for values in per_setting for k in values} - keys
        if unknown:
            raise DataError(f"{where}.{key}: row {row.label!r} has paper values for unknown settings or columns "
                            f"{sorted(unknown)}; settings are {sorted(settings)}, columns {sorted(keys)}")
    return spec


def load_paper(path: str | os.PathLike | None = None) -> PaperSpec:
    """Read and check ``paper.yaml`` (the packaged one when ``path`` is None)."""
    path = Path(path) if path is not None else PAPER_YAML
    if not path.is_file():
        raise DataError(f"{path}: paper table file not found")
    raw = yaml.safe_load(path.read_text())
    try:
        settings = raw["settings"]
        if raw["default_setting"] not in settings:
            raise DataError(f"{path}: default_setting {raw['default_setting']!r} is not under `settings`")
        tables = {k: _table(k, v, settings, f"{path}: tables") for k, v in raw["tables"].items()}
        figure1 = _table("figure1", raw["figure1"], settings, str(path))
        return PaperSpec(raw["source"], raw["default_setting"], settings, tables, figure1)
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: missing or malformed key {e}; it needs source, default_setting, settings, tables "
                        f"and figure1") from e


@dataclass(frozen=True)
class Stat:
    """Our value: mean, sample standard deviation (None for one seed) and number of seeds."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        """Mean ± sample std (ddof 1) of the finite ``values``; None when there is none."""
        spread = seed_spread(values)
        return None if spread is None else cls(*spread)


@dataclass(frozen=True)
class Cell:
    """Ours and the paper's value of one row and column; Δ = ours − paper when ``compared`` (same setting)."""

    ours: Stat | None
    paper: float | None
    compared: bool = True

    @property
    def delta(self) -> float | None:
        if not self.compared or self.ours is None or self.paper is None:
            return None
        return self.ours.mean - self.paper


# A table's reference row for the significance block: the CMX baseline (no teacher) when the table has it (Tables 1-3),
# else the full method, the paper's chosen setting of an ablation (Tables 4-7: the row whose run is primkd).
REFERENCE_RUNS = ("cmx", "primkd")


def reference_row(spec: TableSpec) -> int | None:
    """Index of the row the other rows of ``spec`` are tested against (:data:`REFERENCE_RUNS`); None for a table
    without an mIoU column (complexity, CKA) or without such a row."""
    if not any(c.source == "eval" and c.key == "miou" for c in spec.columns):
        return None
    return next((i for run in REFERENCE_RUNS for i, row in enumerate(spec.rows)
                 if row.run == run and not row.paper_only), None)


@dataclass(frozen=True)
class SignificanceRow:
    """One row against its table's reference row: our mIoU (% mean ± sample std over seeds, from the per-image
    counts), the paired bootstrap of the difference, the paper's difference (points) and whether ours goes its way.

    ``agreement`` is :func:`primkd.report.significance.direction_agreement` (agrees, disagrees, n.s., no paper
    value), ``reference`` for the reference row itself and "—" where an interval is missing.
    """

    label: str
    ours: Stat | None
    comparison: Comparison | None
    paper_delta: float | None
    agreement: str


@dataclass
class FilledTable:
    """A table with its cells (rows × columns), the paper setting compared with, and notes on missing values;
    ``significance`` (tables with an mIoU column) holds each run row against ``reference`` (a row label)."""

    spec: TableSpec
    setting: str
    cells: list[list[Cell]]
    notes: list[str]
    significance: list[SignificanceRow] = field(default_factory=list)
    reference: str | None = None
    significance_notes: list[str] = field(default_factory=list)


def fill_table(spec: TableSpec, ours: Sequence[Mapping[str, Stat | None]], setting: str,
               notes: Sequence[str] = (), compare: bool = True) -> FilledTable:
    """Put our values (one ``{column key: Stat}`` per row) beside the paper's; note the values the paper leaves out.

    ``compare`` False (the preset is not in the paper's setting) keeps the paper column but prints no Δ.
    """
    cells = [[Cell(values.get(c.key), spec.paper_value(row, c, setting), compare) for c in spec.columns]
             for row, values in zip(spec.rows, ours, strict=True)]
    notes = list(notes)
    absent = [f"{row.label} ({c.label})" for row, r_cells in zip(spec.rows, cells) for c, cell in
              zip(spec.columns, r_cells) if cell.paper is None]
    if len(absent) == len(spec.rows) * len(spec.columns):
        what = "figure" if spec.key.startswith("figure") else "table"
        notes.append(f"the paper prints no value in this {what} (null in paper.yaml, setting {setting})")
    elif absent:
        notes.append(f"no paper value (the paper prints none; null in paper.yaml, setting {setting}): "
                     f"{', '.join(absent)}")
    return FilledTable(spec, setting, cells, notes)


def _num(x: float | None, digits: int, signed: bool = False) -> str:
    if x is None:
        return MISSING
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ours_text(stat: Stat | None, digits: int) -> str:
    if stat is None:
        return MISSING
    text = _num(stat.mean, digits)
    return text if stat.std is None else f"{text} ± {_num(stat.std, digits)}"


def significance_markdown(table: FilledTable) -> str:
    """The significance block of a table: each row against the reference row (empty when the table has none)."""
    if not table.significance:
        return ""
    sample = next((r.comparison for r in table.significance if r.comparison is not None), None)
    how = (f"paired bootstrap over {sample.num_images} test images pooled over seeds, {sample.num_boot} resamples"
           if sample is not None else "paired bootstrap over test images pooled over seeds")
    level = f"{100 * (sample.confidence if sample else CONFIDENCE):g}%"
    lines = [f"Against **{table.reference}** (Δ in points; {level} interval by {how}; * = the interval excludes 0; "
             f"direction: whether a significant Δ has the sign of the paper's):", "",
             f"| {table.spec.row_header} | mIoU (%) mean ± std (seeds) | Δ mIoU | {level} interval | sig. "
             f"| paper Δ | direction vs paper |", "|---|---:|---:|---:|:---:|---:|---|"]
    for r in table.significance:
        seeds = "" if r.ours is None else f" ({r.ours.n})"
        c = r.comparison
        delta, interval, mark = ((f"{100 * c.delta:+.1f}", f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]",
                                  "*" if c.significant else "") if c is not None else (MISSING, MISSING, ""))
        paper = MISSING if r.paper_delta is None else f"{r.paper_delta:+.1f}"
        lines.append(f"| {r.label} | {_ours_text(r.ours, 1)}{seeds} | {delta} | {interval} | {mark} | {paper} "
                     f"| {r.agreement} |")
    text = "\n".join(lines) + "\n"
    if table.significance_notes:
        text += "\n" + "\n".join(f"- {note}" for note in table.significance_notes) + "\n"
    return text


def to_significance_csv(table: FilledTable) -> str:
    """CSV of the significance block: ``row, reference, miou_mean, miou_std, seeds, delta, ci_low, ci_high,
    significant, paper_delta, direction`` (mIoU and differences in points; empty = missing)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["row", "reference", "miou_mean", "miou_std", "seeds", "delta", "ci_low", "ci_high",
                     "significant", "paper_delta", "direction"])
    for r in table.significance:
        c = r.comparison
        interval = ["", "", "", ""] if c is None else [_round(100 * c.delta), _round(100 * c.ci_low),
                                                       _round(100 * c.ci_high), c.significant]
        writer.writerow([r.label, table.reference, _round(r.ours.mean if r.ours else None),
                         _round(r.ours.std if r.ours else None), r.ours.n if r.ours else 0, *interval,
                         _round(r.paper_delta), r.agreement])
    return buf.getvalue()


def agreement_counts(tables: Sequence[FilledTable]) -> dict[str, int]:
    """How many rows, over ``tables``, agree, disagree, are not significant, or have no paper value or interval."""
    counts = {"agrees": 0, "disagrees": 0, "n.s.": 0, "no paper value": 0, MISSING: 0}
    for table in tables:
        for r in table.significance:
            if r.agreement in counts:
                counts[r.agreement] += 1
    return counts


def to_markdown(table: FilledTable) -> str:
    """GitHub Markdown: a header row ``<column> ours | paper | Δ`` per column, the notes as a list, then the
    significance block (:func:`significance_markdown`)."""
    spec = table.spec
    header = [spec.row_header] + [f"{c.label} {part}" for c in spec.columns for part in ("ours", "paper", "Δ")]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row, cells in zip(spec.rows, table.cells):
        parts = [row.label]
        for c, cell in zip(spec.columns, cells):
            parts += [_ours_text(cell.ours, c.digits), _num(cell.paper, c.digits), _num(cell.delta, c.digits, True)]
        lines.append("| " + " | ".join(parts) + " |")
    text = "\n".join(lines) + "\n"
    if table.notes:
        text += "\n" + "\n".join(f"- {note}" for note in table.notes) + "\n"
    block = significance_markdown(table)
    return text + ("\n" + block if block else "")


def _round(x: float | None) -> float | str:
    return "" if x is None else round(x, 6)


def to_csv(table: FilledTable) -> str:
    """CSV: ``row, <key>_ours, <key>_ours_std, <key>_seeds, <key>_paper, <key>_delta`` per column (empty = missing)."""
    spec = table.spec
    fields = ["row"] + [f"{c.key}_{p}" for c in spec.columns for p in ("ours", "ours_std", "seeds", "paper", "delta")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for row, cells in zip(spec.rows, table.cells):
        values: list = [row.label]
        for cell in cells:
            mean, std, n = (cell.ours.mean, cell.ours.std, cell.ours.n) if cell.ours else (None, None, 0)
            values += [_round(mean), _round(std), n, _round(cell.paper), _round(cell.delta)]
        writer.writerow(values)
    return buf.getvalue()


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "α": r"$\alpha$", "β": r"$\beta$", "Δ": r"$\Delta$", "×": r"$\times$", "—": "--", "–": "--"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and write the Greek letters and dashes used in labels as LaTeX."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_cell(text: str) -> str:
    if text == MISSING:
        return "--"
    return "$" + text.replace("±", r"\pm") + "$"


def to_latex(table: FilledTable) -> str:
    """A booktabs ``table`` environment with one ``ours / paper / Δ`` column group per quantity."""
    spec = table.spec
    n = len(spec.columns)
    groups = " & ".join(rf"\multicolumn{{3}}{{c}}{{{latex_escape(c.label)}}}" for c in spec.columns)
    rules = " ".join(rf"\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}" for i in range(n))
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(spec.title)}. {latex_escape(spec.caption)}}}",
             rf"\label{{tab:{spec.key}}}", rf"\begin{{tabular}}{{l{'rrr' * n}}}", r"\toprule",
             rf"{latex_escape(spec.row_header)} & {groups} \\", rules,
             " & " + " & ".join(["ours & paper & $\\Delta$"] * n) + r" \\", r"\midrule"]
    for row, cells in zip(spec.rows, table.cells):
        parts = [latex_escape(row.label)]
        for c, cell in zip(spec.columns, cells):
            parts += [_latex_cell(_ours_text(cell.ours, c.digits)), _latex_cell(_num(cell.paper, c.digits)),
                      _latex_cell(_num(cell.delta, c.digits, True))]
        lines.append(" & ".join(parts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
