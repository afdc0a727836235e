"""params.yaml: schema validation with messages naming the key, preset resolution, experiment overrides."""

import copy
from pathlib import Path

import pytest
import yaml

from primkd.config import ConfigError, experiment_kd, load_params, resolve, validate

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
