"""The pipeline's stage graph: one table from which ``dvc.yaml`` is generated and from which the Snakemake rules
(``workflow/rules/*.smk``) take their inputs, parameters and outputs.

Each :class:`Stage` names its command, the function of the CLI it runs (its code dependencies are the import
closure of that function, computed here from the source with :mod:`ast`), the parameter keys it reads, its inputs
and its outputs. Paths and commands are templates of ``{preset}`` and the stage's loop variables: ``{modality}``
(the two teachers), ``{exp}`` (the student experiments), ``{seed}`` (each entry of ``seeds``: every student seed is
a stage of its own, a DVC ``matrix`` entry and a Snakemake job), and ``{teacher}``, the experiment's teacher
(``experiments.<exp>.teacher``), so that a student depends on its own teacher's model only.

DVC's matrix cannot look up a value of the experiment it loops over (``${experiments.${item.exp}.teacher}`` does
not parse), so ``dvc.yaml`` gets one student stage per teacher modality, each over the experiments of params.yaml
with that teacher, written out when the file is generated: ``train_student`` (RGB teacher, the method) and
``train_student_depth`` (depth teacher), see :func:`dvc_name`. The ``resolve_params`` stage, which every run starts
with, fails with one line when that grouping no longer matches params.yaml (:func:`check_dvc_groups`). Snakemake has
one ``train_student`` rule whose input function looks the teacher up.

Parameters: a stage depends on the *effective* values it reads (top level with the active preset's overrides and, for
students, the experiment's ``kd`` overrides applied), which the ``resolve_params`` stage writes to
``results/<preset>/effective_params.yaml`` (:func:`primkd.config.effective_params`). Why not list
``presets.${preset}.train.lr`` in ``dvc.yaml`` directly: DVC fails on a listed key that params.yaml lacks, and which
keys a preset overrides changes from preset to preset and with every ``dvc exp run -S presets.<p>.<key>=...``; the
effective file has every key for every preset, so exact leaf keys can be listed, ``-S preset=smoke`` and
``-S kd.beta=0.1`` keep working, and a key that a preset starts to override is followed automatically. Snakemake
computes the same effective values in the Snakefile and compares them itself (its ``params`` rerun trigger).

Input files whose location is itself a parameter (the ImageNet weights ``model.pretrained`` resolves to, the tree at
``data.folder.path``) cannot be file dependencies of a dvc.yaml shared by every preset; the effective parameters
hold their content digests instead (``inputs``, :func:`primkd.config.input_digests`), on which the training stages
and ``prepare`` depend like on any key. ``resolve_params`` is ``always_changed`` in dvc.yaml so that every
``dvc repro`` reads those files again; Snakemake computes them each time it reads the Snakefile.

This module imports nothing beyond the standard library and PyYAML, so the Snakefile and ``primkd --help`` stay
light. ``python -m primkd.stages --write`` regenerates ``dvc.yaml``; ``--check`` fails when it is out of date.
"""

from __future__ import annotations

import argparse
import ast
import functools
import itertools
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from primkd.config import RESULT_FREE_KEYS, TRAINING_EVAL_KEYS, ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]
EFFECTIVE_PARAMS = "results/{preset}/effective_params.yaml"
MODALITIES = ("rgb", "depth")
DATA, HHA, RAW = "data/{preset}/prepared", "data/{preset}/hha", "data/{preset}/raw"
URL_KEYS = ("nyuv2_labeled", "nyuv2_splits", "nyuv2_class_mapping", "sunrgbd", "sunrgbd_toolbox")
MODELS = "results/{preset}/models"


