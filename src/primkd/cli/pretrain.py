"""``primkd pretrain``: the pretrain stage, the demo's ImageNet-1K (:mod:`primkd.engine.pretrain`)."""

from __future__ import annotations

import argparse
import importlib

from primkd.cli.options import add_command, load_config

STAGE = "pretrain"  # its entry in the stage table


def cmd_pretrain(args: argparse.Namespace) -> None:
    """Train the encoder of params.yaml ``pretrain`` and write it, its curve and its summary into ``--out-dir``."""
    from primkd.config import PretrainConfig
    from primkd.engine.pretrain import pretrain

    cfg = load_config(args)
    # The stage table, imported by name (as cli/pipeline.py:training_code does) so that it is no code dependency of
    # the stage: it only names which files the summary records the digests of.
    stages = importlib.import_module("primkd.stages")
    record = stages.record(stages.stage(STAGE), {"pretrain": cfg["pretrain"]}, stages.REPO_ROOT)
    pretrain(PretrainConfig.of(cfg), args.out_dir, record, progress=not args.no_progress)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``pretrain`` sub-command to ``primkd``'s sub-parsers."""
    text = ("Pre-train the demo's MiT encoder on patch classification of a synthetic corpus of its own (params.yaml "
            "pretrain): the demo's ImageNet-1K weights.")
    p = add_command(sub, "pretrain", cmd_pretrain, text)
    p.add_argument("--out-dir", required=True, help="Folder of encoder.pt, pretrain.json and curve.csv (pretrain/).")
    return p
