"""Load ``params.yaml``: validate it against the shared JSON schema, then apply the active preset.

The Snakefile validates the same file against the same schema and calls :func:`resolve` for the effective values,
so both orchestrators and every stage command see identical numbers.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
import re
import subprocess
from dataclasses import asdict, dataclass, fields
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
# The `eval` keys that training reads besides the `model` and `train` sections: its evaluation during training scores
# the test split as the evaluate stage does (its sliding windows) and picks model_best.pt and eval_curve.csv from
# it. The training stages depend on them and a checkpoint's fingerprint holds them (engine.checkpoint). Of the other
# eval keys training reads only eval.batch_size, which changes no score (RESULT_FREE_KEYS).
TRAINING_EVAL_KEYS = ("eval.windows",)
# What training reads of the parameters (sections less RESULT_FREE_KEYS, and single keys): the settings of a
# checkpoint's fingerprint (engine.checkpoint.training_settings) and the training stages' parameter dependencies
# (stages.table.TRAIN_PARAMS), one list so that the two cannot disagree.
TRAINING_KEYS = ("model", "train", *TRAINING_EVAL_KEYS)
# `kd.teachers` value of a modality whose teacher the pipeline trains (any other value names a teacher file).
TRAINED_TEACHER = "train"
# The entries of `eval.released` (the published checkpoints the evaluate_released stage scores), in params.yaml's
# order; each writes results/<preset>/eval/released_<entry>.json.
RELEASED_ENTRIES = ("teacher_rgb", "cmx")


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
        A dict with ``preset``, the sections (data, hha, model, train, kd, eval), ``experiments``, ``seeds`` and
        ``pretrain`` (as params.yaml has it, whatever the preset).
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
    cfg["pretrain"] = copy.deepcopy(raw["pretrain"])  # no preset overrides it: its output is one committed file
    return cfg


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 and DVC do, and refusing aliases.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent: ``6e-05`` (as DVC writes
    ``-S ...lr=6e-5`` into params.yaml), ``1e5`` or ``1.0e5`` would come back as strings and fail the schema.
    An alias (``*name``) repeats a node without copying it, so a few lines of nested aliases make a document that
    validation walks for hours (an "alias bomb"); a parameter file has no need of them.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(event.anchor, event.start_mark)
        return super().compose_node(parent, index)


class _AliasRefused(yaml.YAMLError):
    def __init__(self, anchor: str, mark):
        super().__init__(anchor)
        self.anchor, self.mark = anchor, mark


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(path: str | os.PathLike) -> Any:
    """A parameter file's contents (:class:`ParamsLoader`); raises :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found; run from the repository root or pass --params")
    try:
        return yaml.load(path.read_text(), Loader=ParamsLoader)  # a SafeLoader: no Python objects
    except _AliasRefused as e:
        raise ConfigError(f"{path}, line {e.mark.line + 1}: the alias *{e.anchor} repeats another node; a parameter "
                          f"file allows no YAML aliases: write the values out") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e


def load_params(path: str | os.PathLike = "params.yaml", preset: str | None = None) -> dict:
    """Read, validate and resolve a parameter file (see :func:`resolve`)."""
    raw = read_yaml(path)
    validate(raw, source=str(path), schema_file=schema_path(path))
    return resolve(raw, preset)


def shadowed_edits(path: str | os.PathLike, preset: str | None = None) -> list[str]:
    """Warnings for the top-level keys of ``path`` changed since its last git commit (as ``dvc exp run -S
    train.epochs=3`` or an edit changes them) that the active preset also sets: its value wins, so the change does
    nothing. Empty outside a git repository or for a file git does not know."""
    path = Path(path)
    try:
        shown = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent.resolve(), capture_output=True,
                               text=True, timeout=30)
        committed = yaml.load(shown.stdout, Loader=ParamsLoader) if shown.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, yaml.YAMLError):
        committed = None
    if not isinstance(committed, dict):
        return []
    raw = read_yaml(path)
    name = preset or raw["preset"]
    preset_values = raw["presets"].get(name, {})
    out = []
    for section in (*SECTIONS, "resources"):
        for key in _leaves(preset_values.get(section, {})):
            now, before = _at(raw.get(section), key), _at(committed.get(section), key)
            if now != before:
                dotted = ".".join((section, *key))
                out.append(f"{path}: {dotted} was changed to {now!r}, but preset {name} sets it to "
                           f"{_at(preset_values[section], key)!r}, which wins; change presets.{name}.{dotted} instead "
                           f"(e.g. dvc exp run -S presets.{name}.{dotted}=...)")
    return out


