"""params.yaml: schema validation with messages naming the key, preset resolution, experiment overrides."""

import copy
import hashlib
import os
import shutil
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest
import yaml

from primkd.config import (
    ConfigError,
    EvalConfig,
    KDConfig,
    ModelConfig,
    TrainConfig,
    effective_params,
    experiment_kd,
    load_params,
    numbers_as_read,
    read_yaml,
    resolve,
    schema_path,
    validate,
)
from primkd.io import tree_digest
from primkd.pretrained import pretrained_digest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_are_valid_for_every_preset(raw):
    validate(raw)
    for name in raw["presets"]:
        cfg = resolve(raw, name)
        assert cfg["preset"] == name
        validate({**raw, **{k: cfg[k] for k in ("data", "hha", "model", "train", "kd", "eval")}})


def test_preset_overrides_only_the_keys_it_lists(raw):
    raw["presets"]["smoke"]["train"] = {"epochs": 3}
    cfg = resolve(raw, "smoke")
    assert cfg["train"]["epochs"] == 3
    assert cfg["train"]["lr"] == raw["train"]["lr"]
    assert cfg["kd"] == raw["kd"]


def test_paper_presets_carry_the_paper_settings(raw):
    nyu, sun = resolve(raw, "nyuv2_b4"), resolve(raw, "sunrgbd_b2")
    assert (nyu["model"]["backbone"], nyu["train"]["epochs"], nyu["train"]["lr"]) == ("mit_b4", 500, 6e-5)
    assert nyu["train"]["crop"] == [480, 640] and nyu["train"]["batch_size"] == 8
    assert (sun["model"]["backbone"], sun["train"]["epochs"], sun["train"]["lr"]) == ("mit_b2", 300, 8e-5)
    assert sun["train"]["crop"] == [530, 730]
    assert nyu["eval"]["flip"] and len(nyu["eval"]["scales"]) == 6


@pytest.mark.parametrize(
    ("edit", "key", "fragment"),
    [
        (lambda r: r["train"].update(lr=-1.0), "train.lr", "minimum"),
        (lambda r: r["kd"].update(bta=0.1), "kd", "'bta' was unexpected"),
        (lambda r: r["kd"].update(rule="median"), "kd.rule", "median"),
        (lambda r: r["presets"]["demo"]["train"].update(epochs="ten"), "presets.demo.train.epochs", "integer"),
        (lambda r: r["model"].update(backbone="mit_b9"), "model.backbone", "mit_b9"),
        (lambda r: r.pop("eval"), "<top level>", "'eval' is a required property"),
        (lambda r: r["experiments"].update(cmx={"teacher": "rgb"}), "experiments", "should not be valid"),
        (lambda r: r["experiments"].update(x={"kd": {}}), "experiments.x", "'teacher' is a required property"),
        (lambda r: r.update(seeds=[]), "seeds", "should be non-empty"),
    ],
)
def test_invalid_values_name_the_key(raw, edit, key, fragment):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(ConfigError) as info:
        validate(bad)
    message = str(info.value)
    assert f"{key}:" in message and fragment in message


def test_unknown_preset_lists_the_known_ones(raw):
    with pytest.raises(ConfigError, match=r"preset 'nyu' is not defined.*smoke"):
        resolve(raw, "nyu")


def test_experiment_overrides_kd(raw):
    raw["experiments"]["beta01"] = {"teacher": "depth", "kd": {"beta": 0.1, "rule": "min"}}
    cfg = resolve(raw)
    kd = experiment_kd(cfg, "beta01")
    assert (kd.beta, kd.rule, kd.alpha) == (0.1, "min", raw["kd"]["alpha"])
    assert kd.teacher_modality == "depth"
    assert experiment_kd(cfg, "primkd").as_dict() == {**raw["kd"], "teacher_modality": "rgb"}
    with pytest.raises(ConfigError, match="experiment 'nope'"):
        experiment_kd(cfg, "nope")


