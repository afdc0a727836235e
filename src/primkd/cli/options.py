"""The flags every ``primkd`` sub-command shares, declared once, and the parameters they name.

Every sub-command is registered with :func:`add_command`: ``--log`` and ``--no-progress`` always, ``--params`` and
``--preset`` for the commands that read params.yaml.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from primkd.resources import ThreadPlan


def add_command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], None],
                help_text: str, params: bool = True) -> argparse.ArgumentParser:
    """A sub-command running ``func(args)``, with the shared flags (``params``: also --params and --preset)."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    if params:
        p.add_argument("--params", default="params.yaml", help="Parameter file (validated against the schema).")
        p.add_argument("--preset", default=None, help="Preset to apply (default: the file's `preset`).")
    p.add_argument("--log", default=None, help="Also write the log to this file.")
    p.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    p.set_defaults(func=func, stage=name)
    return p


def load_config(args: argparse.Namespace) -> dict:
    """The validated parameters named by a command's ``--params`` and ``--preset``
    (:func:`primkd.config.load_params`), as they are."""
    from primkd.config import load_params

    return load_params(args.params, args.preset)


def use_threads(args: argparse.Namespace, cfg: dict) -> ThreadPlan:
    """The thread plan of the command's stage (``resources.<stage>.cpus_per_task``: :mod:`primkd.resources`),
    applied to this process; the command hands its worker count on (:meth:`~primkd.resources.ThreadPlan.fit`)."""
    from primkd.resources import apply_threads, thread_plan

    plan = thread_plan(cfg, args.stage)
    apply_threads(plan)
    return plan


def stage_config(args: argparse.Namespace) -> tuple[dict, ThreadPlan]:
    """The command's parameters (:func:`load_config`) with the worker count of its stage's thread plan, and the plan,
    applied to this process (:func:`use_threads`)."""
    cfg = load_config(args)
    plan = use_threads(args, cfg)
    return plan.fit(cfg), plan
