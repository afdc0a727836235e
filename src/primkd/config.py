"""Load ``params.yaml``: validate it against the shared JSON schema, then apply the active preset.

The Snakefile validates the same file against the same schema and calls :func:`resolve` for the effective values,
so both orchestrators and every stage command see identical numbers.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_RELPATH = Path("workflow/schemas/params.schema.yaml")
SECTIONS = ("data", "hha", "model", "train", "kd", "eval")
# Leaf keys that change how a stage runs (parallelism, checkpoint cadence, where raw downloads are kept) but not
# what it computes: no pipeline stage depends on them and a training checkpoint's fingerprint leaves them out, so a
# run may resume with other values.
RESULT_FREE_KEYS = frozenset({"data.workers", "data.raw_dir", "hha.workers", "train.num_workers",
                              "train.checkpoint_every", "train.keep_checkpoints", "train.max_bad_batches",
                              "eval.batch_size"})


class ConfigError(ValueError):
    """An invalid ``params.yaml``; the message names the key and the allowed values."""


def schema_path(params_path: str | os.PathLike | None = None) -> Path:
    """The schema beside ``params_path`` (a workflow copy) if there is one, else the repository's."""
    if params_path is not None:
        candidate = Path(params_path).resolve().parent / SCHEMA_RELPATH
        if candidate.is_file():
            return candidate
    return REPO_ROOT / SCHEMA_RELPATH


def validate(raw: dict, source: str = "params.yaml", schema_file: Path | None = None) -> None:
    """Check ``raw`` against the schema; raise :class:`ConfigError` listing every violation with its key."""
    import jsonschema  # here, not at the top: `primkd --help` should not pay for it

    schema = yaml.safe_load((schema_file or schema_path()).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        lines = list(dict.fromkeys(f"  {_key(e)}: {_leaf_message(e)}" for e in errors))
        raise ConfigError(f"{source} is invalid; fix these keys:\n" + "\n".join(lines))


@functools.cache
def backbones() -> tuple[str, ...]:
    """The MiT variants params.yaml accepts (the schema's ``model.backbone``), read without importing torch."""
    schema = yaml.safe_load(schema_path().read_text())
    return tuple(schema["$defs"]["model"]["properties"]["backbone"]["enum"])


def _key(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _leaf_message(error) -> str:
    if isinstance(error.instance, float) and not math.isfinite(error.instance):
        return f"must be a finite number, got {error.instance}"
    # allOf/$ref wrappers report "... is not valid under ..."; the innermost cause says what is wrong.
    while error.context:
        error = min(error.context, key=lambda e: len(e.path))
    return error.message


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in recursively (override wins; lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(raw: dict, preset: str | None = None) -> dict:
    """Effective parameters: the top-level sections with the preset's overrides applied.

    Args:
        raw: the validated contents of ``params.yaml``.
        preset: preset name; defaults to ``raw["preset"]``.

    Returns:
        A dict with ``preset``, the sections (data, hha, model, train, kd, eval) and ``experiments``.
    """
    name = preset or raw["preset"]
    if name not in raw["presets"]:
        known = ", ".join(sorted(raw["presets"]))
        raise ConfigError(f"preset {name!r} is not defined under `presets` in params.yaml; choose one of: {known}")
    cfg = {section: deep_merge(raw[section], raw["presets"][name].get(section, {})) for section in SECTIONS}
    cfg["resources"] = deep_merge(raw["resources"], raw["presets"][name].get("resources", {}))
    cfg["preset"] = name
    cfg["experiments"] = copy.deepcopy(raw["experiments"])
    cfg["seeds"] = list(raw["seeds"])
    return cfg


def load_params(path: str | os.PathLike = "params.yaml", preset: str | None = None) -> dict:
    """Read, validate and resolve a parameter file (see :func:`resolve`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    validate(raw, source=str(path), schema_file=schema_path(path))
    return resolve(raw, preset)


@dataclass(frozen=True)
class KDConfig:
    """One distilled student's settings: params.yaml ``kd`` with its experiment's overrides (docs/design.md §3).

    Built once, by :func:`experiment_kd`, from validated parameters; the defaults live in params.yaml only.
    """

    alpha: float  # weight of the prediction-level KL term (0: feature term only)
    beta: float  # weight of the feature-reconstruction term (0: prediction term only)
    rule: str  # which encoder stage is distilled: max | min | average | stage1 .. stage4
    aligner: str  # single (one Conv1x1) | multi (Conv1x1, random spatial mask, Conv3x3-ReLU-Conv3x3)
    mask_lambda: float  # multi aligner: a position is kept when its uniform draw <= lambda (1: no mask)
    per_sample: bool  # choose the stage per sample (else once per global mini-batch, synchronised over ranks)
    kl_direction: str  # teacher_student = KL(p_t || p_s) | student_teacher
    temperature: float  # softmax temperature of the KL term
    teacher_modality: str  # the experiment's teacher: rgb | depth

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for run metadata and checkpoint fingerprints."""
        return asdict(self)


def experiment_kd(cfg: dict, name: str) -> KDConfig:
    """The distillation settings of student experiment ``name``: ``kd`` with the experiment's overrides, plus
    ``teacher_modality`` (the experiment's ``teacher``)."""
    if name not in cfg["experiments"]:
        known = ", ".join(sorted(cfg["experiments"])) or "none"
        raise ConfigError(f"experiment {name!r} is not listed under `experiments` in params.yaml (known: {known})")
    experiment = cfg["experiments"][name]
    return KDConfig(**deep_merge(cfg["kd"], experiment.get("kd", {})), teacher_modality=experiment["teacher"])


def effective_params(cfg: dict) -> dict:
    """The values every stage reads, with the preset's and each experiment's overrides applied: what the
    ``resolve_params`` stage writes to ``results/<preset>/effective_params.yaml`` for DVC to track key by key.

    Every preset yields the same keys, so the stages of ``dvc.yaml`` can list exact leaf keys (see
    :mod:`primkd.stages`)."""
    out = {section: copy.deepcopy(cfg[section]) for section in SECTIONS}
    out["seeds"] = list(cfg["seeds"])
    out["experiments"] = {}
    for name in cfg["experiments"]:
        kd = experiment_kd(cfg, name).as_dict()
        out["experiments"][name] = {"teacher": kd.pop("teacher_modality"), "kd": kd}
    return out
