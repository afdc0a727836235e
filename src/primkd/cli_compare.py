"""``primkd compare``: the preset's runs side by side (changed parameters, mIoU/mAcc/pAcc mean ± std over seeds).

:func:`register` adds the sub-command to the parser of :mod:`primkd.cli`; it reads only JSON (no torch).
"""

from __future__ import annotations

import argparse
import sys

from primkd.cli import add_stage, load_config


def cmd_compare(args: argparse.Namespace) -> None:
    from primkd.io import write_text
    from primkd.report.compare import build_summary, compare_table, write_summary

    cfg = load_config(args)
    results = args.results or f"results/{cfg['preset']}"
    if args.summary:
        write_summary(results, cfg, args.summary)
    table = compare_table(build_summary(results, cfg))
    if args.out:
        write_text(args.out, table)
    if args.curves:
        from primkd.report.compare import BASELINE, TEACHERS
        from primkd.report.curves import plot_curves

        for path in plot_curves(results, args.curves, order=[*TEACHERS, BASELINE, *cfg["experiments"]]):
            print(f"wrote {path}", file=sys.stderr)
    sys.stdout.write(table)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` sub-command to ``primkd``'s sub-parsers."""
    p = add_stage(sub, "compare", cmd_compare,
                  "Print one table of the preset's evaluated runs: changed parameters and metrics (mean ± std).")
    p.add_argument("--results", help="The preset's results folder (default: results/<preset>).")
    p.add_argument("--summary", help="Also write the compact summary JSON here (e.g. results/<preset>/summary.json).")
    p.add_argument("--out", help="Also write the table (Markdown) to this file.")
    p.add_argument("--curves", help="Also draw the training curves as PNG files in this folder: one per run and "
                                    "ablation.png (the students overlaid).")
