"""Resumable training-state checkpoints, written atomically (model files: :mod:`primkd.models.io`).

A **training-state checkpoint** (``<dir>/step-<iteration>.pt``) holds everything a run needs to continue exactly
where it stopped: the network, the loss module (aligners), the optimiser, the scheduler, every random number
generator, the loop's progress and a *fingerprint* of everything the run's numbers depend on
(:func:`run_fingerprint`: the settings, the contents of its input files and of its code). A run only resumes from a
checkpoint whose fingerprint equals its own; the checkpoints of another fingerprint are moved aside
(:func:`move_aside`), never deleted.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from primkd.config import RESULT_FREE_KEYS, TRAINING_KEYS
from primkd.io import STATE_PREFIX, DataError, files_digest, list_checkpoints, sha256_file
from primkd.models.io import load_state_dict_checked, read_torch_file, save_torch_file
from primkd.pretrained import pretrained_digest

log = logging.getLogger(__name__)

STATE_FORMAT = "primkd-train-state-v1"


# --- Training-state checkpoints -------------------------------------------------------------------------------


def rng_state() -> dict:
    """States of every random generator a training step may draw from: torch (CPU and CUDA), NumPy, Python."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the legacy global generator)
    state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore generators saved by :func:`rng_state` (CUDA states only where CUDA is in use)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def remove_partial_checkpoints(directory: str | os.PathLike) -> None:
    """Delete temporary files that a process killed while writing a checkpoint left behind."""
    directory = Path(directory)
    if directory.is_dir():
        for tmp in directory.glob(f".{STATE_PREFIX}*.pt"):
            tmp.unlink(missing_ok=True)


def save_checkpoint(directory: str | os.PathLike, iteration: int, stateful: Mapping[str, Any], progress: dict,
                    fingerprint: dict, complete: bool, keep: int) -> Path:
    """Write ``<directory>/step-<iteration>.pt`` atomically, then delete all but the newest ``keep`` checkpoints.

    Args:
        directory: checkpoint folder of one run.
        iteration: batches processed so far (names the file; zero-padded so names sort by iteration).
        stateful: objects with ``state_dict()`` (network, loss module, optimiser, scheduler, ...), saved by key.
        progress: the loop's bookkeeping (epoch, position in the epoch, curves so far, ...); plain Python values.
        fingerprint: settings the run depends on (see :func:`fingerprint_differences`).
        complete: whether training has finished (the final checkpoint).
        keep: number of checkpoints to keep (≥ 1).
    """
    directory = Path(directory)
    states = {k: getattr(v, "module", v).state_dict() for k, v in stateful.items()}
    blob = {"format": STATE_FORMAT, "iteration": iteration, "complete": complete, "fingerprint": fingerprint,
            "progress": progress, "rng": rng_state(), "states": states}
    path = directory / f"{STATE_PREFIX}{iteration:09d}.pt"
    save_torch_file(path, blob)
    for old in list_checkpoints(directory)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training-state checkpoint (on the CPU); a missing, truncated or foreign file raises DataError."""
    return read_torch_file(Path(path), STATE_FORMAT, "training checkpoint", "start the run again without it")


def latest_checkpoint(directory: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest readable checkpoint in ``directory`` and its contents, or None when there is none.

    An unreadable checkpoint (a disk error, a file copied half-way) is skipped with a warning, so the run falls back
    to the one before it.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, read_checkpoint(path)
        except DataError as e:
            log.warning("skipping an unreadable checkpoint: %s", e)
    return None


def fingerprint_differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested fingerprints, as ``"key: saved → current"`` (digests
    shortened to 12 characters, a whole section that one side lacks by its number of entries)."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b, name = saved.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += fingerprint_differences(a, b, f"{name}.")
        elif _plain(a) != _plain(b):
            out.append(f"{name}: {_short(a)} → {_short(b)}")
    return out


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"{value[:12]}…"
    if isinstance(value, Mapping):
        return f"{{{len(value)} entries}}"
    return repr(value)


def _plain(value: Any) -> Any:
    """Tuples as lists, so that a value compares equal after a round trip through a file."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def move_aside(directory: str | os.PathLike, files: list[Path], reason: str) -> Path:
    """Move ``files`` (a run's checkpoints and best model) out of the run's checkpoint folder into a new folder
    beside it, ``<directory>.stale-<UTC time>``, with ``REASON.txt``; returns that folder.

    A run whose checkpoints cannot be resumed (other settings, data or code) trains from scratch; its old progress
    may be what a researcher wants back (a mistaken ``dvc exp run -S``), so it is kept, not deleted.
    """
    directory = Path(directory)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = directory.with_name(f"{directory.name}.stale-{stamp}")
    for n in range(2, 1000):
        if not aside.exists():
            break
        aside = directory.with_name(f"{directory.name}.stale-{stamp}-{n}")
    aside.mkdir(parents=True)
    for path in files:
        if path.exists():
            os.replace(path, aside / path.name)
    (aside / "REASON.txt").write_text(f"Moved aside from {directory} at {stamp}: {reason}\n"
                                      f"Delete this folder once its checkpoints are not needed.\n")
    return aside


