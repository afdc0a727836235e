"""``primkd check-data``: list every problem of a prepared dataset at once; exit status 1 when there is any."""

from __future__ import annotations

import argparse
import logging

from primkd.cli.options import add_command

log = logging.getLogger("primkd")


def cmd_check_data(args: argparse.Namespace) -> None:
    """Print one line per problem (stdout); raise ``SystemExit(1)`` when there is at least one."""
    from primkd.data.check import check_dataset

    problems = check_dataset(args.data, args.hha, progress=not args.no_progress)
    for problem in problems:
        print(problem)
    if problems:
        log.error("%s: %d problem(s) found", args.data, len(problems))
        raise SystemExit(1)
    log.info("%s: no problems found", args.data)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check-data`` sub-command to the ``primkd`` parser's sub-parsers."""
    text = "Check a prepared dataset (and its HHA folder) and list every problem at once."
    p = add_command(subparsers, "check-data", cmd_check_data, text, params=False)
    p.add_argument("--data", required=True, help="Prepared dataset folder to check.")
    p.add_argument("--hha", help="HHA folder of the dataset to check as well.")
    return p
