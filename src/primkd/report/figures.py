"""Report figures: Figure 1, the mIoU of the single-modal models, CMX and PrimKD, ours beside the paper's."""

from __future__ import annotations

import os

import numpy as np

from primkd.io import atomic_path
from primkd.report.tables import FilledTable


def figure1(table: FilledTable, png: str | os.PathLike, pdf: str | os.PathLike, subtitle: str = "") -> None:
    """Grouped bars of the first column of ``table``: ours (error bar = std over seeds) and the paper's value.

    A missing value has no bar and is marked "n/a" on the axis, so a partial grid still draws; a value from one
    seed has no error bar, and the legend says when no paper value is transcribed.

    Args:
        table: the filled ``figure1`` table of ``paper.yaml``.
        png: PNG to write (atomically).
        pdf: PDF to write (atomically).
        subtitle: second title line (dataset and backbone).
    """
    from matplotlib.figure import Figure

    column = table.spec.columns[0]
    cells = [row_cells[0] for row_cells in table.cells]
    x = np.arange(len(cells))
    ours = [c.ours.mean if c.ours else np.nan for c in cells]
    errors = [c.ours.std if c.ours and c.ours.std is not None else np.nan for c in cells]  # NaN: no error bar
    paper = [np.nan if c.paper is None else c.paper for c in cells]
    paper_label = "paper" if any(c.paper is not None for c in cells) else "paper (not transcribed)"
    fig = Figure(figsize=(1.3 * len(cells) + 2.0, 3.4), dpi=120)
    ax = fig.subplots()
    width = 0.38
    ax.bar(x - width / 2, ours, width, yerr=errors, capsize=3, label="ours")
    ax.bar(x + width / 2, paper, width, label=paper_label)
    for xi, o, e, p in zip(x, ours, errors, paper):
        for offset, value, top in ((-width / 2, o, o + np.nan_to_num(e)), (width / 2, p, p)):
            label = "n/a" if np.isnan(value) else f"{value:.{column.digits}f}"
            ax.annotate(label, (xi + offset, 0 if np.isnan(value) else top), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [row.label for row in table.spec.rows], fontsize=8)
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_ylabel(column.label, fontsize=9)
    ax.set_title(table.spec.title + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            # no creation date in the PDF: the same numbers give the same file, so DVC sees no change
            fig.savefig(tmp, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
