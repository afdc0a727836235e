"""The stage table: every stage of the pipeline, its command, the CLI function it runs, the parameter keys it reads,
its inputs and its outputs, and the expansion of looped stages into instances (:func:`loop_items`).

Paths and commands are templates of ``{preset}`` and the stage's loop variables (:data:`LOOPS`): ``{modality}`` (the
two teachers), ``{exp}`` (the student experiments), ``{seed}`` (each entry of ``seeds``: every student seed is a
stage of its own, a DVC ``matrix`` entry and a Snakemake job), and ``{teacher}``, the experiment's teacher
(``experiments.<exp>.teacher``), so that a student depends on its own teacher's model only.

Parameters: a stage depends on the *effective* values it reads (top level with the active preset's overrides and, for
students, the experiment's ``kd`` overrides applied), which the ``resolve_params`` stage writes to
``results/<preset>/effective_params.yaml`` (:func:`primkd.config.effective_params`); see :mod:`primkd.stages`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from primkd.config import RELEASED_ENTRIES, RESULT_FREE_KEYS, TRAINING_KEYS

EFFECTIVE_PARAMS = "results/{preset}/effective_params.yaml"
MODALITIES = ("rgb", "depth")
DATA, HHA, RAW = "data/{preset}/prepared", "data/{preset}/hha", "data/{preset}/raw"
URL_KEYS = ("nyuv2_labeled", "nyuv2_splits", "nyuv2_class_mapping", "sunrgbd", "sunrgbd_toolbox")
MODELS = "results/{preset}/models"
# The pretrain stage's folder: its outputs, committed with the repository, and its own dvc.yaml and dvc.lock.
PRETRAIN = "pretrain"
PRETRAINED = f"{PRETRAIN}/encoder.pt"  # the encoder it writes, which the demo's model.pretrained names


@dataclass(frozen=True)
class Loop:
    """A loop variable: its values for the resolved parameters; the same list as DVC reads it when it loads dvc.yaml
    (a reference into params.yaml, so that `dvc exp run -S seeds=[0,1,2]` adds the seeds' stages without
    regenerating dvc.yaml); the name of the list in the Snakemake rules (workflow/rules/common.smk)."""

    values: Callable[[dict], list]
    dvc: list | str
    smk: str


# The loop variables, the only place that says what each runs over (dvc.yaml's matrices, Snakemake's wildcards).
LOOPS = {"modality": Loop(lambda cfg: list(MODALITIES), list(MODALITIES), "MODALITIES"),
         "exp": Loop(lambda cfg: list(cfg["experiments"]), "${experiments}", "EXPERIMENTS"),
         "seed": Loop(lambda cfg: list(cfg["seeds"]), "${seeds}", "SEEDS")}


@dataclass(frozen=True)
class Report:
    """How ``snakemake --report`` shows an output (Snakemake's ``report()`` flag; DVC has no counterpart).

    Attributes:
        caption: its caption, a file of workflow/report/ (reStructuredText, rendered through Jinja).
        category: the page's group: Tables, Figures, Training or Per run.
        labels: (column, value) pairs of the page's list; values may name the path's wildcards and those of
            ``patterns``.
        patterns: for a folder, the files shown (Snakemake's ``glob_wildcards`` patterns, relative to the folder).
    """

    caption: str
    category: str
    labels: tuple[tuple[str, str], ...] = ()
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Out:
    """An output: ``kind`` out | metric | plot; ``cache: false`` keeps it out of the DVC cache, for a small file that
    git tracks instead (.gitignore lets it through; every output travels in one of the two, so a pulled clone and a
    queued experiment, which DVC's run cache restores, have it); ``folder`` marks a directory (Snakemake's
    ``directory()``); ``plot`` holds DVC's x/y for a plot; ``report`` files it in the Snakemake report."""

    path: str
    kind: str = "out"
    cache: bool = True
    folder: bool = False
    plot: dict | None = None
    report: Report | None = None


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
            template variable of that name; dvc.yaml holds one stage per value (:func:`primkd.stages.dvc.dvc_groups`).
        always_changed: DVC runs it on every ``dvc repro`` (its ``always_changed``): resolve_params, whose output holds
            the digests of input files that no stage can declare (``inputs``; Snakemake compares them as params).
        dvc_flags: arguments that only dvc.yaml's command passes (resolve_params checks that dvc.yaml lists the
            experiments of params.yaml, which a Snakemake run has no reason to wait for).
        comment: what dvc.yaml and the Snakemake rules say above the stage.
        shipped: for a stage whose outputs git tracks, committed with the repository so that a fresh clone has them
            up to date without running it (the pretrain stage): the folder of its own dvc.yaml and dvc.lock (run
            from the repository root, ``wdir: ..``; the main dvc.lock is not committed). Its parameters are keys of
            params.yaml that no preset overrides, read from params.yaml itself (its output feeds resolve_params).
            Snakemake decides by content, not by file times, which a clone sets in any order:
            :mod:`primkd.stages.shipped`.
        threads: the dotted params.yaml key of its Snakemake threads, for a stage without ``resources``.
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
    dvc_flags: str = ""
    comment: str = field(default="", compare=False)
    shipped: str = ""
    threads: str = ""


def _evaluate(*, name: str, run: str, model: str, loop: tuple[str, ...] = (), over_seeds: bool,
              best: str | None = None) -> Stage:
    """The evaluation of run ``run`` (the name of its eval/ files and log) from ``model``;
    ``over_seeds``: a student's run folder, whose seed<k>/ models of `seeds` are averaged; ``best``: the model file of
    a teacher's best test-split epoch, read beside ``model``. It reads train.crop: the size of its sliding windows.
    Besides the test split in both modes it scores the last epoch single-scale on the train split (``<run>.train.json``:
    the train − test gap that tells a data-limited regime from a compute-limited one), in the same process, from the
    networks it has loaded: one more pass over the training images, no more stages to run."""
    return Stage(
        name=name, entry="primkd.cli.pipeline:cmd_evaluate", loop=loop, resources="evaluate",
        cmd=(f"primkd evaluate --params params.yaml --preset {{preset}} --model {model} --data {DATA} --hha {HHA} "
             f"--out results/{{preset}}/eval/{run}.json --train-out results/{{preset}}/eval/{run}.train.json "
             f"--confusion results/{{preset}}/eval/{run}_confusion.csv --log {{log}}"),
        log=f"results/{{preset}}/logs/evaluate_{run}.log",
        params=("eval", "train.device", "train.crop", "train.bgr", *(("seeds",) if over_seeds else ())),
        exclude=tuple(f"eval.released.{entry}" for entry in RELEASED_ENTRIES),  # the evaluate_released stage's
        deps=(DATA, HHA, model, *((best,) if best else ())),
        outs=(Out(f"results/{{preset}}/eval/{run}_confusion.csv"),
              Out(f"results/{{preset}}/eval/{run}_per_image.npz"),
              Out(f"results/{{preset}}/eval/{run}.json", kind="metric", cache=False,
                  report=Report("evaluation.rst", "Per run", labels=(("run", run),))),
              Out(f"results/{{preset}}/eval/{run}.train.json", kind="metric", cache=False,
                  report=Report("evaluation_train.rst", "Per run", labels=(("run", f"{run} (train split)"),)))))


# Training depends on the keys of its checkpoint fingerprint (primkd.config.TRAINING_KEYS; RESULT_FREE_KEYS are left
# out of every stage); a student's seed is its stage's `{seed}`, not train.seed. inputs.pretrained is the content
# digest of the ImageNet weights model.pretrained resolves to (the fingerprint's pretrained_sha256): a file whose path
# depends on the preset, which dvc.yaml cannot list as a dependency.
TRAIN_PARAMS = (*TRAINING_KEYS, "inputs.pretrained")

STAGES: tuple[Stage, ...] = (
    Stage(
        name="pretrain", entry="primkd.cli.pretrain:cmd_pretrain", shipped=PRETRAIN, threads="pretrain.threads",
        comment="The demo's ImageNet-1K: the MiT encoder trained on patch classification of a synthetic corpus of "
                "its own (params.yaml pretrain). Its outputs are committed with the repository (`make pretrain` "
                "regenerates them), so a fresh clone finds it up to date; the presets whose model.pretrained names "
                "pretrain/encoder.pt (the demo) start every network from it.",
        cmd=f"primkd pretrain --params params.yaml --out-dir {PRETRAIN} --log {{log}}",
        log="results/pretrain.log",
        params=("pretrain",),
        outs=(Out(PRETRAINED, cache=False),
              Out(f"{PRETRAIN}/pretrain.json", kind="metric", cache=False),
              Out(f"{PRETRAIN}/curve.csv", kind="plot", cache=False, plot={"x": "epoch", "y": "loss"}))),
    Stage(
        name="resolve_params", entry="primkd.cli.pipeline:cmd_params",
        comment="The effective parameters of the preset, whose keys the other stages depend on (see primkd.stages). "
                "Always run: its `inputs` are digests of files outside the pipeline (the ImageNet weights, a folder "
                "source), read anew each time; the stages that depend on them rerun only when a digest changes. "
                "It reads the pretrain stage's encoder after that stage: the demo's inputs.pretrained.",
        always_changed=True,
        deps=(PRETRAINED,),
        cmd=f"primkd params --params params.yaml --preset {{preset}} --out {EFFECTIVE_PARAMS} --log {{log}}",
        dvc_flags="--dvc-yaml dvc.yaml",
        log="results/{preset}/logs/resolve_params.log",
        files=("params.yaml", "workflow/schemas/params.schema.yaml"),
        outs=(Out(EFFECTIVE_PARAMS, cache=False),)),
    Stage(
        name="download", entry="primkd.cli.pipeline:cmd_download", resources="prepare",
        comment="Raw files of a real dataset (an empty folder for the synthetic and folder sources): downloaded "
                "into data.raw_dir (resumable, checksummed) and linked here. Cached like every output that is not "
                "committed, so that a pulled clone has it (`dvc push` carries the archives).",
        cmd=f"primkd download --params params.yaml --preset {{preset}} --out {RAW} --log {{log}}",
        log="results/{preset}/logs/download.log",
        params=("data.source", "data.urls", "data.checksums"),
        outs=(Out(RAW, folder=True),)),
    Stage(
        name="prepare", entry="primkd.cli.pipeline:cmd_prepare", resources="prepare",
        cmd=f"primkd prepare --params params.yaml --preset {{preset}} --raw {RAW} --out {DATA} --log {{log}}",
        log="results/{preset}/logs/prepare.log",
        # inputs.folder: the digest of the data.source=folder tree, wherever data.folder.path puts it
        params=("data", "inputs.folder"),
        exclude=tuple(f"data.{s}.{k}" for s in ("urls", "checksums") for k in URL_KEYS),
        deps=(RAW,),
        outs=(Out(DATA, folder=True),)),
    Stage(
        name="hha", entry="primkd.cli.pipeline:cmd_hha", resources="hha",
        cmd=(f"primkd hha --params params.yaml --preset {{preset}} --data {DATA} --out {HHA} "
             f"--contact-sheet results/{{preset}}/contact_sheet.png --log {{log}}"),
        log="results/{preset}/logs/hha.log",
        deps=(DATA,),
        outs=(Out(HHA, folder=True), Out("results/{preset}/contact_sheet.png"))),
    Stage(
        name="train_teacher", entry="primkd.cli.pipeline:cmd_train", loop=("modality",), resources="train",
        comment="Resumable checkpoints live in results/<preset>/checkpoints/<run>, deliberately not declared as "
                "outputs: the tools delete outputs before a rerun, which is exactly when a checkpoint is needed. "
                "When kd.teachers names a file for the modality (the official presets: PrimKD's released RGB "
                "teacher) and it is there, the stage imports it instead of training; while it is missing it trains "
                "the teacher and says so.",
        cmd=(f"primkd train --params params.yaml --preset {{preset}} --role teacher --modality {{modality}} "
             f"--data {DATA} --hha {HHA} --out-dir {MODELS}/teacher_{{modality}} "
             f"--checkpoint-dir results/{{preset}}/checkpoints/teacher_{{modality}} --log {{log}}"),
        log="results/{preset}/logs/train_teacher_{modality}.log",
        # kd.teachers.<modality>: train, or a file the stage imports instead (inputs.teachers: its digest)
        params=(*TRAIN_PARAMS, "kd.teachers.{modality}", "inputs.teachers.{modality}"),
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
    _evaluate(name="evaluate_teacher", run="teacher_{modality}", model=f"{MODELS}/teacher_{{modality}}/model.pt",
              loop=("modality",), over_seeds=False, best=f"{MODELS}/teacher_{{modality}}/model_best.pt"),
    _evaluate(name="evaluate_cmx", run="cmx", model=f"{MODELS}/cmx", over_seeds=True),
    _evaluate(name="evaluate_student", run="{exp}", model=f"{MODELS}/{{exp}}", loop=("exp",), over_seeds=True),
    Stage(
        name="evaluate_released", entry="primkd.cli.pipeline:cmd_evaluate_released", resources="evaluate",
        comment="The published checkpoints of eval.released (PrimKD's RGB teacher, CMX's NYU Depth V2 MiT-B2 model) "
                "imported from their official files and scored as the runs are, in both modes; a missing file is "
                "one line in its JSON and the report. inputs.released: the files' digests.",
        cmd=(f"primkd evaluate-released --params params.yaml --preset {{preset}} --data {DATA} --hha {HHA} "
             f"--out-dir results/{{preset}}/eval --log {{log}}"),
        log="results/{preset}/logs/evaluate_released.log",
        params=("eval", "train.device", "train.crop", "inputs.released"),
        deps=(DATA, HHA),
        outs=tuple(Out(f"results/{{preset}}/eval/released_{entry}.json", kind="metric", cache=False)
                   for entry in RELEASED_ENTRIES)),
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
        outs=(Out("results/{preset}/analysis", folder=True,
                  report=Report("analysis.rst", "Figures", labels=(("figure", "{name}"),),
                                patterns=("{name}.png",))),)),
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
        # The folders and files of report/ one by one, so that the Snakemake report files each under its category.
        outs=(Out("results/{preset}/report/tables", folder=True,
                  report=Report("tables.rst", "Tables", labels=(("table", "{name}"), ("format", "{ext}")),
                                patterns=("{name}.{ext,(md|csv)}",))),
              Out("results/{preset}/report/figure1.png",
                  report=Report("figure1.rst", "Figures", labels=(("figure", "figure1"),))),
              Out("results/{preset}/report/figure1.pdf"),
              Out("results/{preset}/report/curves", folder=True,
                  report=Report("curves.rst", "Training", labels=(("run", "{run}"),), patterns=("{run}.png",))),
              Out("results/{preset}/REPORT.md", cache=False,
                  report=Report("report_md.rst", "Tables", labels=(("table", "REPORT.md: every table, with notes"),
                                                                   ("format", "md")))),
              Out("results/{preset}/summary.json", kind="metric", cache=False,
                  report=Report("summary.rst", "Per run", labels=(("run", "all runs (summary.json)"),))))),
)


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def loop_items(s: Stage, cfg: dict) -> list[dict | None]:
    """One ``{variable: value}`` per instance of a stage (``[None]`` for a stage without a loop); a stage with
    :attr:`Stage.group_by` also gets that key of its experiment (``{"exp": "primkd", "seed": 0, "teacher": "rgb"}``)."""
    if not s.loop:
        return [None]
    items = [dict(zip(s.loop, values)) for values in itertools.product(*(LOOPS[v].values(cfg) for v in s.loop))]
    return [with_group(s, item, cfg) for item in items]


