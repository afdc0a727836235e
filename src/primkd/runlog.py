"""Stage logs: stderr plus a log file that each run appends to, under a header naming the run.

Appending keeps a stage's whole history in one file: the epochs trained before a preemption and those after the
resume, every earlier run of prepare and hha.
"""

from __future__ import annotations

import contextlib
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
        # seed<k>/ only: a run set aside by the engine (seed0.stale-<time>/) is no checkpoint a run resumes from
        seeds = sorted(p for p in root.glob("seed*") if p.is_dir() and p.name[4:].isdigit()) if root.is_dir() else []
        folders = [root, *seeds] if root.is_dir() else []
        newest = [found[-1] for found in map(list_checkpoints, folders) if found]
        lines += [f"      resumes from {path}" for path in newest] or [
            f"      starts afresh (no checkpoint in {root})"]
    return "\n".join(lines) + "\n"


def setup_logging(log_path: str | os.PathLike | None, header: str | None = None) -> None:
    """Log to stderr and, when given, append to ``log_path`` (its folder is created) after writing ``header``.

    A log that cannot be opened (a full disk, a read-only folder) stops the command in one line before it starts;
    one that fills up during the run says so once and the run goes on, logging to stderr only.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        try:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            if header:
                with open(log_path, "a") as f:
                    f.write(header)
            handlers.append(_LogFile(log_path))
        except OSError as e:
            sys.stderr.write(f"ERROR primkd: {log_path}: cannot write the log ({e.strerror or e}); free space on its "
                             f"disk or pass another --log\n")
            raise SystemExit(2) from e
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)


class _LogFile(logging.FileHandler):
    """The log file: the first failed write is reported in one line and the file is given up (logging's default
    prints a traceback for every line)."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        sys.stderr.write(f"WARNING primkd: {self.baseFilename}: cannot write the log any more "
                         f"({getattr(error, 'strerror', None) or error}); the rest of this run is logged to stderr "
                         f"only\n")
        logging.getLogger().removeHandler(self)
        with contextlib.suppress(OSError):
            self.close()
