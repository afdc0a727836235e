"""Command line: one sub-command per pipeline stage and tool (``primkd <command> ...`` or ``python -m primkd ...``).

Each module of this package registers its commands with :func:`primkd.cli.options.add_command`; each command parses
its arguments and calls one library function. ``primkd <command>`` imports only the module of that command
(:data:`COMMANDS`), so a stage's code dependencies (:mod:`primkd.stages.closure`) hold its own command's module and
not the others': editing ``primkd infer`` reruns no training. Only argparse is imported here: a command imports what
it runs when it runs, so ``primkd --help`` and the torch-free stages never load torch (tests/test_lazy_imports.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from primkd import __version__
from primkd.runlog import run_header, setup_logging

log = logging.getLogger("primkd")

# Each sub-command -> the module whose `register(sub)` adds it (tests/test_pipelines.py checks the two agree).
COMMANDS = {
    "params": "pipeline", "download": "pipeline", "prepare": "pipeline", "hha": "pipeline", "train": "pipeline",
    "evaluate": "pipeline", "evaluate-released": "pipeline",
    "analyze": "report", "report": "report",
    "infer": "weights", "export": "weights", "import-official": "weights",
    "check-data": "check", "pretrain": "pretrain",
    "compare": "experiments", "check-params": "experiments",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` (the commands of its module), or of every command when it names none of them
    (``primkd --help``, a typo: argparse lists them all)."""
    parser = argparse.ArgumentParser(prog="primkd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for module in modules:
        importlib.import_module(f"primkd.cli.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    setup_logging(args.log, run_header(argv, getattr(args, "checkpoint_dir", None)))
    from primkd.config import ConfigError
    from primkd.io import DataError

    try:
        args.func(args)
    except (ConfigError, DataError, FloatingPointError) as e:  # bad input, full disk, non-finite loss: one line
        log.error("%s", e)
        raise SystemExit(2) from e