def test_load_params_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("preset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def _with_lines(tmp_path: Path, replacements: dict[str, str]) -> Path:
    """The repository's params.yaml with lines replaced textually (comments and number forms kept, as DVC does)."""
    text = (REPO / "params.yaml").read_text()
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    shutil.copytree(REPO / "workflow" / "schemas", tmp_path / "workflow" / "schemas")
    return path


@pytest.mark.parametrize(("text", "number"), [("6e-05", 6e-05), ("1e5", 1e5), ("1.0e5", 1e5), (".5", 0.5),
                                              ("-2E+1", -20.0), ("8e-5", 8e-05), ("1.5e-3", 1.5e-3)])
def test_numbers_in_every_yaml_form_are_numbers(tmp_path, text, number):
    """DVC writes `-S presets.smoke.train.lr=6e-5` as `lr: 6e-05`, which PyYAML's YAML 1.1 rules read as a string."""
    path = tmp_path / "p.yaml"
    path.write_text(f"lr: {text}\nname: '6e-05'\nn: 3\n")
    assert read_yaml(path) == {"lr": number, "name": "6e-05", "n": 3}
    assert type(read_yaml(path)["lr"]) is float


def test_a_learning_rate_as_dvc_writes_it_is_read_as_a_number_by_both_tools(tmp_path):
    path = _with_lines(tmp_path, {"train: {epochs: 2, batch_size: 4, lr: 1.0e-3,": "train: {epochs: 2, batch_size: 4, "
                                                                                  "lr: 6e-05,"})
    assert load_params(path, "smoke")["train"]["lr"] == 6e-05
    # Snakemake reads the same file with PyYAML's FullLoader (through yte): the hook gives it the numbers back.
    config = yaml.load(path.read_text(), Loader=yaml.FullLoader)
    assert config["presets"]["smoke"]["train"]["lr"] == "6e-05"
    config["preset"] = "smoke"  # as --config preset=smoke would have set it
    numbers_as_read(config, path)
    assert config["presets"]["smoke"]["train"]["lr"] == 6e-05 and config["preset"] == "smoke"
    validate(config, schema_file=schema_path(path))


def test_yaml_aliases_are_refused_in_one_line(tmp_path):
    """Nested aliases (an "alias bomb") would make check-params walk billions of nodes."""
    path = tmp_path / "params.yaml"
    path.write_text("a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n")
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert str(info.value) == (f"{path}, line 2: the alias *a repeats another node; a parameter file allows no YAML "
                               f"aliases: write the values out")


@pytest.mark.parametrize(("key", "value"), [(["train", "epochs"], 10**12), (["train", "batch_size"], 10**6),
                                            (["train", "seed"], 2**32), (["seeds"], [0, 2**40]),
                                            (["train", "crop"], [480, 10**6]), (["kd", "temperature"], 1e9)])
def test_absurd_values_are_refused_by_the_schema_naming_the_key(raw, key, value):
    node = raw
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    with pytest.raises(ConfigError, match=rf"  {'.'.join(key)}(\.1)?: .* is greater than the maximum of"):
        validate(raw)


TYPED = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig, "kd": KDConfig}


def test_typed_settings_hold_exactly_the_keys_the_schema_requires():
    # A key added to params.yaml and its schema needs its field (and comment) in the dataclass, and back.
    schema = yaml.safe_load(schema_path().read_text())
    for section, cls in TYPED.items():
        required = next(part["required"] for part in schema["properties"][section]["allOf"] if "required" in part)
        names = {f.name for f in fields(cls)} - {"teacher_modality"}
        assert names == set(required), section