@dataclass(frozen=True)
class Out:
    """An output: ``kind`` out | metric | plot; ``cache: false`` keeps it out of the DVC cache; ``folder`` marks a
    directory (Snakemake's ``directory()``); ``plot`` holds DVC's x/y for a plot."""

    path: str
    kind: str = "out"
    cache: bool = True
    folder: bool = False
    plot: dict | None = None


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline (see the module docstring for the templates).

    Attributes:
        name: stage name in both tools (DVC adds ``@<item>`` for looped stages).
        entry: the CLI function it runs (``module:function``), whose import closure is its code dependency.
        cmd: command template; ``{log}`` stands for :attr:`log`.
        log: log file template.
        params: effective parameter keys read: leaf keys or sections (expanded to their leaves).
        exclude: leaf keys of those sections the stage does not read (keys that change no result, listed in
            :data:`primkd.config.RESULT_FREE_KEYS`, are left out of every stage).
        deps: input path templates.
        outs: outputs.
        loop: the loop variables, each over its values: ``modality`` (rgb, depth), ``exp`` (the experiments of
            params.yaml), ``seed`` (its ``seeds``); one instance per combination.
        files: extra file dependencies that are not Python code (params.yaml, the schema, package data).
        resources: the params.yaml ``resources`` entry of its Snakemake jobs.
        group_by: for a stage looping over ``exp``: a key of each experiment's entry (``teacher``) whose value is the
            template variable of that name; dvc.yaml holds one stage per value (see :func:`dvc_groups`).
        always_changed: DVC runs it on every ``dvc repro`` (its ``always_changed``): resolve_params, whose output holds
            the digests of input files that no stage can declare (``inputs``, see :func:`smk_values` for Snakemake).
    """

    name: str
    entry: str
    cmd: str
    log: str
    params: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    outs: tuple[Out, ...] = ()
    loop: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    resources: str | None = None
    group_by: str = ""
    always_changed: bool = False
    comment: str = field(default="", compare=False)


def _eval_stage(name: str, model: str, run: str, loop: tuple[str, ...], seeds: bool, extra: tuple[str, ...] = ()
                ) -> Stage:
    """Evaluation of one run (students: the mean over the seed<k>/ models of `seeds`); ``extra``: model files read
    beside ``model`` (a teacher's best test-split epoch). It reads train.crop: the size of its sliding windows."""
    deps = (model, *extra)
    return Stage(
        name=name, entry="primkd.cli.pipeline:cmd_evaluate", loop=loop, resources="evaluate",
        cmd=(f"primkd evaluate --params params.yaml --preset {{preset}} --model {model} --data {DATA} --hha {HHA} "
             f"--out results/{{preset}}/eval/{run}.json --confusion results/{{preset}}/eval/{run}_confusion.csv "
             f"--log {{log}}"),
        log=f"results/{{preset}}/logs/evaluate_{run}.log",
        params=("eval", "train.device", "train.crop", "train.bgr", *(("seeds",) if seeds else ())),
        deps=(DATA, HHA, *deps),
        outs=(Out(f"results/{{preset}}/eval/{run}_confusion.csv", cache=False),
              Out(f"results/{{preset}}/eval/{run}_per_image.npz", cache=False),
              Out(f"results/{{preset}}/eval/{run}.json", kind="metric", cache=False)))


# Training reads the same keys as its checkpoint fingerprint (primkd.engine.checkpoint.training_settings): model and
# train without primkd.config.RESULT_FREE_KEYS, and the eval keys of its evaluation during training, which picks
# model_best.pt; a student's seed is its stage's `{seed}`, not train.seed. inputs.pretrained is the content digest of
# the ImageNet weights model.pretrained resolves to (the fingerprint's pretrained_sha256): a file whose path depends
# on the preset, which dvc.yaml cannot list as a dependency.
TRAIN_PARAMS = ("model", "train", *TRAINING_EVAL_KEYS, "inputs.pretrained")

STAGES: tuple[Stage, ...] = (
    Stage(
        name="resolve_params", entry="primkd.cli.pipeline:cmd_params",
        comment="The effective parameters of the preset, whose keys the other stages depend on (see primkd.stages). "
                "Always run: its `inputs` are digests of files outside the pipeline (the ImageNet weights, a folder "
                "source), read anew each time; the stages that depend on them rerun only when a digest changes.",
        always_changed=True,
        cmd=f"primkd params --params params.yaml --preset {{preset}} --out {EFFECTIVE_PARAMS} --log {{log}}",
        log="results/{preset}/logs/resolve_params.log",
        files=("params.yaml", "workflow/schemas/params.schema.yaml"),
        outs=(Out(EFFECTIVE_PARAMS, cache=False),)),
    Stage(
        name="download", entry="primkd.cli.pipeline:cmd_download", resources="prepare",
        comment="Raw files of a real dataset (an empty folder for the synthetic and folder sources): downloaded "
                "into data.raw_dir (resumable, checksummed) and linked here, out of the DVC cache so a multi-GB "
                "archive is not stored twice.",
        cmd=f"primkd download --params params.yaml --preset {{preset}} --out {RAW} --log {{log}}",
        log="results/{preset}/logs/download.log",
        params=("data.source", "data.urls"),
        outs=(Out(RAW, cache=False, folder=True),)),
    Stage(
        name="prepare", entry="primkd.cli.pipeline:cmd_prepare", resources="prepare",
        cmd=f"primkd prepare --params params.yaml --preset {{preset}} --raw {RAW} --out {DATA} --log {{log}}",
        log="results/{preset}/logs/prepare.log",
        # inputs.folder: the digest of the data.source=folder tree, wherever data.folder.path puts it
        params=("data", "inputs.folder"), exclude=tuple(f"data.urls.{k}" for k in URL_KEYS),
        deps=(RAW,),
        outs=(Out(DATA, folder=True),)),
    Stage(
        name="hha", entry="primkd.cli.pipeline:cmd_hha", resources="hha",
        cmd=(f"primkd hha --params params.yaml --preset {{preset}} --data {DATA} --out {HHA} "
             f"--contact-sheet results/{{preset}}/contact_sheet.png --log {{log}}"),
        log="results/{preset}/logs/hha.log",
        deps=(DATA,),
        outs=(Out(HHA, folder=True), Out("results/{preset}/contact_sheet.png", cache=False))),
    Stage(
        name="train_teacher", entry="primkd.cli.pipeline:cmd_train", loop=("modality",), resources="train",
        comment="Resumable checkpoints live in results/<preset>/checkpoints/<run>, deliberately not declared as "
                "outputs: the tools delete outputs before a rerun, which is exactly when a checkpoint is needed.",
        cmd=(f"primkd train --params params.yaml --preset {{preset}} --role teacher --modality {{modality}} "
             f"--data {DATA} --hha {HHA} --out-dir {MODELS}/teacher_{{modality}} "
             f"--checkpoint-dir results/{{preset}}/checkpoints/teacher_{{modality}} --log {{log}}"),
        log="results/{preset}/logs/train_teacher_{modality}.log",
        params=TRAIN_PARAMS,
        deps=(DATA, HHA),
        outs=(Out(f"{MODELS}/teacher_{{modality}}/model.pt"),
              Out(f"{MODELS}/teacher_{{modality}}/model_best.pt"),
              Out(f"{MODELS}/teacher_{{modality}}/train.json", kind="metric", cache=False),
              Out(f"{MODELS}/teacher_{{modality}}/curves.csv", kind="plot", cache=False,
                  plot={"x": "epoch", "y": "loss"}),
              Out(f"{MODELS}/teacher_{{modality}}/eval_curve.csv", kind="plot", cache=False,
                  plot={"x": "epoch", "y": "miou"}))),
    Stage(
        name="train_cmx", entry="primkd.cli.pipeline:cmd_train", loop=("seed",), resources="train",
        comment="Each seed of `seeds` trains the CMX baseline once, into seed<k>/ (model.pt, train.json, curves.csv, "
                "eval_curve.csv); the seed replaces train.seed.",
        cmd=(f"primkd train --params params.yaml --preset {{preset}} --role student --seed {{seed}} --data {DATA} "
             f"--hha {HHA} --out-dir {MODELS}/cmx/seed{{seed}} --checkpoint-dir results/{{preset}}/checkpoints/cmx/"
             f"seed{{seed}} --log {{log}}"),
        log="results/{preset}/logs/train_cmx_seed{seed}.log",
        params=TRAIN_PARAMS, exclude=("train.seed",),
        deps=(DATA, HHA),
        outs=(Out(f"{MODELS}/cmx/seed{{seed}}", folder=True),)),
    Stage(
        name="train_student", entry="primkd.cli.pipeline:cmd_train", loop=("exp", "seed"), resources="train",
        group_by="teacher",
        comment="One stage per experiment and seed, in one matrix per teacher modality: train_student for the "
                "experiments distilled from the RGB teacher, train_student_depth for the depth teacher's, each "
                "depending on its teacher's model only. DVC's matrix cannot look up experiments.<exp>.teacher, so the "
                "experiments of each group are written out from params.yaml (`python -m primkd.stages --write` after "
                "adding an experiment or changing its teacher; resolve_params fails until then).",
        cmd=(f"primkd train --params params.yaml --preset {{preset}} --role student --experiment {{exp}} "
             f"--seed {{seed}} --teacher-dir {MODELS} --data {DATA} --hha {HHA} "
             f"--out-dir {MODELS}/{{exp}}/seed{{seed}} --checkpoint-dir results/{{preset}}/checkpoints/{{exp}}/"
             f"seed{{seed}} --log {{log}}"),
        log="results/{preset}/logs/train_{exp}_seed{seed}.log",
        params=(*TRAIN_PARAMS, "experiments.{exp}"), exclude=("train.seed",),
        deps=(DATA, HHA, f"{MODELS}/teacher_{{teacher}}/model.pt"),
        outs=(Out(f"{MODELS}/{{exp}}/seed{{seed}}", folder=True),)),
    _eval_stage("evaluate_teacher", f"{MODELS}/teacher_{{modality}}/model.pt", "teacher_{modality}", ("modality",),
                False, extra=(f"{MODELS}/teacher_{{modality}}/model_best.pt",)),
    _eval_stage("evaluate_cmx", f"{MODELS}/cmx", "cmx", (), True),
    _eval_stage("evaluate_student", f"{MODELS}/{{exp}}", "{exp}", ("exp",), True),
    Stage(
        name="analyze", entry="primkd.cli.report:cmd_analyze", resources="evaluate",
        comment="Table 8 (CKA), Figure 4 (feature histograms), Figure 3 (predictions): CMX and PrimKD against both "
                "teachers.",
        cmd=(f"primkd analyze --params params.yaml --preset {{preset}} --student cmx={MODELS}/cmx "
             f"--student primkd={MODELS}/primkd --rgb-model {MODELS}/teacher_rgb/model.pt "
             f"--depth-model {MODELS}/teacher_depth/model.pt --data {DATA} --hha {HHA} "
             f"--out-dir results/{{preset}}/analysis --log {{log}}"),
        log="results/{preset}/logs/analyze.log",
        params=("train.device", "train.bgr", "seeds"),  # seeds: a student's lowest seed is the one analysed
        deps=(DATA, HHA, f"{MODELS}/cmx", f"{MODELS}/primkd", f"{MODELS}/teacher_rgb/model.pt",
              f"{MODELS}/teacher_depth/model.pt"),
        outs=(Out("results/{preset}/analysis", folder=True),)),
    Stage(
        name="report", entry="primkd.cli.report:cmd_report",
        comment="Tables 1-8 beside the paper's numbers, Figure 1, REPORT.md: every evaluated run and the analysis.",
        cmd=("primkd report --params params.yaml --preset {preset} --results results/{preset} "
             "--out-dir results/{preset}/report --report results/{preset}/REPORT.md "
             "--summary results/{preset}/summary.json --curves results/{preset}/report/curves --log {log}"),
        log="results/{preset}/logs/report.log",
        # The tables match rows to experiments by their kd settings and compare with the paper only in its setting
        # (dataset, backbone); the summary records the schedule and the seeds. An experiment's own settings reach the
        # report through its evaluation (eval/), so `experiments` is not listed (its keys change with every entry).
        params=("model.decoder_embed_dim", "model.backbone", "data.source", "train.epochs", "train.batch_size",
                "train.lr", "kd", "seeds", "eval.checkpoint", "eval.scales", "eval.flip"),
        files=("src/primkd/report/paper.yaml",),  # package data: the paper's numbers the tables compare with
        # models/: the training curves (curves.csv, eval_curve.csv of every run and seed of `seeds`) drawn in
        # report/curves.
        deps=("results/{preset}/eval", "results/{preset}/analysis", MODELS),
        outs=(Out("results/{preset}/report", cache=False, folder=True),
              Out("results/{preset}/REPORT.md", cache=False),
              Out("results/{preset}/summary.json", kind="metric", cache=False))),
)

# Training curves of the first seed (`dvc plots show`); the teachers' are declared with their stages.
DVC_PLOTS = [
    {f"{MODELS}/cmx/seed0/curves.csv": {"x": "epoch", "y": ["loss", "seg"]}},
    {f"{MODELS}/primkd/seed0/curves.csv": {"x": "epoch", "y": ["loss", "seg", "pred", "feat"]}},
    {f"{MODELS}/primkd/seed0/eval_curve.csv": {"x": "epoch", "y": "miou"}},
]


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def loop_values(var: str, cfg: dict) -> list:
    """The values of one loop variable for the resolved parameters ``cfg``."""
    return {"modality": list(MODALITIES), "exp": list(cfg["experiments"]), "seed": list(cfg["seeds"])}[var]


def loop_items(s: Stage, cfg: dict) -> list[dict | None]:
    """One ``{variable: value}`` per instance of a stage (``[None]`` for a stage without a loop); a stage with
    :attr:`Stage.group_by` also gets that key of its experiment (``{"exp": "primkd", "seed": 0, "teacher": "rgb"}``)."""
    if not s.loop:
        return [None]
    items = [dict(zip(s.loop, values)) for values in itertools.product(*(loop_values(v, cfg) for v in s.loop))]
    return [with_group(s, item, cfg) for item in items]


def with_group(s: Stage, item: dict, cfg: dict) -> dict:
    """``item`` with the :attr:`Stage.group_by` key of its experiment added (unchanged for other stages)."""
    if not s.group_by:
        return item
    return {**item, s.group_by: cfg["experiments"][item["exp"]][s.group_by]}


def dvc_name(s: Stage, group: str | None = None) -> str:
    """The name in dvc.yaml of a stage, or of one of its groups: the stage's own name for the RGB teacher (the
    method's, and the demo's), ``<name>_<value>`` for the others (``train_student_depth``)."""
    return s.name if group is None or group == MODALITIES[0] else f"{s.name}_{group}"


def dvc_groups(s: Stage, cfg: dict) -> dict[str, list[str]]:
    """A grouped stage's entries in dvc.yaml (each named :func:`dvc_name`): group value (a teacher modality) -> the
    experiments with that value, in params.yaml's order (only values that have experiments; the RGB teacher's
    first)."""
    groups = {value: [e for e, entry in cfg["experiments"].items() if entry[s.group_by] == value]
              for value in MODALITIES}
    return {value: exps for value, exps in groups.items() if exps}


def instance_name(s: Stage, item: dict | None) -> str:
    """DVC's name of one stage instance (its matrix naming): ``train_student@primkd-0``,
    ``train_student_depth@kd_teacher_depth-0``."""
    if item is None:
        return s.name
    return f"{dvc_name(s, item.get(s.group_by))}@{'-'.join(str(item[v]) for v in s.loop)}"


def check_dvc_groups(dvc_yaml: str | Path, cfg: dict, params: str | Path = "params.yaml") -> None:
    """Fail with one line when the student groups written into ``dvc_yaml`` (see :func:`dvc_groups`) differ from the
    experiments of the parameters ``cfg`` (read from ``params``): after adding an experiment or changing its
    teacher (also with ``dvc exp run -S``) DVC would otherwise skip its training or give it the wrong teacher."""
    stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {})
    problems = []
    for s in (s for s in STAGES if s.group_by):
        names = {dvc_name(s, value): value for value in MODALITIES}
        written = {}
        for name in (n for n in names if isinstance(stages.get(n), dict)):
            exps = stages[name].get("matrix", {}).get("exp")
            if not isinstance(exps, list):  # written by a version that did not group the students
                problems.append(f"{name} does not list its experiments")
            written.update(dict.fromkeys(exps if isinstance(exps, list) else [], name))
        wanted = {e: dvc_name(s, value) for value, exps in dvc_groups(s, cfg).items() for e in exps}
        missing: dict[str, list[str]] = {}
        for exp in cfg["experiments"]:
            if exp not in written:
                missing.setdefault(wanted[exp], []).append(exp)
            elif written[exp] != wanted[exp]:
                problems.append(f"{written[exp]} lists {exp}, but experiments.{exp}.{s.group_by} is "
                                f"{names[wanted[exp]]}: it belongs in {wanted[exp]}")
        problems += [f"{name} lacks {', '.join(exps)} ({s.group_by} {names[name]})" for name, exps in missing.items()]
        extra: dict[str, list[str]] = {}
        for exp in (e for e in written if e not in wanted):
            extra.setdefault(written[exp], []).append(exp)
        problems += [f"{name} lists {', '.join(exps)}, not in experiments" for name, exps in extra.items()]
    if problems:
        raise ConfigError(f"{dvc_yaml} does not match the experiments of {params}: {'; '.join(problems)}; "
                          f"regenerate {Path(dvc_yaml).name} with `python -m primkd.stages --write`")


