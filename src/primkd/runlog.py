"""Stage logs: stderr plus a log file that each run appends to, under a header naming the run.

Appending keeps a stage's whole history in one file: the epochs trained before a preemption and those after the
resume, every earlier run of prepare and hha.
"""

from __future__ import annotations

import datetime
import logging
import os
import shlex
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_header(argv: list[str], checkpoint_dir: str | os.PathLike | None = None) -> str:
    """The lines that open one run's section of a log: UTC time, process id and command, and for a training run the
    checkpoint it resumes from (the newest in each seed's folder under ``checkpoint_dir``) or that it starts afresh.
    """
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [f"===== {now} pid {os.getpid()}: primkd {shlex.join(argv)}"]
    if checkpoint_dir is not None:
        from primkd.io import list_checkpoints  # here: primkd.io loads OpenCV, which `primkd --help` should not

        root = Path(checkpoint_dir)
        folders = [root, *sorted(p for p in root.glob("seed*") if p.is_dir())] if root.is_dir() else []
        newest = [found[-1] for found in map(list_checkpoints, folders) if found]
        lines += [f"      resumes from {path}" for path in newest] or [
            f"      starts afresh (no checkpoint in {root})"]
    return "\n".join(lines) + "\n"


def setup_logging(log_path: str | os.PathLike | None, header: str | None = None) -> None:
    """Log to stderr and, when given, append to ``log_path`` (its folder is created) after writing ``header``."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        if header:
            with open(log_path, "a") as f:
                f.write(header)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)
