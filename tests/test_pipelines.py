"""dvc.yaml and the Snakemake rules declare the same stages: same commands, inputs and outputs, all from the stage
table of primkd.stages, which dvc.yaml is generated from."""

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
    only_dvc, only_smk = set(dvc) - set(smk), set(smk) - set(dvc)
    assert not only_dvc and not only_smk, f"commands only in DVC: {only_dvc}\nonly in Snakemake: {only_smk}"
    for cmd in dvc:
        assert dvc[cmd] == smk[cmd], cmd
    assert len(dvc) >= 8 and any(f"results/{preset}/eval/primkd.json" in s["outs"] for s in dvc.values())
    assert f"results/{preset}/models/primkd/seed0" in dvc_out_stage(dvc, "--experiment primkd --seed 0")


def dvc_out_stage(stages_by_cmd: dict[str, dict], fragment: str) -> set[str]:
    """Outputs of the one stage whose command contains ``fragment``."""
    (outs,) = [s["outs"] for cmd, s in stages_by_cmd.items() if fragment in cmd]
    return outs


def test_dvc_yaml_is_generated_from_the_stage_table():
    assert (REPO / "dvc.yaml").read_text() == stages.render_dvc(REPO / "params.yaml"), (
        "dvc.yaml is out of date with src/primkd/stages.py (or params.yaml's keys, or the package's imports): "
        "run `python -m primkd.stages --write`")


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
    assert keys == fingerprint
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
    assert student == (fingerprint - {"train.seed"}) | {"experiments.kd_pred_only.teacher"} | {
        f"experiments.kd_pred_only.kd.{k}" for k in cfg["kd"]}


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
    assert needed == {"resolve_params", "download", "prepare", "hha", "train_teacher@rgb", "evaluate_teacher@rgb",
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
        cli.main(["params", "--params", str(params), "--preset", "smoke", "--out", str(out)])
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


def test_resolve_params_does_not_need_a_dvc_yaml(tmp_path):
    """Snakemake runs (or a params.yaml elsewhere) have no dvc.yaml beside params.yaml: nothing to check."""
    from primkd import cli

    params = _student_groups_changed(tmp_path)
    (tmp_path / "dvc.yaml").unlink()
    out = tmp_path / "effective.yaml"
    cli.main(["params", "--params", str(params), "--preset", "smoke", "--out", str(out)])
    assert yaml.safe_load(out.read_text())["experiments"]["kd_stage1"]["teacher"] == "depth"
