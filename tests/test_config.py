"""params.yaml: schema validation with messages naming the key, preset resolution, experiment overrides."""

import copy
import hashlib
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
