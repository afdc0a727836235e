"""Stages whose outputs are committed with the repository (:attr:`~primkd.stages.table.Stage.shipped`: the pretrain
stage), and the content check that tells Snakemake whether they are up to date.

DVC compares the content digests of the stage's committed dvc.lock. Snakemake decides by file times, and a fresh
clone sets those in whatever order git writes the files, so the generated rule wraps its inputs in ``ancient()``
and lets :func:`shipped_state` decide: the stage's summary (its ``metric`` output) records the digests of its code
closure, its parameter values and its other outputs' digests (:func:`record`, written by the stage's command); while
they all equal the current ones the outputs are up to date, and otherwise workflow/rules/common.smk gives the rule
an input file written when the workflow is read (newer than the outputs, with new contents), so that the job runs,
with everything after it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from primkd.stages.closure import code_closure
from primkd.stages.table import Stage, effective_values


def record(s: Stage, effective: dict, root: str | os.PathLike = ".") -> dict:
    """What the outputs of ``s`` are made from: ``code`` (SHA-256 of each file of its code closure, the files of
    ``root``) and ``params`` (its parameter values in ``effective``, the effective parameters or just the sections
    the stage reads)."""
    from primkd.io import file_digests  # here: primkd.io loads OpenCV, which the stage table does without

    return {"code": file_digests(code_closure(s.entry), root), "params": effective_values(s, effective, None)}


def output_digests(s: Stage, root: str | os.PathLike = ".") -> dict[str, str]:
    """SHA-256 of each output of ``s`` but its summary, by its path in the stage's folder (``encoder.pt``), as the
    stage's command records them in the summary."""
    from primkd.io import sha256_file

    return {Path(o.path).relative_to(s.shipped).as_posix(): sha256_file(Path(root) / o.path)
            for o in s.outs if o.kind != "metric"}


def summary_path(s: Stage) -> str:
    """The output of ``s`` that holds its :func:`record` and :func:`output_digests` (its one metric)."""
    (path,) = [o.path for o in s.outs if o.kind == "metric"]
    return path


@dataclass(frozen=True)
class ShippedState:
    """Whether the committed outputs of a shipped stage are what its current code and parameters make.

    Attributes:
        current: they are.
        key: a digest of the current code and parameters (the same before and after the stage reruns): what the
            stages that read its output depend on in Snakemake.
        why: what differs, for the log (empty when current).
    """

    current: bool
    key: str
    why: str


def shipped_state(s: Stage, effective: dict, root: str | os.PathLike = ".") -> ShippedState:
    """Compare the record in the summary of shipped stage ``s`` (under ``root``) with the current code, parameters
    and outputs."""
    now = record(s, effective, root)
    key = hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()
    try:
        saved = json.loads((Path(root) / summary_path(s)).read_text())
        outputs = output_digests(s, root)
    except (OSError, ValueError) as e:
        return ShippedState(False, key, f"no readable outputs ({e})")
    changed = [path for path, digest in now["code"].items() if saved.get("code", {}).get(path) != digest]
    changed += [path for path in saved.get("code", {}) if path not in now["code"]]
    params = saved.get("params", {})
    changed += [k for k in {*now["params"], *params} if params.get(k, ...) != now["params"].get(k, ...)]
    changed += [path for path, digest in outputs.items() if saved.get("outputs", {}).get(path) != digest]
    return ShippedState(not changed, key, ", ".join(changed))
