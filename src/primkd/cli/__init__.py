"""Command line: one sub-command per pipeline stage and tool (``primkd <command> ...`` or ``python -m primkd ...``).

Each module of this package registers its commands with :func:`primkd.cli.options.add_command`; each command parses
its arguments and calls one library function. Only argparse is imported here: a command imports what it runs when it
runs, so ``primkd --help`` and the torch-free stages never load torch (tests/test_lazy_imports.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from primkd.cli.check import register as register_check
from primkd.cli.experiments import register as register_experiments
from primkd.cli.pipeline import register as register_pipeline
from primkd.cli.report import register as register_report
from primkd.cli.weights import register as register_weights
from primkd.runlog import run_header, setup_logging

log = logging.getLogger("primkd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="primkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # called by name, so that primkd.stages follows each into the imports of its commands' flags
    register_pipeline(sub)
    register_weights(sub)
    register_report(sub)
    register_check(sub)
    register_experiments(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.log, run_header(sys.argv[1:] if argv is None else argv, getattr(args, "checkpoint_dir", None)))
    from primkd.config import ConfigError
    from primkd.io import DataError

    try:
        args.func(args)
    except (ConfigError, DataError, FloatingPointError) as e:  # bad input, full disk, non-finite loss: one line
        log.error("%s", e)
        raise SystemExit(2) from e
