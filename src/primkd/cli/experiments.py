"""``primkd compare`` (the preset's runs side by side: changed parameters, metrics mean ± std over seeds) and
``primkd check-params`` (params.yaml and the preset name, checked before DVC resolves them).

:func:`register` adds both sub-commands to the parser of :mod:`primkd.cli`; neither imports torch.
"""

from __future__ import annotations

import argparse
import sys

from primkd.cli.options import add_command, load_config


def cmd_compare(args: argparse.Namespace) -> None:
    from primkd.io import write_text
    from primkd.report.compare import build_summary, compare_table, headline, write_summary

    cfg = load_config(args)
    results = args.results or f"results/{cfg['preset']}"
    if args.headline:
        sys.stdout.write(headline(results))
        return
    if args.summary:
        write_summary(results, cfg, args.summary)
    table = compare_table(build_summary(results, cfg))
    if args.out:
        write_text(args.out, table)
    if args.curves:
        from primkd.report.compare import BASELINE, TEACHERS
        from primkd.report.curves import plot_curves

        for path in plot_curves(results, args.curves, order=[*TEACHERS, BASELINE, *cfg["experiments"]],
                                seeds=cfg["seeds"]):
            print(f"wrote {path}", file=sys.stderr)
    sys.stdout.write(table)


def cmd_check_params(args: argparse.Namespace) -> None:
    """Validate the file and the preset (an unknown preset stops here with the valid names, where DVC would only
    report `presets.<name>.data` missing), and a dvc.yaml beside it: it lists the file's experiments and is what the
    stage table generates (`make demo` would otherwise stop at DVC's first stage, or run a stale graph); print the
    preset's resolved values with --show."""
    from pathlib import Path

    import yaml

    cfg = load_config(args)
    dvc_yaml = Path(args.params).parent / "dvc.yaml"
    if dvc_yaml.is_file():
        from primkd.stages import check_dvc_yaml

        check_dvc_yaml(dvc_yaml, args.params)
    if args.show:
        sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False))
    else:
        print(f"{args.params}: valid; preset {cfg['preset']}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` and ``check-params`` sub-commands to ``primkd``'s sub-parsers."""
    p = add_command(sub, "compare", cmd_compare,
                  "Print one table of the preset's evaluated runs: changed parameters and metrics (mean ± std).")
    p.add_argument("--results", help="The preset's results folder (default: results/<preset>).")
    p.add_argument("--summary", help="Also write the compact summary JSON here (e.g. results/<preset>/summary.json).")
    p.add_argument("--out", help="Also write the table (Markdown) to this file.")
    p.add_argument("--headline", action="store_true",
                   help="Print only what make demo ends with: teachers, CMX and PrimKD mIoU (mean ± std over seeds) "
                        "and the PrimKD − CMX bootstrap interval.")
    p.add_argument("--curves", help="Also draw the training curves as PNG files in this folder: one per run and "
                                    "ablation.png (the students overlaid).")

    p = add_command(sub, "check-params", cmd_check_params,
                  "Check params.yaml against its schema and the preset name, and a dvc.yaml beside it against the "
                  "stage table (make demo and make all run this first).")
    p.add_argument("--show", action="store_true", help="Print the preset's resolved parameters.")