def test_typed_settings_are_the_resolved_values_of_every_preset(raw):
    for name in raw["presets"]:
        cfg = resolve(raw, name)
        t, m, ev = TrainConfig.of(cfg), ModelConfig.of(cfg), EvalConfig.of(cfg)
        assert (t.epochs, t.lr, t.crop, t.betas) == (cfg["train"]["epochs"], cfg["train"]["lr"],
                                                     tuple(cfg["train"]["crop"]), tuple(cfg["train"]["betas"]))
        assert (m.backbone, ev.scales, ev.checkpoint) == (cfg["model"]["backbone"], tuple(cfg["eval"]["scales"]),
                                                          cfg["eval"]["checkpoint"])
    official = resolve(raw, "nyuv2_b4_official")
    assert TrainConfig.of(official).first_step_full_lr and ModelConfig.of(official).drop_path_stage2 == "constant"
    for name in raw["presets"]:  # the released recipe: fp32, per-image CE, per-image fusion BatchNorm; else the paper's
        t = TrainConfig.of(resolve(raw, name))
        released = ("none", "per_image", "per_image") if name.endswith("_official") else ("auto", "per_pixel", "batch")
        assert (t.amp, t.ce_reduction, t.fusion_bn) == released, name
    with pytest.raises(FrozenInstanceError):
        TrainConfig.of(official).lr = 1.0


def test_a_missing_or_unknown_settings_key_is_named_in_one_line(raw):
    cfg = resolve(raw, "smoke")
    del cfg["train"]["micro_batch"], cfg["train"]["amp"]
    cfg["train"]["lr_decay"] = 0.5
    with pytest.raises(ConfigError) as info:
        TrainConfig.of(cfg)
    message = str(info.value)
    assert "missing train.micro_batch, train.amp; unknown train.lr_decay" in message and "\n" not in message
    cfg["kd"].pop("temperature")
    with pytest.raises(ConfigError, match=r"missing kd\.temperature"):
        experiment_kd(cfg, "primkd")


def test_folder_and_url_keys_are_required_at_the_top_level(raw):
    # prepare reads them without fallbacks; a preset may still set any subset.
    bad = copy.deepcopy(raw)
    del bad["data"]["folder"]["intrinsics"], bad["data"]["urls"]["sunrgbd"]
    with pytest.raises(ConfigError) as info:
        validate(bad)
    assert "data.folder: 'intrinsics' is a required property" in str(info.value)
    assert "data.urls: 'sunrgbd' is a required property" in str(info.value)
    raw["presets"]["smoke"]["data"]["folder"] = {"path": "elsewhere"}
    validate(raw)


def _file_digest(path: Path) -> str:
    """What the checkpoint fingerprint records for a weights file: SHA-256 of "<name>\\0<sha256 of contents>\\n"."""
    inner = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(f"{path.name}\0{inner}\n".encode()).hexdigest()


def test_the_official_presets_name_the_released_teacher_and_its_digest_is_an_input(raw, tmp_path, monkeypatch):
    """kd.teachers: the official presets distil from PrimKD's released RGB teacher; the teacher stage depends on the
    file's SHA-256 (inputs.teachers), an experiment naming its own file on that file's (experiments.<name>
    .teacher_file); the other presets train their teachers."""
    monkeypatch.chdir(tmp_path)
    for name in raw["presets"]:
        cfg = resolve(raw, name)
        rgb = experiment_kd(cfg, "primkd").teacher_file
        assert rgb == {"nyuv2_b4_official": "data/released/nyu-rgb.pth",
                       "sunrgbd_b4_official": "data/released/sun-rgb.pth"}.get(name), name
        assert experiment_kd(cfg, "kd_teacher_depth").teacher_file is None  # the depth teacher is trained
    cfg = resolve(raw, "nyuv2_b4_official")
    effective = effective_params(cfg)
    assert effective["inputs"]["teachers"] == {"rgb": "missing", "depth": None}
    assert effective["experiments"]["primkd"]["teacher_file"] == "missing"
    assert effective["experiments"]["primkd"]["teacher_source"] == "data/released/nyu-rgb.pth"
    assert effective["experiments"]["kd_teacher_depth"]["teacher_source"] == "train"
    assert "teachers" not in effective["experiments"]["primkd"]["kd"]  # every experiment has the same keys
    released = tmp_path / "data" / "released" / "nyu-rgb.pth"
    released.parent.mkdir(parents=True)
    released.write_bytes(b"teacher v1")
    sha = hashlib.sha256(b"teacher v1").hexdigest()
    assert effective_params(cfg)["inputs"]["teachers"]["rgb"] == sha
    assert effective_params(cfg)["inputs"]["released"]["teacher_rgb"] == sha  # eval.released names it too
    assert effective_params(cfg)["experiments"]["primkd"]["teacher_file"] == sha
    cfg["experiments"]["mine"] = {"teacher": "rgb", "kd": {"teachers": {"rgb": "mine.pt"}}}
    (tmp_path / "mine.pt").write_bytes(b"mine")
    effective = effective_params(cfg)
    assert effective["experiments"]["mine"]["teacher_file"] == hashlib.sha256(b"mine").hexdigest()
    assert effective["inputs"]["teachers"]["rgb"] == sha  # the preset's, which the teacher stage imports