def fill(template: str, preset: str, s: Stage, item: dict | None = None) -> str:
    """A template with the preset, the loop variables and the log path substituted: what a tool runs for one stage
    instance."""
    values = {"preset": preset, **(item or {})}
    values["log"] = _format(s.log, values)
    return _format(template, values)


def _format(template: str, values: dict) -> str:
    out = template
    for key, value in values.items():
        if value is not None:
            out = out.replace("{" + key + "}", str(value))
    return out


# --- Parameters ---------------------------------------------------------------------------------------------


def leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of a nested dict (lists are leaves)."""
    out = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out += leaf_keys(value, f"{name}.") if isinstance(value, dict) and value else [name]
    return out


def param_keys(s: Stage, effective: dict, item: dict | None = None) -> list[str]:
    """The effective leaf keys a stage (instance) reads, as listed in its DVC ``params``.

    ``effective`` is :func:`primkd.config.effective_params` of any preset (every preset has the same keys). With
    ``item`` None a looped stage's keys keep the ``{exp}`` placeholder.
    """
    keys = []
    for entry in s.params:
        exp = item["exp"] if item is not None and "exp" in item else next(iter(effective["experiments"]))
        concrete = entry.replace("{exp}", exp)
        node = effective
        for part in concrete.split("."):
            node = node[part]
        leaves = leaf_keys(node, f"{concrete}.") if isinstance(node, dict) else [concrete]
        if item is None and "{exp}" in entry:
            leaves = [k.replace(concrete, entry, 1) for k in leaves]
        keys += [k for k in leaves if k not in s.exclude and k not in RESULT_FREE_KEYS]
    return keys


def effective_values(s: Stage, effective: dict, item: dict | None) -> dict:
    """The values of a stage instance's parameter keys, for Snakemake's ``params`` (its rerun trigger)."""
    out = {}
    for key in param_keys(s, effective, item):
        node = effective
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def smk_values(s: Stage, effective: dict, item: dict | None) -> dict:
    """A Snakemake rule's ``params`` values: :func:`effective_values`, and for an :attr:`Stage.always_changed` stage
    (which has no parameter keys: it writes them) the ``inputs`` digests, the part of its output that changes without
    an edit of its input files. Snakemake has no "always run"; this reruns resolve_params whenever DVC's rerun would
    write something new, so its file stays current (the other rules read the values at parse time)."""
    values = effective_values(s, effective, item)
    if s.always_changed:
        values["inputs"] = effective["inputs"]
    return values


# --- Code dependencies: the import closure of a stage's CLI function -----------------------------------------


@dataclass
class _Module:
    """What one module of the package imports: at module level, and in each top-level function."""

    path: Path
    top: set[str]  # modules imported at module level
    functions: dict[str, set[str]]  # function -> modules its body imports
    calls: dict[str, set[str]]  # function -> names its body calls
    cli_names: dict[str, tuple[str, str]]  # name -> (CLI module, function) imported under that name


def _module_file(name: str) -> Path | None:
    if name == "primkd":
        return PACKAGE_DIR / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel.with_suffix(".py"), PACKAGE_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_cli(name: str) -> bool:
    # The CLI modules hold one function per command and a stage runs only its own, so they are followed function by
    # function. Every other module is followed whole (its imports at any level): which of its functions run depends
    # on parameters, which static analysis cannot know.
    return name == "primkd.cli" or name.startswith("primkd.cli.")


def _imports(nodes: Iterable[ast.AST], package: str, cli_names: dict) -> set[str]:
    """``primkd`` modules imported anywhere inside ``nodes`` (``from a import b`` counts ``a.b`` when that is a
    module, else ``a``); CLI functions imported by name are recorded in ``cli_names``."""
    out = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                out |= {a.name for a in sub.names if a.name.split(".")[0] == "primkd"}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:  # relative import
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - sub.level + 1], base]).strip(".")
                if base.split(".")[0] != "primkd":
                    continue
                for alias in sub.names:
                    child = f"{base}.{alias.name}"
                    out.add(child if _module_file(child) else base)
                    if _is_cli(base) and not _module_file(child):
                        cli_names[alias.asname or alias.name] = (base, alias.name)
    return out


@functools.cache
def _parse(name: str) -> _Module:
    path = _module_file(name)
    if path is None:
        raise ValueError(f"{name}: no such module in {PACKAGE_DIR}")
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    functions, calls, cli_names, top_nodes = {}, {}, {}, []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions[node.name] = _imports([node], package, cli_names)
            # called names only: build_parser names every command function without running it
            calls[node.name] = {n.func.id for n in ast.walk(node)
                                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        else:
            top_nodes.append(node)
    return _Module(path, _imports(top_nodes, package, cli_names), functions, calls, cli_names)


def _with_parents(name: str) -> list[str]:
    """``name`` and the packages whose ``__init__`` runs when it is imported: ``primkd``, ``primkd.data``, ..."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.cache
