"""Edit and check: after each single edit, DVC and Snakemake report exactly the stale stages the stage table says.

For every file under src/primkd and every leaf key of params.yaml (smoke preset), the test changes it and compares

- DVC's ``status`` (stages whose own dependencies changed; after a params.yaml edit the effective parameters are
  written first, as `dvc repro` does with its first stage, resolve_params) with the stage instances whose code or
  files include the edited file, or whose effective parameter values (primkd.stages.effective_values) changed;
- Snakemake's dry run (``--rerun-triggers mtime params``: the jobs it would run, downstream jobs included) with
  those instances and everything downstream of them in the table's graph.

The pipeline is "run" once per tool with a stand-in ``primkd`` that writes each command's declared outputs (only
resolve_params runs for real, since the other stages' parameter dependencies are its output), so each tool records
its own state (dvc.lock, .snakemake metadata) in seconds. Both tools then decide staleness themselves, in-process
(DVC's Repo.status, Snakemake's API with a dry-run executor), which keeps a check to a fraction of a second.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from primkd import stages as ST
from primkd.config import ConfigError, effective_params, load_params, resolve

from pipeline_utils import BIN, copy_run, copy_workflow, set_param

PRESET = "smoke"
# A small grid keeps the runs short: an RGB and a depth teacher, an experiment with kd overrides, two seeds.
EXPERIMENTS = {"primkd": {"teacher": "rgb"}, "kd_teacher_depth": {"teacher": "depth"},
               "kd_pred_only": {"teacher": "rgb", "kd": {"beta": 0.0}}}
STUB = '''#!{python}
"""Stand-in for `primkd`: writes the outputs the stage table declares for this command (resolve_params runs)."""
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
if os.environ.get("PRIMKD_STUB_LOG"):  # which stages a tool ran, one command line each
    with open(os.environ["PRIMKD_STUB_LOG"], "a") as f:
        f.write(" ".join(args) + "\\n")
if args[0] == "params":
    os.execv(sys.executable, [sys.executable, "-m", "primkd", *args])
for path, folder in json.loads(Path(os.environ["PRIMKD_STUB_OUTPUTS"]).read_text())[" ".join(args)]:
    target = Path(path) / "stub.txt" if folder else Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(" ".join(args))
'''


def instances(cfg: dict) -> list[tuple[ST.Stage, str | None, str]]:
    """Every stage instance as (stage, loop item, DVC name)."""
    return [(s, item, ST.instance_name(s, item)) for s in ST.STAGES for item in ST.loop_items(s, cfg)]


def declared(cfg: dict) -> dict[str, dict]:
    """Per DVC name: the command's arguments, deps (files and paths) and outputs (path, folder), filled in."""
    out = {}
    for s, item, name in instances(cfg):
        out[name] = {"args": " ".join(ST.fill(s.cmd, PRESET, s, item).split()[1:]),
                     "dvc_args": " ".join(ST.fill(f"{s.cmd} {s.dvc_flags}", PRESET, s, item).split()[1:]),
                     "deps": {*ST.code_closure(s.entry), *s.files, *(ST.fill(d, PRESET, s, item) for d in s.deps)},
                     "outs": [(ST.fill(o.path, PRESET, s, item), o.folder) for o in s.outs]}
    return out


def downstream(names: set[str], decl: dict[str, dict]) -> set[str]:
    """``names`` and every instance that reads an output of one of them, transitively."""
    def feeds(a: str, b: str) -> bool:
        return any(d == p or d.startswith(p + "/") or p.startswith(d + "/")
                   for p, _ in decl[a]["outs"] for d in decl[b]["deps"])

    closure, todo = set(names), list(names)
    while todo:
        a = todo.pop()
        for b in decl:
            if b not in closure and feeds(a, b):
                closure.add(b)
                todo.append(b)
    return closure