def test_effective_inputs_hold_the_imagenet_weights_digest(raw, tmp_path, monkeypatch):
    """inputs.pretrained: the training stages' dependency on the weights file model.pretrained resolves to."""
    monkeypatch.chdir(tmp_path)  # relative paths are taken from where the stage runs
    trained, released = {"rgb": None, "depth": None}, {"teacher_rgb": "missing", "cmx": "missing"}
    assert effective_params(resolve(raw, "smoke"))["inputs"] == {"pretrained": None, "folder": None,
                                                                 "teachers": trained, "released": released}
    cfg = resolve(raw, "nyuv2_b2")  # imagenet, data/pretrained/mit_b2.pth or .../mit-b2/
    # not downloaded yet: the parameter step still works (training stops with the download hint)
    assert effective_params(cfg)["inputs"] == {"pretrained": "missing", "folder": None, "teachers": trained,
                                               "released": released}
    weights = tmp_path / "data" / "pretrained" / "mit_b2.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights v1")
    first = effective_params(cfg)["inputs"]["pretrained"]
    assert first == _file_digest(weights) == pretrained_digest(weights)
    weights.write_bytes(b"weights v2")  # replaced by a file of the same size
    assert effective_params(cfg)["inputs"]["pretrained"] not in (first, None, "missing")
    weights.write_bytes(b"weights v1")
    assert effective_params(cfg)["inputs"]["pretrained"] == first
    # a Hugging Face folder: every file of it (config.json too, as the checkpoint fingerprint)
    weights.unlink()
    hf = weights.parent / "mit-b2"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(b"tensors")
    (hf / "config.json").write_text("{}")
    folder = effective_params(cfg)["inputs"]["pretrained"]
    assert folder == pretrained_digest(hf) and folder not in (first, "missing")
    (hf / "config.json").write_text('{"hidden_sizes": [64]}')
    assert effective_params(cfg)["inputs"]["pretrained"] != folder
    # an explicit path, relative to the current directory
    cfg["model"]["pretrained"] = "mine.pth"
    assert effective_params(cfg)["inputs"]["pretrained"] == "missing"
    (tmp_path / "mine.pth").write_bytes(b"weights v1")
    assert effective_params(cfg)["inputs"]["pretrained"] == _file_digest(tmp_path / "mine.pth")