def code_closure(entry: str) -> tuple[str, ...]:
    """Source files (repository-relative, sorted) that ``primkd <command>`` may execute for the CLI function
    ``entry`` (``module:function``): the dispatch (``primkd.cli:main``, which builds the whole parser), the
    function, the CLI functions they reference, and the modules all of these import, closed over imports."""
    modules: set[str] = set()
    units: set[tuple[str, str]] = set()
    todo_modules: list[str] = []
    todo_units: list[tuple[str, str]] = [("primkd.cli", "main"), tuple(entry.split(":"))]

    def load(name: str) -> None:
        for m in _with_parents(name):
            if m not in modules:
                modules.add(m)
                todo_modules.append(m)

    while todo_modules or todo_units:
        if todo_modules:
            info = _parse(todo_modules.pop())
            imported = set(info.top)
            if not _is_cli(_name_of(info.path)):
                imported = imported.union(*info.functions.values())
            for other in imported:
                load(other)
            continue
        unit = todo_units.pop()
        if unit in units:
            continue
        units.add(unit)
        mod, fn = unit
        load(mod)
        info = _parse(mod)
        if fn not in info.functions:
            raise ValueError(f"{mod}:{fn}: no such function (primkd.stages entry)")
        for other in info.functions[fn]:
            load(other)
        for name in info.calls[fn]:
            if name in info.functions:
                todo_units.append((mod, name))
            elif name in info.cli_names:
                todo_units.append(info.cli_names[name])
    return tuple(sorted(str(_parse(m).path.relative_to(REPO_ROOT)) for m in modules))


