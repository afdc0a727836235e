"""The flags every ``primkd`` sub-command shares, declared once, and the parameters they name.

Every sub-command is registered with :func:`add_command`: ``--log`` and ``--no-progress`` always, ``--params`` and
``--preset`` for the commands that read params.yaml.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
    """The resolved parameters named by a command's ``--params`` and ``--preset``."""
    from primkd.config import load_params
    from primkd.resources import apply_resources

    cfg = load_params(args.params, args.preset)
    apply_resources(cfg, getattr(args, "stage", None))  # torch threads and workers from resources.<stage>.cpus_per_task
    return cfg