def test_effective_inputs_hold_the_folder_source_digest(raw, tmp_path, monkeypatch):
    """inputs.folder: prepare's dependency on the tree at data.folder.path (and a per-image intrinsics file)."""
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "nyu"
    for sub, name in (("RGB", "1.jpg"), ("Depth", "1.png"), ("Label", "1.png")):
        (src / sub).mkdir(parents=True)
        (src / sub / name).write_bytes(f"{sub} pixels".encode())
    (src / "train.txt").write_text("1\n")
    (src / "test.txt").write_text("1\n")
    cfg = resolve(raw, "smoke")
    cfg["data"]["source"] = "folder"
    cfg["data"]["folder"]["path"] = "nyu"
    first = effective_params(cfg)["inputs"]
    assert first["pretrained"] is None and first["folder"] == hashlib.sha256(tree_digest(src).encode()).hexdigest()
    (src / "RGB" / "1.jpg").write_bytes(b"RGB pixelz")
    edited = effective_params(cfg)["inputs"]["folder"]
    assert edited != first["folder"]
    (src / "RGB" / "1.jpg").write_bytes(b"RGB pixels")
    assert effective_params(cfg)["inputs"]["folder"] == first["folder"]
    # the same images elsewhere: the same digest (the path itself is data.folder.path, a key of its own)
    shutil.copytree(src, tmp_path / "moved")
    cfg["data"]["folder"]["path"] = str(tmp_path / "moved")
    assert effective_params(cfg)["inputs"]["folder"] == first["folder"]
    cameras = tmp_path / "cameras.json"
    cameras.write_text('{"1": {"fx": 500, "fy": 500, "cx": 320, "cy": 240}}')
    cfg["data"]["folder"]["intrinsics_file"] = "cameras.json"
    with_cameras = effective_params(cfg)["inputs"]["folder"]
    assert with_cameras not in (first["folder"], "missing")
    cameras.write_text('{"1": {"fx": 501, "fy": 500, "cx": 320, "cy": 240}}')
    assert effective_params(cfg)["inputs"]["folder"] not in (with_cameras, first["folder"])
    cfg["data"]["folder"]["path"] = "not_there"  # prepare names it; the parameter step does not fail
    assert effective_params(cfg)["inputs"]["folder"] == "missing"
    cfg["data"]["source"] = "synthetic"  # another source: the folder is not read
    assert effective_params(cfg)["inputs"]["folder"] is None


@pytest.mark.integration
def test_dvc_exp_run_with_a_small_learning_rate_trains(tmp_path, monkeypatch):
    """`dvc exp run -S presets.smoke.train.lr=6e-5` writes `lr: 6e-05` into params.yaml; every stage reads it as the
    number it is, and the RGB teacher trains with it."""
    from primkd.engine.checkpoint import latest_checkpoint

    from pipeline_utils import copy_workflow, run

    root = copy_workflow(tmp_path / "repo", preset="smoke")
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@t"}.items():
        monkeypatch.setenv(key, value)
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "smoke"], root)
    run(["dvc", "exp", "run", "-S", "presets.smoke.train.lr=6e-5", "train_teacher@rgb"], root)
    assert "lr: 6e-05" in (root / "params.yaml").read_text()  # the form DVC writes
    effective = read_yaml(root / "results" / "smoke" / "effective_params.yaml")
    assert effective["train"]["lr"] == 6e-05
    assert (root / "results" / "smoke" / "models" / "teacher_rgb" / "model.pt").is_file()
    _, blob = latest_checkpoint(root / "results" / "smoke" / "checkpoints" / "teacher_rgb")
    assert blob["complete"] and blob["fingerprint"]["train"]["lr"] == 6e-05


def test_a_top_level_edit_that_the_preset_shadows_is_warned_about_once(tmp_path, capsys):
    """`dvc exp run -S train.epochs=3` under a preset that sets train.epochs changes nothing: `primkd params` and
    `primkd check-params` say so, naming the key to use instead; a key the preset does not set is not warned about."""
    import subprocess

    from primkd import cli

    path = _with_lines(tmp_path, {})
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for cmd in (["git", "init", "-q"], ["git", "add", "params.yaml"], ["git", "commit", "-qm", "params"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    smoke = yaml.safe_load(path.read_text())["presets"]["smoke"]
    text = path.read_text().replace("\n  epochs: ", "\n  epochs: 3  # was ", 1)
    path.write_text(text.replace("\n  weight_decay: ", "\n  weight_decay: 0.02  # was ", 1))  # not in the preset
    assert load_params(path, "smoke")["train"]["epochs"] == smoke["train"]["epochs"]
    warning = (f"WARNING primkd: {path}: train.epochs was changed to 3, but preset smoke sets it to "
               f"{smoke['train']['epochs']}, which wins; change presets.smoke.train.epochs instead (e.g. dvc exp run "
               f"-S presets.smoke.train.epochs=...)")
    for argv in (["params", "--out", str(tmp_path / "effective.yaml")], ["check-params"]):
        capsys.readouterr()
        cli.main([*argv, "--params", str(path), "--preset", "smoke"])
        err = capsys.readouterr().err
        assert err.count("was changed to") == 1 and warning in err, err