def _name_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


# --- dvc.yaml -------------------------------------------------------------------------------------------------

DVC_HEADER = """\
# GENERATED from src/primkd/stages.py by `python -m primkd.stages --write`: edit the table there, not this file
# (tests/test_pipelines.py fails when the two differ). workflow/rules/*.smk take the same commands, inputs, outputs
# and parameters from that table.
#
# Code dependencies are the source files each stage's command may execute (the import closure of its CLI
# function). Parameter dependencies are the exact leaf keys each stage reads, taken from
# results/<preset>/effective_params.yaml, which the resolve_params stage writes from params.yaml with the preset's
# and each experiment's overrides applied: every preset has every key there, so DVC never meets a missing key, and
# `dvc exp run -S preset=smoke`, `-S kd.beta=0.1` or `-S presets.smoke.train.lr=0.01` all work. After editing
# params.yaml, `dvc status` lists resolve_params only; `dvc repro resolve_params && dvc status` shows exactly
# which stages the edit reaches, and `dvc repro` reruns just those.
#
# Input files whose path is a parameter (the ImageNet weights of model.pretrained, the data.folder.path tree) enter
# as digests: effective_params.yaml `inputs`, on which the training stages and prepare depend. resolve_params is
# always_changed, so `dvc status` always lists it and every `dvc repro` recomputes the digests; a stage reruns only
# when one it depends on changed.
"""