def tool_env(root: Path, stub_dir: Path) -> dict:
    return dict(os.environ, PATH=f"{stub_dir}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
                PYTHONPATH=str(root / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                PRIMKD_STUB_OUTPUTS=str(stub_dir / "outputs.json"))


def run_tool(cmd: list[str], root: Path, env: dict) -> None:
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def workflow_copy(dest: Path) -> Path:
    root = copy_workflow(dest, PRESET)
    set_param(root, ["experiments"], EXPERIMENTS)
    set_param(root, ["seeds"], [0, 1])
    return root


def run_both(base: Path, dvc_root: Path, smk_root: Path) -> tuple[dict, dict[str, dict], Path]:
    """Install the stand-in `primkd` in ``base``/bin and run the whole pipeline once through DVC in ``dvc_root`` and
    through Snakemake in ``smk_root``; the resolved parameters, the declared instances and the stand-in's folder."""
    cfg = load_params(dvc_root / "params.yaml")
    decl = declared(cfg)
    stub_dir = base / "bin"
    stub_dir.mkdir()
    (stub_dir / "outputs.json").write_text(json.dumps({d["args"]: d["outs"] for d in decl.values()}))
    stub = stub_dir / "primkd"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    run_tool([str(BIN / "dvc"), "init", "--no-scm", "-q"], dvc_root, tool_env(dvc_root, stub_dir))
    run_tool([str(BIN / "dvc"), "repro", "-q"], dvc_root, tool_env(dvc_root, stub_dir))
    run_tool([str(BIN / "snakemake"), "--cores", "1", "--quiet", "all"], smk_root, tool_env(smk_root, stub_dir))
    return cfg, decl, stub_dir


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """Two copies of the workflow (each tool writes its own bookkeeping into the outputs: Snakemake a timestamp file
    in each output folder), run through DVC and through Snakemake with the stand-in."""
    base = tmp_path_factory.mktemp("staleness")
    dvc_root, smk_root = workflow_copy(base / "dvc"), workflow_copy(base / "smk")
    cfg, decl, _ = run_both(base, dvc_root, smk_root)
    assert dvc_changes(dvc_root) == UP_TO_DATE and snakemake_stale(smk_root, decl) == set()
    return {"dvc": dvc_root, "smk": smk_root, "cfg": cfg, "decl": decl}


def snakemake_stale(root: Path, decl: dict[str, dict]) -> set[str]:
    """Instances whose outputs Snakemake's dry run would (re)create."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness, RerunTrigger
    from snakemake.settings.types import DAGSettings, OutputSettings, ResourceSettings

    updated: list[str] = []
    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=root / "Snakefile",
                                    workdir=root)
            dag = workflow.dag(DAGSettings(rerun_triggers={RerunTrigger.MTIME, RerunTrigger.PARAMS}))
            dag.execute_workflow(executor="dryrun", updated_files=updated)
    finally:
        os.chdir(cwd)
    produced = {str(Path(f)) for f in updated}
    return {name for name, d in decl.items() if any(p in produced for p, _ in d["outs"])}


# Another valid value for each enumerated or free-text key (by its last name); numbers, booleans and lists are
# changed by rule (see new_value).
ENUMS = {"source": ["synthetic", "nyuv2"], "modality": ["depth", "hha"], "teacher": ["rgb", "depth"],
         "backbone": ["mit_tiny", "mit_nano"], "device": ["auto", "cpu"], "amp": ["auto", "bf16"],
         "rule": ["max", "min"], "aligner": ["multi", "single"], "kl_direction": ["teacher_student", "student_teacher"],
         "intrinsics": ["auto", "nyuv2"], "drop_path_stage2": ["linear", "constant"],
         "decoder_bias_init": ["zero", "default"], "windows": ["official", "corrected"], "checkpoint": ["last", "best"],
         "fusion_bn": ["batch", "per_image"], "ce_reduction": ["per_pixel", "per_image"]}


def new_value(key: str, value):
    """A different value for ``key`` that the schema still accepts."""
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, list):  # the last element: keeps seeds unique and crop/scales/betas in range
        return [*value[:-1], new_value(key, value[-1])]
    if name in ENUMS:
        return next(v for v in ENUMS[name] if v != value)
    if ".checksums." in f".{key}":  # "" (the published checksum) or one of the schema's two forms
        return "sha256:" + "0" * 64 if value != "sha256:" + "0" * 64 else ""
    return value + ("?edited" if value.startswith("http") else "_edited")


def value_at(raw: dict, key: str):
    for part in key.split("."):
        raw = raw[part]
    return raw


def edited(raw: dict, key: str) -> dict:
    out = copy.deepcopy(raw)
    node, parts = out, key.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = new_value(key, node[parts[-1]])
    return out


def stage_values(raw: dict) -> dict[str, dict]:
    """Per instance, the effective values of the keys it reads (what both tools compare)."""
    from primkd.config import validate

    validate(raw)
    cfg = resolve(raw)
    effective = effective_params(cfg)
    return {name: ST.effective_values(s, effective, item) for s, item, name in instances(cfg)}


NEW = "<a new stage>"


def changed_keys(before: dict, after: dict) -> dict[str, set[str]]:
    """Per instance whose values differ, the keys that changed; instances that only exist after the edit (another
    seed or experiment) as {NEW}."""
    out = {name: {NEW} for name in after if name not in before}
    for name, values in before.items():
        keys = {k for k in values if name in after and values[k] != after[name][k]}
        if keys:
            out[name] = keys
    return out


@contextmanager
def params_edit(root: Path, raw: dict):
    """params.yaml holds ``raw`` (newer than every output) inside the block; the original file and its times
    afterwards."""
    path = root / "params.yaml"
    text, times = path.read_text(), path.stat()
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.utime(path, (time.time() + 100, time.time() + 100))
    try:
        yield
    finally:
        path.write_text(text)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def write_effective(root: Path) -> None:
    """What resolve_params does (`dvc repro` runs it first): the effective parameters of the current params.yaml."""
    from primkd.cli import main

    main(["params", "--params", str(root / "params.yaml"), "--preset", PRESET,
          "--out", str(root / ST.fill(ST.EFFECTIVE_PARAMS, PRESET, ST.stage("resolve_params"))),
          "--dvc-yaml", str(root / "dvc.yaml")])


ALWAYS = "<always changed>"
# DVC's status of an up-to-date pipeline: resolve_params is always_changed (it reads the input files whose digests
# are parameters: primkd.config.input_digests), so DVC always lists it.
UP_TO_DATE = {"resolve_params": {ALWAYS}}


def dvc_changes(root: Path) -> dict[str, set[str]]:
    """DVC's status as {stage: changed dependencies}: file paths, parameter keys of the effective file, and
    :data:`ALWAYS` for an always_changed stage."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status()
    out = {}
    for name, entries in status.items():
        changed = set()
        for entry in entries:
            if entry == "always changed":
                changed.add(ALWAYS)
            for path, what in entry.get("changed deps", {}).items() if isinstance(entry, dict) else []:
                changed |= set(what) if isinstance(what, dict) else {path}
        out[name.rpartition("dvc.yaml:")[2]] = changed  # named relative to the current folder
    return out


def source_files() -> list[str]:
    package = ST.PACKAGE_DIR
    return sorted(str(p.relative_to(ST.REPO_ROOT)) for p in package.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_every_source_file_reruns_exactly_the_stages_that_run_it(workflow):
    root, decl = workflow["dvc"], workflow["decl"]
    files = source_files()
    assert len(files) > 40 and "src/primkd/report/paper.yaml" in files
    expected = {f: {name for name, d in decl.items() if f in d["deps"]} for f in files}
    # run by no stage: `python -m primkd` and `python -m primkd.stages`, the commands that are no stage (check-data,
    # infer, export, import-official, compare, check-params); the table by resolve_params only, which checks that
    # dvc.yaml's student stages match params.yaml's experiments
    assert {f for f in files if not expected[f]} == {f"src/primkd/{f}" for f in (
        "__main__.py", "stages/__main__.py", "data/check.py", "infer.py", "cli/weights.py", "cli/check.py",
        "cli/experiments.py")}
    assert {n for f in files if f.startswith("src/primkd/stages/") for n in expected[f]} == {"resolve_params"}
    # each stage depends on its own command's module: editing infer/export/import-official (cli/weights.py,
    # infer.py) or another command's module reruns no training or evaluation
    for f in ("cli/weights.py", "infer.py", "cli/report.py", "cli/check.py", "cli/experiments.py"):
        assert not {n for n in expected[f"src/primkd/{f}"] if n.startswith(("train_", "evaluate_"))}, f
    # the scene generator (a lazy import of prepare_dataset) is prepare's, not download's, whatever the source; the
    # pretrain stage renders its corpus with it
    assert expected["src/primkd/data/synthetic.py"] == {"prepare", "pretrain"}
    assert "src/primkd/engine/pretrain.py" in expected and expected["src/primkd/engine/pretrain.py"] == {"pretrain"}
    assert "download" in expected["src/primkd/data/prepare.py"]
    originals = {f: ((root / f).read_text(), (root / f).stat()) for f in files}
    try:
        # DVC names every changed dependency of each stage, so one status after editing all files attributes them.
        for f in files:
            (root / f).write_text(originals[f][0] + "\n# edited by tests/test_staleness.py\n")
        changes = dvc_changes(root)
        for f in files:
            assert {name for name, deps in changes.items() if f in deps} == expected[f], f
    finally:
        for f, (text, times) in originals.items():
            (root / f).write_text(text)
            os.utime(root / f, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert dvc_changes(root) == UP_TO_DATE
    # Snakemake's dry run lists whole chains, so each file is checked on its own (newer and with other contents:
    # Snakemake compares the checksum it recorded for a small input file, not only its time).
    root = workflow["smk"]
    for f in files:
        text, times = (root / f).read_text(), (root / f).stat()
        (root / f).write_text(text + "\n# edited by tests/test_staleness.py\n")
        os.utime(root / f, (time.time() + 100, time.time() + 100))
        try:
            assert snakemake_stale(root, decl) == downstream(expected[f], decl), f
        finally:
            (root / f).write_text(text)
            os.utime(root / f, ns=(times.st_atime_ns, times.st_mtime_ns))


def test_every_parameter_reruns_exactly_the_stages_that_read_it(workflow):
    root = workflow["dvc"]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    # every leaf but `preset` (it names the whole pipeline's paths) and the empty sections of presets (`hha: {}`)
    keys = [k for k in ST.leaf_keys(raw) if k != "preset" and value_at(raw, k) != {}]
    before = stage_values(raw)
    effect = {k: changed_keys(before, stage_values(edited(raw, k))) for k in keys}
    idle = [k for k in keys if not effect[k]]
    assert {"train.num_workers", "presets.smoke.train.num_workers", "eval.batch_size", "presets.demo.train.lr",
            "train.lr", "resources.train.gpus", "hha.workers"} <= set(idle)  # smoke sets train.lr itself
    assert {"train_teacher@rgb", "train_cmx@0", "train_cmx@1"} <= set(effect["presets.smoke.train.lr"])
    # the report matches table rows to experiments by their kd settings
    # the depth teacher's students are their own DVC stage (dvc.yaml lists each teacher's experiments)
    students = {f"{stage}@{exp}-{seed}" for stage, exp in (("train_student", "primkd"),
                                                          ("train_student_depth", "kd_teacher_depth"))
                for seed in (0, 1)}
    assert set(effect["kd.beta"]) == {"report", *students}
    # seeds [0, 1] -> [0, 2]: seed 2's trainings are new stages, the evaluations average other seeds; analyze reads
    # the lowest listed seed, which DVC cannot depend on alone, so it reruns on any change of the list
    assert effect["seeds"] == {"evaluate_cmx": {"seeds"}, "train_cmx@2": {NEW}, "report": {"seeds"},
                               "analyze": {"seeds"},
                               **{f"evaluate_student@{exp}": {"seeds"} for exp in EXPERIMENTS},
                               "train_student@primkd-2": {NEW}, "train_student@kd_pred_only-2": {NEW},
                               "train_student_depth@kd_teacher_depth-2": {NEW}}
    # another teacher moves the experiment to the other teacher's stage, whose inputs are new
    moved = effect["experiments.kd_pred_only.teacher"]
    assert moved == {f"train_student_depth@kd_pred_only-{k}": {NEW} for k in (0, 1)}
    # DVC: a changed teacher needs dvc.yaml regenerated (its groups are written out), which resolve_params demands
    teachers = [k for k in keys if k.startswith("experiments.") and k.endswith(".teacher")]
    assert len(teachers) == len(EXPERIMENTS)
    after = copy.deepcopy(raw)
    for k in teachers:
        after = edited(after, k)
    with params_edit(root, after):
        with pytest.raises(SystemExit):
            write_effective(root)
        with pytest.raises(ConfigError, match=r"train_student lists primkd, but experiments\.primkd\.teacher is depth: "
                                              r"it belongs in train_student_depth; "):
            ST.check_dvc_groups(root / "dvc.yaml", load_params(root / "params.yaml"))
    # DVC: one status per group of other edits that touch different effective keys (it names each changed key).
    groups = [[k for k in keys if not k.startswith("presets.") and k not in teachers],
              [k for k in keys if k.startswith("presets.")]]
    for group in groups:
        after = copy.deepcopy(raw)
        for k in group:
            after = edited(after, k)
        with params_edit(root, after):
            write_effective(root)
            changes = dvc_changes(root)
        write_effective(root)
        assert changes.pop("resolve_params") >= {"params.yaml"}
        expected = changed_keys(before, stage_values(after))
        for name in [n for n, keys in expected.items() if keys == {NEW}]:  # never run: DVC lists each input
            changes[name] = {NEW} if name in changes else changes.get(name)
        diff = {n: changes.get(n, set()) ^ expected.get(n, set()) for n in {*changes, *expected}}
        assert changes == expected, {n: d for n, d in diff.items() if d}
    assert dvc_changes(root) == UP_TO_DATE
    # Snakemake: every edit that changes no stage's values at once, then the others one by one.
    root = workflow["smk"]
    for batch in [idle, *([k] for k in keys if effect[k])]:
        after = copy.deepcopy(raw)
        for k in batch:
            after = edited(after, k)
        decl_after = declared(resolve(after))  # another seed or experiment: other jobs
        with params_edit(root, after):
            stale = snakemake_stale(root, decl_after)
        expected = downstream({"resolve_params", *(n for k in batch for n in effect[k])}, decl_after)
        assert stale == expected, batch


# --- Input files whose path is a parameter: the ImageNet weights, a folder source ---------------------------------

WEIGHTS, FOLDER = "inputs/mit_tiny.pth", "inputs/nyu"  # relative to the workflow copy, where both tools run
TEACHER, RELEASED_CMX = "inputs/nyu-rgb.pth", "inputs/cmx.pth"  # the RGB teacher file (kd.teachers), eval.released


def ran_stages(log: Path, decl: dict[str, dict]) -> set[str]:
    """The instances whose commands the stand-in logged (then empties the log)."""
    by_args = {d[key]: name for name, d in decl.items() for key in ("args", "dvc_args")}
    lines = log.read_text().splitlines() if log.is_file() else []
    log.unlink(missing_ok=True)
    return {by_args[line] for line in lines}


@pytest.fixture(scope="module")
def inputs_workflow(tmp_path_factory):
    """The workflow of the smoke preset initialised from a weights file and reading a folder source, both at paths
    given by parameters, run once through DVC and through Snakemake with the stand-in; each test works on copies."""
    base = tmp_path_factory.mktemp("inputs")
    roots = {tool: workflow_copy(base / tool) for tool in ("dvc", "smk")}
    for root in roots.values():
        set_param(root, ["presets", "smoke", "model", "pretrained"], WEIGHTS)
        set_param(root, ["presets", "smoke", "data", "source"], "folder")
        set_param(root, ["presets", "smoke", "data", "folder"], {"path": FOLDER})
        set_param(root, ["presets", "smoke", "kd", "teachers"], {"rgb": TEACHER})
        set_param(root, ["eval", "released"], {"teacher_rgb": TEACHER, "cmx": RELEASED_CMX})
        (root / WEIGHTS).parent.mkdir()
        (root / WEIGHTS).write_bytes(b"ImageNet weights, release 1")
        (root / TEACHER).write_bytes(b"released teacher, release 1")
        for sub in ("RGB", "Depth", "Label"):
            (root / FOLDER / sub).mkdir(parents=True)
            (root / FOLDER / sub / "0001.png").write_bytes(f"{sub} of image 1".encode())
        (root / FOLDER / "train.txt").write_text("0001\n")
    _, decl, stub_dir = run_both(base, roots["dvc"], roots["smk"])
    return {**roots, "decl": decl, "stub_dir": stub_dir}


def dvc_repro(root: Path, stub_dir: Path, decl: dict[str, dict]) -> set[str]:
    """Run `dvc repro` with the stand-in; the instances it ran."""
    log = stub_dir.parent / f"{root.name}.log"
    run_tool([str(BIN / "dvc"), "repro", "-q"], root, {**tool_env(root, stub_dir), "PRIMKD_STUB_LOG": str(log)})
    return ran_stages(log, decl)


def copies(workflow: dict, dest: Path) -> tuple[Path, Path]:
    """Copies of both finished runs, so that the edits of one test do not reach another."""
    return tuple(copy_run(workflow[tool], dest / tool) for tool in ("dvc", "smk"))


def test_replaced_imagenet_weights_rerun_the_trainings_and_nothing_before_them(inputs_workflow, tmp_path):
    decl, stub_dir = inputs_workflow["decl"], inputs_workflow["stub_dir"]
    trainings = {name for name in decl if name.startswith("train_")}
    assert len(trainings) == 2 + 2 + len(EXPERIMENTS) * 2  # teachers, CMX and students, two seeds each
    dvc_root, smk_root = copies(inputs_workflow, tmp_path)
    # unchanged weights: DVC's repro reads them again (resolve_params always runs) and runs nothing else
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params"}
    assert snakemake_stale(smk_root, decl) == set()
    for root in (dvc_root, smk_root):  # another release of the same size, at the same path
        (root / WEIGHTS).write_bytes(b"ImageNet weights, release 2")
    # the stand-in writes the same outputs again, so DVC stops after the trainings; Snakemake's dry run goes on to
    # everything downstream of them (it decides by file times)
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params", *trainings}
    assert snakemake_stale(smk_root, decl) == downstream({"resolve_params", *trainings}, decl)
    assert not {"download", "prepare", "hha"} & downstream(trainings, decl)
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params"}  # up to date again


def test_an_edited_image_of_a_folder_source_reruns_prepare(inputs_workflow, tmp_path):
    decl, stub_dir = inputs_workflow["decl"], inputs_workflow["stub_dir"]
    dvc_root, smk_root = copies(inputs_workflow, tmp_path)
    for root in (dvc_root, smk_root):
        image = root / FOLDER / "RGB" / "0001.png"
        image.write_bytes(image.read_bytes().replace(b"1", b"2"))  # one byte, same size
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params", "prepare"}  # its outputs came out the same
    assert snakemake_stale(smk_root, decl) == downstream({"resolve_params", "prepare"}, decl)
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params"}


def test_a_teacher_file_reruns_its_teacher_stage_and_its_students_only(inputs_workflow, tmp_path):
    """kd.teachers.rgb names a file: replacing it reruns train_teacher@rgb (which imports it, never trains) and the
    RGB teacher's students (their teacher's digest), and evaluate_released (it scores that file too); the depth
    teacher and its students stay; placing the released CMX file reruns evaluate_released alone."""
    decl, stub_dir = inputs_workflow["decl"], inputs_workflow["stub_dir"]
    dvc_root, smk_root = copies(inputs_workflow, tmp_path)
    for root in (dvc_root, smk_root):
        (root / TEACHER).write_bytes(b"released teacher, release 2")
    rgb_students = {f"train_student@{exp}-{seed}" for exp in ("primkd", "kd_pred_only") for seed in (0, 1)}
    ran = {"resolve_params", "train_teacher@rgb", *rgb_students, "evaluate_released"}
    assert dvc_repro(dvc_root, stub_dir, decl) == ran
    assert snakemake_stale(smk_root, decl) == downstream(ran, decl)
    assert not {"train_teacher@depth", "train_cmx@0"} & downstream(ran, decl)
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params"}
    run_tool([str(BIN / "snakemake"), "--cores", "1", "--quiet", "all"], smk_root, tool_env(smk_root, stub_dir))
    for root in (dvc_root, smk_root):
        (root / RELEASED_CMX).write_bytes(b"released CMX")
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params", "evaluate_released"}
    assert snakemake_stale(smk_root, decl) == downstream({"resolve_params", "evaluate_released"}, decl)