def restore_checkpoint(blob: dict, stateful: Mapping[str, Any], path: str | os.PathLike) -> dict:
    """Load a checkpoint's states into ``stateful`` (same keys as when saved), restore the RNGs; returns progress.

    Raises:
        DataError: the checkpoint lacks an entry of ``stateful`` or its weights do not fit the network.
    """
    path, fix = Path(path), "delete the checkpoint folder to train this run from scratch"
    for key, obj in stateful.items():
        if key not in blob["states"]:
            raise DataError(f"{path}: checkpoint has no {key!r} state (it holds {sorted(blob['states'])}); {fix}")
        obj = getattr(obj, "module", obj)
        if isinstance(obj, nn.Module):
            load_state_dict_checked(obj, blob["states"][key], f"{path}: weights",
                                    f"The architecture is {blob['fingerprint'].get('arch')}; {fix}.")
        else:
            obj.load_state_dict(blob["states"][key])
    set_rng_state(blob["rng"])
    return blob["progress"]


# --- Fingerprints -----------------------------------------------------------------------------------------------


def dataset_digest(dataset: Any) -> str:
    """Digest of the files an :class:`~primkd.data.dataset.RGBDDataset` reads: meta.json, the split list and each
    sample's RGB, label and (when used) HHA image."""
    layout = dataset.layout
    lists = [layout.split_path(s) for s in ("train", "test") if layout.split_path(s).is_file()]
    samples = [p for name in dataset.names for p in dataset.paths(name)]
    return files_digest([layout.meta_path, *lists, *samples])


def result_settings(cfg: dict, section: str) -> dict:
    """A section of the resolved parameters without the keys that do not change results (RESULT_FREE_KEYS)."""
    return {k: v for k, v in cfg[section].items() if f"{section}.{k}" not in RESULT_FREE_KEYS}


def training_settings(cfg: dict) -> dict:
    """The parameters training reads (:data:`~primkd.config.TRAINING_KEYS`), by section: a whole section without
    :data:`~primkd.config.RESULT_FREE_KEYS`, or the single keys named of it."""
    settings: dict = {}
    for key in TRAINING_KEYS:
        section, _, name = key.partition(".")
        if name:
            settings.setdefault(section, {})[name] = cfg[section][name]
        else:
            settings[section] = result_settings(cfg, section)
    return settings


def run_fingerprint(cfg: dict, run: Any, arch: dict, train_set: Any, test_set: Any, pretrained: str | None,
                    code: Mapping[str, str] | None = None) -> dict:
    """Everything a run's numbers depend on; a checkpoint resumes only a run with an equal fingerprint.

    Covers the run (name, kind, inputs, distillation settings, the teacher file's SHA-256), the architecture, the
    settings training reads (:func:`training_settings`), the ImageNet weights' contents, the contents of every
    file the training and test sets read (prepared images, labels, HHA, meta.json, split lists), and ``code``: the
    SHA-256 of each file of the training stage's code closure by path (:attr:`~primkd.engine.train.Run.code`), so
    that a difference names the edited file.
    """
    teacher = sha256_file(run.teacher_path) if run.teacher_path is not None else None
    kd = run.kd.as_dict() if run.kd is not None else None
    return {"run": {"name": run.name, "kind": run.kind, "inputs": list(run.inputs), "kd": kd,
                    "teacher_sha256": teacher},
            "arch": arch,
            **training_settings(cfg),
            "pretrained_sha256": pretrained_digest(pretrained),
            "data": {"classes": list(train_set.classes), "train_sha256": dataset_digest(train_set),
                     "test_sha256": dataset_digest(test_set)},
            "code": dict(code or {})}