def _dvc(template: str, s: Stage, group: str | None = None) -> str:
    """A template in DVC's syntax: ``${preset}``, ``${item.<loop variable>}``, the group's value written out."""
    values = {"preset": "${preset}", **{v: f"${{item.{v}}}" for v in ("modality", "exp", "seed")}}
    if s.group_by:
        values[s.group_by] = group
    values["log"] = _format(s.log, values)
    return _format(template, values)


# Each loop variable's values in dvc.yaml, read from params.yaml when DVC loads the file, so that
# `dvc exp run -S seeds=[0,1,2]` adds the seeds' stages without regenerating dvc.yaml (a grouped stage's experiments
# are written out instead: see dvc_groups).
DVC_LOOPS = {"modality": list(MODALITIES), "exp": "${experiments}", "seed": "${seeds}"}


def dvc_stage(s: Stage, effective: dict, group: tuple[str, list[str]] | None = None) -> dict:
    """The ``dvc.yaml`` entry of a stage, or of one group of a grouped stage: (group value, its experiments)."""
    value = group[0] if group else None
    body: dict = {"cmd": _dvc(s.cmd, s, value),
                  "deps": [*code_closure(s.entry), *s.files, *(_dvc(d, s, value) for d in s.deps)]}
    keys = [_dvc(k, s) for k in param_keys(s, effective)]
    if keys:
        body["params"] = [{_dvc(EFFECTIVE_PARAMS, s): keys}]
    for kind, section in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
        entries = []
        for out in (o for o in s.outs if o.kind == kind):
            options = {**({} if out.cache else {"cache": False}), **(out.plot or {})}
            entries.append({_dvc(out.path, s, value): options} if options else _dvc(out.path, s, value))
        if entries:
            body[section] = entries
    if s.always_changed:
        body["always_changed"] = True
    if s.loop:
        loops = {v: DVC_LOOPS[v] for v in s.loop}
        if group:
            loops["exp"] = list(group[1])
        return {"matrix": loops, **body}
    return body


