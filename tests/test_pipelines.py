"""dvc.yaml and the Snakemake rules declare the same stages: same commands, inputs and outputs, all generated from
the stage table of primkd.stages."""

import pytest
import yaml

from primkd import stages
from primkd.config import effective_params, load_params

from pipeline_utils import REPO, copy_workflow, dvc_stages, expand_dir_deps, run, snakemake_jobs


@pytest.mark.parametrize("preset", ["demo", "nyuv2_b4"])
def test_dvc_and_snakemake_declare_the_same_stages(tmp_path, preset):
    root = copy_workflow(tmp_path, preset)
    run(["dvc", "init", "--no-scm", "-q"], root)
    smk = snakemake_jobs(root)
    dvc = expand_dir_deps(dvc_stages(root), smk)
    # resolve_params checks dvc.yaml's experiments in DVC runs only (--dvc-yaml dvc.yaml)
    flags = {s.dvc_flags for s in stages.STAGES if s.dvc_flags}
    assert flags == {"--dvc-yaml dvc.yaml"}
    dvc = {" ".join(cmd.replace(f, "") for f in flags).strip(): s for cmd, s in dvc.items()}
    dvc = {" ".join(cmd.split()): s for cmd, s in dvc.items()}
    only_dvc, only_smk = set(dvc) - set(smk), set(smk) - set(dvc)
    assert not only_dvc and not only_smk, f"commands only in DVC: {only_dvc}\nonly in Snakemake: {only_smk}"
    # The one difference: where model.pretrained names the pretrain stage's encoder (the demo), Snakemake's trainings
    # read it as a file, to run after that stage; DVC's depend on its digest (inputs.pretrained) and run after
    # resolve_params, which reads the encoder (its dependency in both tools).
    pretrained = load_params(root / "params.yaml")["model"]["pretrained"] == stages.PRETRAINED
    trainings = {cmd for cmd in smk if cmd.startswith("primkd train ")}
    assert trainings and all((stages.PRETRAINED in smk[cmd]["deps"]) == pretrained for cmd in trainings)
    for cmd in trainings:
        smk[cmd]["deps"] = smk[cmd]["deps"] - {stages.PRETRAINED}
    assert stages.PRETRAINED in dvc[next(c for c in dvc if c.startswith("primkd params "))]["deps"]
    for cmd in dvc:
        assert dvc[cmd] == smk[cmd], cmd
    assert len(dvc) >= 8 and any(f"results/{preset}/eval/primkd.json" in s["outs"] for s in dvc.values())
    assert f"results/{preset}/models/primkd/seed0" in dvc_out_stage(dvc, "--experiment primkd --seed 0")


def dvc_out_stage(stages_by_cmd: dict[str, dict], fragment: str) -> set[str]:
    """Outputs of the one stage whose command contains ``fragment``."""
    (outs,) = [s["outs"] for cmd, s in stages_by_cmd.items() if fragment in cmd]
    return outs


def test_dvc_yaml_and_the_snakemake_rules_are_generated_from_the_stage_table():
    files = stages.generated_files(REPO)
    assert {str(p.relative_to(REPO)) for p in files} == {"dvc.yaml", "pretrain/dvc.yaml", *(
        f"workflow/rules/{n}.smk" for n in ("data", "train", "evaluate", "report"))}
    for path, text in files.items():
        assert path.read_text() == text, (
            f"{path} is out of date with src/primkd/stages/table.py (or params.yaml's keys, or the package's "
            f"imports): run `python -m primkd.stages --write`")
    rules = "".join(text for path, text in files.items() if path.suffix == ".smk")
    assert sorted(line.split()[1].rstrip(":") for line in rules.splitlines() if line.startswith("rule ")) == sorted(
        s.name for s in stages.STAGES)


