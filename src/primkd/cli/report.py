"""Command line of the analysis and report stages: ``primkd analyze ...`` and ``primkd report ...``.

:func:`register` adds both sub-commands to the parser of :mod:`primkd.cli`; every path is an argument, and both accept
the same ``--params/--preset/--log/--no-progress`` flags as the other stages.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from primkd.cli.options import add_command, load_config, use_threads

log = logging.getLogger("primkd")


def student_arg(text: str) -> tuple[str, str]:
    """Parse ``NAME=PATH`` (a run name and its model file or run folder)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. cmx=results/demo/models/cmx), got {text!r}")
    return name, path


def cmd_analyze(args: argparse.Namespace) -> None:
    from primkd.analysis.run import analyze
    from primkd.config import ConfigError, EvalConfig, TrainConfig
    from primkd.engine.runtime import select_device

    cfg = load_config(args)
    threads = use_threads(args, cfg)
    t, ev = TrainConfig.of(cfg), EvalConfig.of(cfg)
    students = dict(args.student)
    if len(students) != len(args.student):
        names = [name for name, _ in args.student]
        raise ConfigError(f"--student {sorted({n for n in names if names.count(n) > 1})} given more than once; "
                          f"give each run name once")
    result = analyze(students, args.rgb_model, args.depth_model, args.data, args.hha, args.out_dir,
                     max_images=args.max_images, batch_size=args.batch_size or ev.batch_size,
                     num_qualitative=args.qualitative_images, num_bins=args.bins,
                     calibration_images=args.calibration_images, device=select_device(t.device),
                     num_workers=threads.workers, bgr=t.bgr, progress=not args.no_progress, seeds=cfg["seeds"])
    for row in result["cka"]:
        log.info("CKA %s vs %s, stage %d: %.4f", row["student"], row["reference"], row["stage"], row["cka"])
    log.info("analysis written to %s", args.out_dir)


def cmd_report(args: argparse.Namespace) -> None:
    from primkd.report.run import build_report

    cfg = load_config(args)
    result = build_report(args.results, cfg["preset"], args.out_dir, paper_path=args.paper, report_path=args.report,
                          decoder_embed_dim=cfg["model"]["decoder_embed_dim"], cfg=cfg)
    log.info("report written to %s (%d table notes)", result["report"], result["notes"])
    if args.summary:
        from primkd.report.compare import write_summary

        log.info("summary written to %s", write_summary(args.results, cfg, args.summary))
    if args.curves:
        from primkd.report.compare import BASELINE, TEACHERS
        from primkd.report.curves import plot_curves

        pngs = plot_curves(args.results, args.curves, order=[*TEACHERS, BASELINE, *cfg["experiments"]],
                           seeds=cfg["seeds"])
        log.info("%d training-curve figures written to %s", len(pngs), args.curves)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` and ``report`` sub-commands to ``primkd``'s sub-parsers."""
    p = add_command(sub, "analyze", cmd_analyze,
               "Table 8 (linear CKA per stage), Figure 4 (feature histograms) and Figure 3 (predictions).")
    p.add_argument("--student", action="append", type=student_arg, required=True, metavar="NAME=PATH",
                   help="A CMX student to analyse: run name and model file or run folder (results/<preset>/models/"
                        "<run>, whose seed<k>/ of the lowest of `seeds` is used); repeat for each (figure order).")
    p.add_argument("--rgb-model", required=True,
                   help="RGB teacher: model file or run folder (also the RGB-only SegFormer of Fig. 3).")
    p.add_argument("--depth-model",
                   help="Depth-only model: model file or run folder (the depth reference of Table 8); omit to skip.")
    p.add_argument("--data", required=True, help="Prepared dataset folder (its test split is analysed).")
    p.add_argument("--hha", help="HHA folder (needed by the students and the depth-only model).")
    p.add_argument("--out-dir", required=True,
                   help="Output folder: cka.csv/json (cka.json names the model file and seed used), figure3_*, "
                        "figure4_* files.")
    p.add_argument("--max-images", type=int, help="Analyse only the first N test images (default: all).")
    p.add_argument("--batch-size", type=int,
                   help="Test images per forward pass (default: eval.batch_size); changes no result beyond float32 "
                        "rounding.")
    p.add_argument("--qualitative-images", type=int, default=4, help="Number of test images shown in Figure 3.")
    p.add_argument("--bins", type=int, default=100, help="Histogram bins per stage (Figure 4).")
    # 8 = the 2 minibatches of 4 images (the demo's eval.batch_size) that fixed the range when it was counted in
    # minibatches: the same images, and the demo's pool (under 1e6 values a stage) is used whole, so its bins stay.
    p.add_argument("--calibration-images", type=int, default=8,
                   help="First test images whose 0.1%%/99.9%% quantiles fix each stage's histogram range (Figure 4).")

    p = add_command(sub, "report", cmd_report, "Tables 1-8 with the paper's numbers, Figure 1 and REPORT.md.")
    p.add_argument("--results", required=True, help="The preset's results folder (eval/, models/, analysis/).")
    p.add_argument("--out-dir", required=True, help="Output folder of the tables (tables/) and Figure 1.")
    p.add_argument("--report", help="Path of REPORT.md (default: OUT_DIR/REPORT.md).")
    p.add_argument("--paper", type=Path, help="Paper table file (default: the packaged report/paper.yaml).")
    p.add_argument("--summary", help="Also write the compact summary JSON (runs, seeds, mIoU mean ± std, the "
                                     "parameters that define them) here, e.g. results/<preset>/summary.json.")
    p.add_argument("--curves", help="Also draw the training curves (one PNG per run, ablation.png) in this folder.")