def render_dvc(params_path: str | Path = REPO_ROOT / "params.yaml") -> str:
    """The text of ``dvc.yaml``: the header, each stage (its comment above it), the global plots."""
    from primkd.config import effective_params, load_params

    cfg = load_params(params_path)
    effective = effective_params(cfg)
    parts = [DVC_HEADER, "stages:\n"]
    for s in STAGES:
        entries = [(s.name, dvc_stage(s, effective), s.comment)]
        if s.group_by:
            entries = [(dvc_name(s, value), dvc_stage(s, effective, (value, exps)),
                        s.comment if i == 0 else f"As {s.name}, for the experiments whose {s.group_by} is {value}.")
                       for i, (value, exps) in enumerate(dvc_groups(s, cfg).items())]
        for name, body, comment in entries:
            text = yaml.safe_dump({name: body}, sort_keys=False, width=120)
            text = "".join(f"  {line}\n" for line in text.splitlines())
            comment = "".join(f"  # {line}\n" for line in _wrap(comment)) if comment else ""
            parts.append(f"\n{comment}{text}")
    parts.append("\n# Training curves of the first seed (`dvc plots show`); the teachers' are declared with their "
                 "stages.\n")
    parts.append(yaml.safe_dump({"plots": [{_dvc(k, STAGES[0]): v for k, v in p.items()} for p in DVC_PLOTS]},
                                sort_keys=False, width=120))
    return "".join(parts)