def test_the_stages_script_works_on_the_repository_of_the_current_folder(tmp_path, monkeypatch, capsys):
    params = _student_groups_changed(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"dvc\.yaml, workflow/rules/data\.smk, .* out of date"):
        stages.main(["--check"])
    before = (REPO / "dvc.yaml").read_text()
    stages.main(["--write"])
    assert (REPO / "dvc.yaml").read_text() == before
    assert "- kd_new" in (tmp_path / "dvc.yaml").read_text() and (tmp_path / "workflow/rules/train.smk").is_file()
    stages.main(["--check"])
    stages.check_dvc_groups(tmp_path / "dvc.yaml", load_params(params), params)


def test_every_preset_has_every_parameter_key_a_stage_lists():
    """DVC fails on a listed key the effective file lacks: every preset must yield the same keys."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    default = effective_params(load_params(REPO / "params.yaml"))
    listed = {k for s in stages.STAGES for k in stages.param_keys(s, default)}
    assert {"train.lr", "model.backbone", "seeds", "experiments.{exp}.kd.beta", "eval.flip"} <= listed
    for preset in raw["presets"]:
        effective = effective_params(load_params(REPO / "params.yaml", preset))
        for s in stages.STAGES:
            for item in stages.loop_items(s, effective):
                stages.effective_values(s, effective, item)  # looks every listed key up: a missing one raises KeyError


def test_code_dependencies_are_the_import_closure_of_the_command():
    src = "src/primkd/"
    prepare = set(stages.code_closure("primkd.cli.pipeline:cmd_prepare"))
    train = set(stages.code_closure("primkd.cli.pipeline:cmd_train"))
    evaluate = set(stages.code_closure("primkd.cli.pipeline:cmd_evaluate"))
    assert {src + "data/synthetic.py", src + "data/prepare.py", src + "cli/pipeline.py", src + "config.py"} <= prepare
    assert src + "data/hha.py" not in prepare and src + "engine/train.py" not in prepare
    # augmentation and normalisation change every training and evaluation; the CLI and config reach every stage
    assert {src + "data/dataset.py", src + "distill/losses.py", src + "weights.py", src + "cli/__init__.py"} <= train
    assert {src + "data/dataset.py", src + "engine/metrics.py", src + "config.py"} <= evaluate
    assert src + "engine/train.py" not in evaluate  # the device helper lives in engine/runtime.py
    assert not any("analysis/" in f or "report/" in f for f in train | evaluate)
    assert src + "analysis/cka.py" in stages.code_closure("primkd.cli.report:cmd_analyze")
    # each command's own CLI module only: `primkd infer` (cli/weights.py) is not part of a training
    others = {src + f"cli/{m}.py" for m in ("weights", "report", "check", "experiments")}
    assert not others & (train | evaluate | prepare)
    assert src + "infer.py" not in train | evaluate
    # download fetches raw files; the scene generator runs in prepare (its lazy import in prepare_dataset)
    download = set(stages.code_closure("primkd.cli.pipeline:cmd_download"))
    assert src + "data/prepare.py" in download and src + "data/synthetic.py" not in download


def test_every_stage_command_runs_its_entry_through_the_dispatcher():
    """The closure of a stage starts at its entry and the module COMMANDS names: both must be what `primkd` runs."""
    import importlib

    from primkd import cli

    for s in stages.STAGES:
        argv = stages.fill(s.cmd, "demo", s, stages.loop_items(s, load_params(REPO / "params.yaml"))[0]).split()[1:]
        module, _, function = s.entry.partition(":")
        assert f"primkd.cli.{cli.COMMANDS[argv[0]]}" == module, s.name
        args = cli.build_parser(argv[0]).parse_args(argv)
        assert args.func is getattr(importlib.import_module(module), function), s.name
    assert set(cli.COMMANDS) == set(cli.build_parser()._subparsers._group_actions[0].choices)


def test_a_function_level_import_counts_only_where_the_function_is_reachable(tmp_path, monkeypatch):
    from primkd.stages import closure

    pkg = tmp_path / "primkd"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("def main():\n    build()\n\n\ndef build():\n    import importlib\n")
    (pkg / "cli" / "run.py").write_text(
        "from primkd.lib import used\n\n\ndef register(sub):\n    sub.add(cmd_a)\n    sub.add(cmd_b)\n\n\n"
        "def cmd_a(args):\n    used()\n\n\ndef cmd_b(args):\n    from primkd import other\n")
    (pkg / "lib.py").write_text("def used():\n    return helper\n\n\ndef helper():\n    from primkd import deep\n\n\n"
                                "def unused():\n    from primkd import never\n")
    for name in ("other", "deep", "never"):
        (pkg / f"{name}.py").write_text("")
    monkeypatch.setattr(closure, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(closure, "REPO_ROOT", tmp_path)
    closure._parse.cache_clear()
    closure.code_closure.cache_clear()
    try:
        found = closure.code_closure("primkd.cli.run:cmd_a")
    finally:
        closure._parse.cache_clear()
        closure.code_closure.cache_clear()
    # a function handed on as a value (helper) counts; cmd_b (registered, not called) and unused do not
    assert found == tuple(f"primkd/{f}" for f in ("__init__.py", "cli/__init__.py", "cli/run.py", "deep.py",
                                                    "lib.py"))


def test_data_stages_depend_on_no_model_or_training_code():
    """A model or engine edit must not rerun data preparation: what every stage runs (the CLI dispatch, the stage
    log, the thread plan) lives below the data layer."""
    src = "src/primkd/"
    for name in ("resolve_params", "download", "prepare", "hha"):
        deps = stages.code_closure(stages.stage(name).entry)
        assert {src + "runlog.py", src + "resources.py", src + "cli/__init__.py"} <= set(deps), name
        assert [f for f in deps if f.startswith((src + "models/", src + "engine/", src + "distill/"))] == [], name


def _settings_fingerprint(monkeypatch, cfg: dict) -> dict:
    """The checkpoint fingerprint of a teacher run under ``cfg``; the data digests (file contents) are not under test
    here and are replaced by a constant."""
    from types import SimpleNamespace

    from primkd.engine import checkpoint

    monkeypatch.setattr(checkpoint, "dataset_digest", lambda dataset: "same data")
    run = SimpleNamespace(name="teacher_rgb", kind="teacher", inputs=["rgb"], kd=None, teacher_path=None)
    data = SimpleNamespace(classes=["wall", "floor"])
    return checkpoint.run_fingerprint(cfg, run, {"variant": "mit_b0"}, data, data, None)


def test_training_depends_on_the_keys_of_its_checkpoint_fingerprint(monkeypatch):
    import copy

    from primkd.config import SECTIONS
    from primkd.engine.checkpoint import fingerprint_differences

    cfg = load_params(REPO / "params.yaml", "smoke")
    saved = _settings_fingerprint(monkeypatch, cfg)
    # the fingerprint's `data` holds the prepared files' digests: training reads those files, not the data.* keys
    fingerprint = {k for section in SECTIONS if section in saved and section != "data"
                   for k in stages.leaf_keys(saved[section], f"{section}.")}
    keys = set(stages.param_keys(stages.stage("train_teacher"), effective_params(cfg)))
    # and the fingerprint's pretrained_sha256 is the stage's inputs.pretrained (the same digest of the same weights)
    assert "pretrained_sha256" in saved
    fingerprint |= {"inputs.pretrained"}
    # kd.teachers and its file's digest decide whether the stage trains at all (or imports the file), not what
    # training computes
    assert keys - {"kd.teachers.{modality}", "inputs.teachers.{modality}"} == fingerprint
    assert "train.num_workers" not in keys and "train.checkpoint_every" not in keys and "train.lr" in keys
    # The evaluation during training (model_best.pt, eval_curve.csv) slides eval.windows over the test images: a
    # checkpoint of other windows is another run; eval.batch_size changes no score, eval.scales/flip are not read.
    assert {k for k in keys if k.startswith("eval.")} == {"eval.windows"}
    other = copy.deepcopy(cfg)
    other["eval"]["windows"] = {"official": "corrected", "corrected": "official"}[cfg["eval"]["windows"]]
    other["eval"]["batch_size"] += 1
    assert fingerprint_differences(saved, _settings_fingerprint(monkeypatch, other)) == [
        f"eval.windows: {cfg['eval']['windows']!r} → {other['eval']['windows']!r}"]
    item = {"exp": "kd_pred_only", "seed": 0}
    student = set(stages.param_keys(stages.stage("train_student"), effective_params(cfg), item))
    # a student's seed is its stage's own (in its command and outputs), not train.seed
    # and its teacher: the modality, where that teacher comes from (kd.teachers) and the digest of a teacher file
    teacher = {f"experiments.kd_pred_only.{k}" for k in ("teacher", "teacher_source", "teacher_file")}
    assert student == (fingerprint - {"train.seed"}) | teacher | {
        f"experiments.kd_pred_only.kd.{k}" for k in cfg["kd"] if k != "teachers"}


def test_evaluation_depends_on_the_training_crop_of_its_sliding_windows():
    # evaluate_run pads images to train.crop and scores larger ones by train.crop windows
    effective = effective_params(load_params(REPO / "params.yaml"))
    for name in ("evaluate_teacher", "evaluate_cmx", "evaluate_student"):
        keys = stages.param_keys(stages.stage(name), effective)
        assert {"train.crop", "eval.windows", "eval.scales", "train.bgr"} <= set(keys), name
        assert not {k for k in keys if k.startswith("train.")} - {"train.crop", "train.bgr", "train.device"}, name


def test_each_student_depends_on_its_own_teacher_and_the_demo_trains_the_rgb_teacher_only(tmp_path, monkeypatch):
    """DVC cannot look up an experiment's teacher in a matrix, so dvc.yaml holds one student stage per teacher
    (train_student: RGB, train_student_depth: depth); `make demo` (Makefile MAIN_TARGETS) must not train the depth
    teacher, which it never reads."""
    from dvc.repo import Repo

    root = copy_workflow(tmp_path, "demo")
    run(["dvc", "init", "--no-scm", "-q"], root)
    monkeypatch.chdir(root)  # DVC finds stage names relative to the current folder
    cfg = load_params(root / "params.yaml")
    models = "results/demo/models"
    students = {}
    with Repo(str(root)) as repo:
        for s in repo.index.stages:
            if s.name.startswith("train_student"):
                exp = s.name.split("@")[1].rsplit("-", 1)[0]
                students[s.name] = {d.def_path for d in s.deps if d.def_path.startswith(f"{models}/teacher_")}
                assert students[s.name] == {f"{models}/teacher_{cfg['experiments'][exp]['teacher']}/model.pt"}, s
        (line,) = [ln for ln in (REPO / "Makefile").read_text().splitlines() if ln.startswith("MAIN_TARGETS :=")]
        needed = {s.addressing for target in line.split(":=")[1].split()
                  for s in repo.stage.collect(target, with_deps=True)}
    seeds = cfg["seeds"]
    assert len(seeds) == 3 and cfg["experiments"]["kd_teacher_depth"]["teacher"] == "depth"
    assert {f"train_student@primkd-{k}" for k in seeds} | {f"train_student_depth@kd_teacher_depth-{k}"
                                                           for k in seeds} <= set(students)
    assert len(students) == len(cfg["experiments"]) * len(seeds)
    # pretrain (resolve_params reads its encoder) is checked and, up to date in a clone, not run
    assert needed == {"pretrain/dvc.yaml:pretrain", "resolve_params", "download", "prepare", "hha",
                      "train_teacher@rgb", "evaluate_teacher@rgb",
                      "evaluate_cmx", "evaluate_student@primkd", *(f"train_cmx@{k}" for k in seeds),
                      *(f"train_student@primkd-{k}" for k in seeds)}


def _student_groups_changed(tmp_path):
    """A copy of params.yaml and dvc.yaml, then params.yaml edited as `dvc exp run -S` would: kd_stage1 moves to the
    depth teacher and a new experiment appears, while dvc.yaml still lists the old groups."""
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["experiments"]["kd_stage1"]["teacher"] = "depth"
    raw["experiments"]["kd_new"] = {"teacher": "rgb"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path / "params.yaml"


def test_resolve_params_fails_in_one_line_when_dvc_yaml_groups_differ_from_params(tmp_path, capsys):
    from primkd import cli
    from primkd.config import ConfigError

    params = _student_groups_changed(tmp_path)
    message = (f"{tmp_path / 'dvc.yaml'} does not match the experiments of {params}: train_student lists kd_stage1, "
               f"but experiments.kd_stage1.teacher is depth: it belongs in train_student_depth; train_student lacks "
               f"kd_new (teacher rgb); regenerate dvc.yaml with `python -m primkd.stages --write`")
    with pytest.raises(ConfigError) as info:
        stages.check_dvc_groups(tmp_path / "dvc.yaml", load_params(params), params)
    assert str(info.value) == message
    out = tmp_path / "effective.yaml"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["params", "--params", str(params), "--preset", "smoke", "--out", str(out),
                  "--dvc-yaml", str(tmp_path / "dvc.yaml")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and f"ERROR primkd: {message}\n" in err
    assert not out.exists()
    # the regenerated file passes; an experiment that dvc.yaml lists but params.yaml lacks is named
    stages.main(["--write", "--root", str(tmp_path)])
    stages.check_dvc_groups(tmp_path / "dvc.yaml", load_params(params), params)
    raw = yaml.safe_load(params.read_text())
    for exp in ("kd_beta_1", "kd_beta_0p1"):
        del raw["experiments"][exp]
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"\.yaml: train_student lists kd_beta_0p1, kd_beta_1, not in experiments; "):
        stages.check_dvc_groups(tmp_path / "dvc.yaml", load_params(params), params)


def test_resolve_params_checks_dvc_yaml_only_for_dvc(tmp_path):
    """Snakemake runs the command without --dvc-yaml: a dvc.yaml beside params.yaml that lists other experiments
    (a Snakemake user added one) does not stop it."""
    from primkd import cli

    params = _student_groups_changed(tmp_path)
    out = tmp_path / "effective.yaml"
    cli.main(["params", "--params", str(params), "--preset", "smoke", "--out", str(out)])
    assert yaml.safe_load(out.read_text())["experiments"]["kd_stage1"]["teacher"] == "depth"
    (tmp_path / "dvc.yaml").unlink()
    cli.main(["params", "--params", str(params), "--preset", "smoke", "--out", str(out)])


def test_check_params_checks_dvc_yaml_when_there_is_one(tmp_path, capsys):
    from primkd import cli

    params = _student_groups_changed(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(["check-params", "--params", str(params)])
    assert info.value.code == 2 and "train_student lacks kd_new (teacher rgb)" in capsys.readouterr().err
    stages.main(["--write", "--root", str(tmp_path)])
    capsys.readouterr()
    cli.main(["check-params", "--params", str(params)])
    assert capsys.readouterr().out == f"{params}: valid; preset demo\n"
    # the groups match, but a stage's keys do not (a key added to params.yaml)
    raw = yaml.safe_load(params.read_text())
    raw["train"]["lr"] = 0.5  # a value: dvc.yaml lists keys, not values
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    cli.main(["check-params", "--params", str(params)])
    text = (tmp_path / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(text.replace("      - train.lr\n", "", 1))
    with pytest.raises(SystemExit):
        cli.main(["check-params", "--params", str(params)])
    assert "dvc.yaml is out of date with the stage table" in capsys.readouterr().err
    (tmp_path / "dvc.yaml").unlink()
    cli.main(["check-params", "--params", str(params)])
    assert capsys.readouterr().out == f"{params}: valid; preset demo\n"