def with_group(s: Stage, item: dict, cfg: dict) -> dict:
    """``item`` with the :attr:`Stage.group_by` key of its experiment added (unchanged for other stages)."""
    if not s.group_by:
        return item
    return {**item, s.group_by: cfg["experiments"][item["exp"]][s.group_by]}


def fill(template: str, preset: str, s: Stage, item: dict | None = None) -> str:
    """A template with the preset, the loop variables and the log path substituted: what a tool runs for one stage
    instance."""
    values = {"preset": preset, **(item or {})}
    values["log"] = substitute(s.log, values)
    return substitute(template, values)


def substitute(template: str, values: dict) -> str:
    """``template`` with each ``{key}`` of ``values`` replaced (None: left as it is)."""
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
        concrete = entry
        for var in (v for v in LOOPS if "{" + v + "}" in entry):  # {exp}, {modality}: this instance's, or the first
            value = item[var] if item is not None and var in item else LOOPS[var].values(effective)[0]
            concrete = concrete.replace("{" + var + "}", str(value))
        node = value_at(effective, concrete)
        leaves = leaf_keys(node, f"{concrete}.") if isinstance(node, dict) else [concrete]
        if item is None and concrete != entry:
            leaves = [k.replace(concrete, entry, 1) for k in leaves]
        keys += [k for k in leaves if k not in s.exclude and k not in RESULT_FREE_KEYS]
    return keys


def effective_values(s: Stage, effective: dict, item: dict | None) -> dict:
    """The values of a stage instance's parameter keys, for Snakemake's ``params`` (its rerun trigger)."""
    return {key: value_at(effective, key) for key in param_keys(s, effective, item)}


def value_at(tree: dict, key: str):
    """The value of the dotted ``key`` in a nested dict."""
    for part in key.split("."):
        tree = tree[part]
    return tree