def _wrap(text: str, width: int = 112) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


# --- Snakemake ------------------------------------------------------------------------------------------------


def _smk_pattern(template: str, preset: str) -> str:
    """An input/output path for Snakemake: the preset filled in, the loop variable left as a wildcard."""
    return _format(template, {"preset": preset})


def smk_inputs(s: Stage, preset: str, cfg: dict) -> list:
    """A rule's inputs: code files, other files, the stage's inputs; a folder of other stages' outputs (such as
    ``results/<preset>/eval``, or a student's run folder of seed<k>/ outputs) as those outputs one by one, through
    an input function when the path holds a wildcard (or the :attr:`Stage.group_by` value, looked up from the
    experiment: a student's own teacher)."""
    inputs: list = [*code_closure(s.entry), *s.files]
    produced = [fill(o.path, preset, t, item) for t in STAGES for item in loop_items(t, cfg) for o in t.outs]

    def expand(path: str) -> list[str]:
        inside = [p for p in produced if p.startswith(path + "/")]
        return inside if inside and path not in produced else [path]

    for dep in s.deps:
        path = _smk_pattern(dep, preset)
        if "{" in path:
            inputs.append(lambda w, path=path: expand(path.format(**with_group(s, dict(w.items()), cfg))))
        else:
            inputs += expand(path)
    return inputs


def smk_outputs(s: Stage, preset: str) -> list:
    """A rule's outputs (folders wrapped in Snakemake's ``directory()`` by the caller: see common.smk)."""
    return [(_smk_pattern(o.path, preset), o.folder) for o in s.outs]


def smk_shell(s: Stage, preset: str) -> str:
    """A rule's shell command: DVC's command with Snakemake's placeholders for the wildcards and the log."""
    values = {"preset": preset, **{v: f"{{wildcards.{v}}}" for v in ("modality", "exp", "seed")}, "log": "{log}"}
    return _format(s.cmd, values)


def smk_log(s: Stage, preset: str) -> str:
    return _smk_pattern(s.log, preset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m primkd.stages", description="Generate dvc.yaml from the table.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="Rewrite dvc.yaml.")
    group.add_argument("--check", action="store_true", help="Exit with status 1 when dvc.yaml is out of date.")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="Repository root (params.yaml, dvc.yaml).")
    args = parser.parse_args(argv)
    try:
        text, path = render_dvc(args.root / "params.yaml"), args.root / "dvc.yaml"
    except ConfigError as e:  # a typo in params.yaml: its message, not a traceback (as the primkd command does)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    if args.write:
        path.write_text(text)
        print(f"wrote {path}")
    elif not path.is_file() or path.read_text() != text:
        sys.exit(f"{path} is out of date with src/primkd/stages.py; run `python -m primkd.stages --write`")


if __name__ == "__main__":
    main()