def _leaves(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    return [leaf for k, v in tree.items()
            for leaf in (_leaves(v, (*prefix, k)) if isinstance(v, dict) and v else [(*prefix, k)])]


def _at(tree: Any, key: tuple[str, ...]) -> Any:
    for part in key:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def numbers_as_read(config: dict, path: str | os.PathLike = "params.yaml") -> None:
    """Give Snakemake's ``config`` (read from ``path`` by PyYAML's YAML 1.1 rules) the numbers :func:`read_yaml`
    reads: each string value that this module reads as a number from the same place of ``path`` becomes that
    number, in place; values given with ``--config`` are left alone."""
    _renumber(config, read_yaml(path))


def _renumber(theirs: Any, ours: Any) -> None:
    keys = theirs.keys() if isinstance(theirs, dict) else range(len(theirs))
    for key in keys:
        mine = (ours.get(key) if isinstance(ours, dict) else
                ours[key] if isinstance(ours, list) and key < len(ours) else None)
        value = theirs[key]
        if isinstance(value, dict | list):
            _renumber(value, mine)
        elif isinstance(value, str) and isinstance(mine, float):
            theirs[key] = mine


def section_config(cls: type, values: dict, section: str) -> Any:
    """Build the frozen dataclass ``cls`` from the params section ``section`` (its validated, resolved values); lists
    become tuples, so the settings cannot change under a running stage.

    Raises:
        ConfigError: a key of ``cls`` is missing from the section or the section has a key ``cls`` does not know
            (one line naming the keys; the schema catches both in params.yaml, this catches a dict built in code).
    """
    names = [f.name for f in fields(cls)]
    missing, unknown = [n for n in names if n not in values], sorted(set(values) - set(names))
    problems = [f"{what} {', '.join(f'{section}.{n}' for n in keys)}"
                for what, keys in (("missing", missing), ("unknown", unknown)) if keys]
    if problems:
        raise ConfigError(f"params.yaml: {'; '.join(problems)}; copy missing keys from the repository's params.yaml, "
                          f"remove or respell unknown ones (workflow/schemas/params.schema.yaml lists every key)")
    return cls(**{n: tuple(values[n]) if isinstance(values[n], list) else values[n] for n in names})


@dataclass(frozen=True)
class ModelConfig:
    """The network's architecture and initialisation: params.yaml ``model`` (docs/design.md §2)."""

    backbone: str  # MiT variant: mit_tiny | mit_nano | mit_b0 .. mit_b5
    decoder_embed_dim: int  # MLP decoder width E (channels)
    drop_path_rate: float  # stochastic-depth probability at the last encoder block, rising linearly from 0
    drop_path_stage2: str  # linear (SegFormer's rule) | constant (official dual encoder: one rate per stage-2 branch)
    decoder_dropout: float  # Dropout2d probability before the decoder's classifier
    decoder_bn_eps: float  # the student decoder's BatchNorm eps
    teacher_decoder_bn_eps: float  # the teacher decoder's BatchNorm eps
    decoder_bias_init: str  # zero | default (PyTorch's uniform init, as the official builder leaves them)
    pretrained: str  # encoder initialisation: none | imagenet | a weights file or folder
    pretrained_dir: str  # folder where `imagenet` looks for mit_bX.pth or a Hugging Face mit-bX folder

    @classmethod
    def of(cls, cfg: dict) -> ModelConfig:
        """From resolved parameters (:func:`load_params`)."""
        return section_config(cls, cfg["model"], "model")


@dataclass(frozen=True)
class TrainConfig:
    """One training run's schedule, data pipeline, reliability and speed switches: params.yaml ``train``."""

    epochs: int  # passes over the training split
    batch_size: int  # images per optimiser step, global (all ranks and accumulation steps together)
    lr: float  # AdamW peak learning rate
    weight_decay: float  # AdamW decay of conv/linear weights (biases and norm parameters get none)
    betas: tuple[float, float]  # AdamW betas
    warmup_epochs: float  # epochs of linear warm-up to lr, then poly decay per iteration
    warmup_ratio: float  # learning-rate factor at the first warm-up iteration
    first_step_full_lr: bool  # official loop: step 1 at the full rate, every later step one iteration late
    poly_power: float  # exponent of the poly decay
    crop: tuple[int, int]  # training crop (height, width) in pixels; also the test windows' size
    scales: tuple[float, ...]  # random rescale factors of the augmentation
    flip: float  # probability of a horizontal flip
    fill_last_batch: bool  # official epochs: batch x (N // batch + 1) images, the last batch filled with repeats
    seed: int  # seeds initialisation, data order and augmentation
    num_workers: int  # DataLoader worker processes (0 = load in the main process)
    eval_every: int  # epochs between test-split evaluations (0 = only after the last)
    eval_from: int  # first epoch of those evaluations
    device: str  # auto | cpu | cuda
    bgr: bool  # feed images in BGR order (the official code's cv2 order)
    checkpoint_every: int  # iterations between training-state checkpoints (0 = only on SIGTERM and at the end)
    keep_checkpoints: int  # newest training-state checkpoints kept per run
    max_bad_batches: int  # non-finite batches skipped (with a warning) before the run stops
    deterministic: bool  # deterministic kernels only (bit-identical CPU runs)
    micro_batch: int  # images per GPU and forward pass (0 = batch_size / GPUs, no accumulation)
    amp: str  # mixed precision on CUDA: auto | bf16 | fp16 | none (the CPU always runs fp32)
    channels_last: bool  # NHWC tensors on CUDA
    compile: bool  # torch.compile the network (CUDA only)
    cudnn_benchmark: bool  # cuDNN autotuning on CUDA (off when deterministic)
    fusion_bn: str  # the student's FFM BatchNorms in training: batch | per_image (each image its own statistics)
    ce_reduction: str  # cross-entropy weighting: per_pixel (batch mean) | per_image (mean of the images' means)

    @classmethod
    def of(cls, cfg: dict) -> TrainConfig:
        """From resolved parameters (:func:`load_params`), after any change the command line made to them."""
        return section_config(cls, cfg["train"], "train")


@dataclass(frozen=True)
class EvalConfig:
    """How a trained model is scored: params.yaml ``eval``."""

    scales: tuple[float, ...]  # image scales of the multi-scale mode (the single mode is always scale 1)
    flip: bool  # multi-scale mode: add the horizontally flipped pass
    windows: str  # sliding-window arithmetic above the crop size: official | corrected
    checkpoint: str  # which epoch the tables report: last | best (test-split selection)
    batch_size: int  # test images per forward pass
    released: dict[str, str]  # published checkpoint files scored by the evaluate_released stage, by name

    @classmethod
    def of(cls, cfg: dict) -> EvalConfig:
        """From resolved parameters (:func:`load_params`)."""
        return section_config(cls, cfg["eval"], "eval")


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
    teachers: dict[str, str]  # where each modality's teacher comes from: train | a teacher file (kd.teachers)
    teacher_modality: str  # the experiment's teacher: rgb | depth

    @property
    def teacher_file(self) -> str | None:
        """The file the experiment distils from instead of the trained teacher of its modality (None: trained)."""
        source = self.teachers[self.teacher_modality]
        return None if source == TRAINED_TEACHER else source

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for run metadata and checkpoint fingerprints."""
        return asdict(self)


@dataclass(frozen=True)
class PretrainConfig:
    """The pretrain stage (the demo's ImageNet-1K): params.yaml ``pretrain``, which no preset overrides."""

    backbone: str  # the MiT variant trained
    seed: int  # generator seed of the corpus' scenes
    num_images: int  # training images of the corpus
    num_heldout: int  # held-out images, scored after every epoch
    height: int  # image size in pixels
    width: int
    patch: int  # side of the square patches (a grid over each image)
    epochs: int  # passes over the training patches
    batch_size: int  # patches per optimiser step
    lr: float  # AdamW peak learning rate
    weight_decay: float  # AdamW decay of conv/linear weights
    betas: tuple[float, float]  # AdamW betas
    warmup_epochs: float  # epochs of linear warm-up, then poly decay per iteration
    warmup_ratio: float  # learning-rate factor at the first warm-up iteration
    poly_power: float  # exponent of the poly decay
    drop_path_rate: float  # stochastic depth at the last encoder block
    flip: float  # probability of a horizontal flip of a training patch
    threads: int  # torch threads (CPU only: the output must be reproducible bit for bit)

    @classmethod
    def of(cls, cfg: dict) -> PretrainConfig:
        """From resolved parameters (:func:`load_params`); the patch must tile the image."""
        p = section_config(cls, cfg["pretrain"], "pretrain")
        if p.height % p.patch or p.width % p.patch:
            raise ConfigError(f"params.yaml: pretrain.patch {p.patch} does not divide the image size "
                              f"{p.height}x{p.width}; choose a patch side that divides pretrain.height and .width")
        return p


def experiment_kd(cfg: dict, name: str) -> KDConfig:
    """The distillation settings of student experiment ``name``: ``kd`` with the experiment's overrides, plus
    ``teacher_modality`` (the experiment's ``teacher``)."""
    if name not in cfg["experiments"]:
        known = ", ".join(sorted(cfg["experiments"])) or "none"
        raise ConfigError(f"experiment {name!r} is not listed under `experiments` in params.yaml (known: {known})")
    experiment = cfg["experiments"][name]
    values = {**deep_merge(cfg["kd"], experiment.get("kd", {})), "teacher_modality": experiment["teacher"]}
    return section_config(KDConfig, values, "kd")


def effective_params(cfg: dict) -> dict:
    """The values every stage reads, with the preset's and each experiment's overrides applied: what the
    ``resolve_params`` stage writes to ``results/<preset>/effective_params.yaml`` for DVC to track key by key.

    Every preset yields the same keys, so the stages of ``dvc.yaml`` can list exact leaf keys (see
    :mod:`primkd.stages`). ``inputs`` holds the digests of the files outside the pipeline that stages read
    (:func:`input_digests`)."""
    out = {section: copy.deepcopy(cfg[section]) for section in SECTIONS}
    out["seeds"] = list(cfg["seeds"])
    out["pretrain"] = copy.deepcopy(cfg["pretrain"])
    out["experiments"] = {}
    for name in cfg["experiments"]:
        settings = experiment_kd(cfg, name)
        kd = settings.as_dict()
        teacher = kd.pop("teacher_modality")
        source = kd.pop("teachers")[teacher]  # the other modality's teacher is not this student's
        out["experiments"][name] = {"teacher": teacher, "kd": kd, "teacher_source": source,
                                    "teacher_file": file_input(settings.teacher_file)}
    out["inputs"] = input_digests(cfg)
    return out


def input_digests(cfg: dict) -> dict[str, str | None]:
    """Contents of the input files whose location a parameter gives, so that neither tool can declare them as file
    dependencies (dvc.yaml is the same for every preset): stages depend on these values instead.

    - ``released``: per entry of ``eval.released``, :func:`file_input` (the evaluate_released stage's inputs).
    - ``teachers``: per modality, :func:`teacher_input` of ``kd.teachers`` (the file the teacher stage imports
      instead of training); each experiment's teacher source and file digest are beside it (``experiments.<name>
      .teacher_source`` and ``.teacher_file`` of the effective parameters).
    - ``pretrained``: :func:`primkd.pretrained.pretrained_input` of ``model.pretrained`` (the ImageNet weights the
      training stages load; None when training from scratch, ``"missing"`` while the weights are not there).
    - ``folder``: with ``data.source: folder``, one SHA-256 over :func:`primkd.io.path_digest` (every file's
      relative name and contents) of ``data.folder.path`` and of ``data.folder.intrinsics_file`` when one is set,
      which prepare reads; ``"missing"`` for a path that is not there (prepare then stops with its own message);
      None for the other sources.

    Relative paths are taken from the current directory, as the stage commands do (both tools run them from the
    repository root). Every file is read, so a replaced file with the old size and time still counts as changed.
    """
    from primkd.io import path_digest
    from primkd.pretrained import MISSING, pretrained_input

    model, data = cfg["model"], cfg["data"]
    folder = None
    if data["source"] == "folder":
        paths = [Path(p) for p in (data["folder"]["path"], data["folder"]["intrinsics_file"]) if p]
        if paths and all(p.exists() for p in paths):
            folder = hashlib.sha256("\n".join(path_digest(p) for p in paths).encode()).hexdigest()
        else:
            folder = MISSING
    return {"pretrained": pretrained_input(model["pretrained"], model["backbone"], model["pretrained_dir"]),
            "folder": folder,
            "teachers": {m: file_input(None if source == TRAINED_TEACHER else source)
                         for m, source in cfg["kd"]["teachers"].items()},
            "released": {name: file_input(path) for name, path in cfg["eval"]["released"].items()}}


def file_input(path: str | None) -> str | None:
    """The SHA-256 of an input file (a teacher file of ``kd.teachers``, a checkpoint of ``eval.released``): None when
    there is none (a trained teacher), ``"missing"`` while the file is not there (placing it changes the value)."""
    from primkd.io import sha256_file
    from primkd.pretrained import MISSING

    if path is None:
        return None
    return sha256_file(path) if Path(path).is_file() else MISSING
