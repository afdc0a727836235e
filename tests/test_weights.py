"""Pretrained weights: ImageNet MiT initialisation in every file format, official checkpoints reproducing the
reference fixtures, import/export round trips and the messages for missing or mismatched weights."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from primkd.cli.weights import register
from primkd.io import DataError
from primkd.models import (
    MIT_VARIANTS,
    CheckpointMismatchError,
    build_mit,
    build_student,
    build_teacher,
    cmx_to_official,
    read_mit_pretrained,
    teacher_to_official,
)
from primkd.models.io import export_safetensors, load_exported, load_model
from primkd.pretrained import resolve_pretrained
from primkd.weights import (
    import_official,
    import_teacher,
    init_from_imagenet,
    load_official_student,
    read_teacher,
)

from fake_data import save_released

TOLERANCE = 1e-4  # max|ours − ref| <= TOLERANCE · max|ref| per tensor (fixtures/README.md)
ALIGNERS = {f"decode_head.align_loss{k}.{p}": torch.ones(2) for k in range(1, 5) for p in ("weight", "bias")}


def _rel_error(ours: Tensor | list[Tensor], ref: Tensor | list[Tensor]) -> float:
    if isinstance(ref, list):
        return max(_rel_error(o, r) for o, r in zip(ours, ref, strict=True))
    assert ours.shape == ref.shape
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _mit_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """MiT settings (sizes and LayerNorm eps) from a fixture's ``config``."""
    ln = cfg["layernorm_eps"]
    return dict(embed_dims=cfg["embed_dims"], num_heads=cfg["num_heads"], depths=cfg["depths"],
                sr_ratios=cfg["sr_ratios"], mlp_ratios=cfg["mlp_ratios"], qkv_bias=cfg["qkv_bias"],
                patch_norm_eps=ln["patch_embed_norm"], sr_norm_eps=ln["attention_spatial_reduction_norm"],
                block_norm_eps=ln["block_norm1_norm2"],
                stage_norm_eps=next(v for k, v in ln.items() if k.startswith("stage_output_norm")))


def _state_copy(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same_state(module: nn.Module, expected: dict[str, Tensor]) -> bool:
    state = module.state_dict()
    return state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())


# ---------------------------------------------------------------------------------------------------------------
# ImageNet initialisation
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One random mit_tiny encoder written in every supported format, and the tensors of its HF file."""
    import transformers  # the [test] extra installs it: a missing package fails here instead of skipping
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("imagenet")
    v = MIT_VARIANTS["mit_tiny"]
    config = transformers.SegformerConfig(depths=list(v["depths"]), hidden_sizes=list(v["embed_dims"]),
                                          num_attention_heads=list(v["num_heads"]), sr_ratios=list(v["sr_ratios"]),
                                          mlp_ratios=list(v["mlp_ratios"]))
    torch.manual_seed(0)
    hf = transformers.SegformerModel(config)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(root / "mit-tiny")  # transformers 4 names on disk: encoder.block.0.0.attention.self.key...
    saved = load_file(root / "mit-tiny" / "model.safetensors")
    torch.save({**{f"segformer.{k}": t for k, t in saved.items()}, "classifier.weight": torch.ones(10, 96),
                "classifier.bias": torch.zeros(10)}, root / "pytorch_model.bin")  # as nvidia/mit-bX on the Hub
    torch.save(hf.state_dict(), root / "hf_v5_names.pth")  # transformers 5 in-memory names: stages.0.blocks...
    expected = read_mit_pretrained(root / "mit-tiny")
    official = teacher_to_official({f"encoder.{k}": t for k, t in expected.items()})
    release = {k.removeprefix("backbone."): t for k, t in official.items()}
    torch.save({**release, "head.weight": torch.ones(10, 96), "head.bias": torch.zeros(10)}, root / "mit_tiny.pth")
    files = {"segformer_pth": root / "mit_tiny.pth", "hf_folder": root / "mit-tiny",
             "hf_bin": root / "pytorch_model.bin", "hf_v5": root / "hf_v5_names.pth"}
    return {"files": files, "expected": expected, "hf": saved}


def test_imagenet_reference_tensors_by_hand(imagenet_files: dict[str, Any]) -> None:
    """The expected encoder tensors are the HF file's, with key and value rows stacked into kv (k first)."""
    hf, ours = imagenet_files["hf"], imagenet_files["expected"]
    attn = "encoder.block.2.0.attention.self."
    assert torch.equal(ours["stages.2.blocks.0.attn.kv.weight"],
                       torch.cat([hf[attn + "key.weight"], hf[attn + "value.weight"]]))
    assert torch.equal(ours["stages.0.patch_embed.proj.weight"], hf["encoder.patch_embeddings.0.proj.weight"])
    assert torch.equal(ours["stages.3.norm.bias"], hf["encoder.layer_norm.3.bias"])
    assert torch.equal(ours["stages.1.blocks.0.mlp.fc2.weight"], hf["encoder.block.1.0.mlp.dense2.weight"])


@pytest.mark.parametrize("fmt", ["segformer_pth", "hf_folder", "hf_bin", "hf_v5"])
def test_imagenet_init_student_both_branches(imagenet_files: dict[str, Any], fmt: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(1)
    model = build_student("mit_tiny", 5, decoder_embed_dim=16)
    others = {name: _state_copy(getattr(model, name)) for name in ("frms", "ffms", "decoder")}
    with caplog.at_level(logging.INFO):
        report = init_from_imagenet(model, imagenet_files["files"][fmt])
    expected = imagenet_files["expected"]
    assert _same_state(model.encoder_rgb, expected) and _same_state(model.encoder_modal, expected)
    assert all(_same_state(getattr(model, name), state) for name, state in others.items())
    assert report["loaded"] == ["encoder_rgb", "encoder_modal"] and report["fresh"] == ["frms", "ffms", "decoder"]
    first = [enc.stages[0].patch_embed.proj.weight for enc in (model.encoder_rgb, model.encoder_modal)]
    assert first[0].data_ptr() != first[1].data_ptr()  # separate copies: training one branch leaves the other alone
    if fmt in ("segformer_pth", "hf_bin"):
        assert ("head." if fmt == "segformer_pth" else "classifier.") in caplog.text  # the dropped head is reported


@pytest.mark.parametrize("fmt", ["segformer_pth", "hf_folder"])
def test_imagenet_init_teacher(imagenet_files: dict[str, Any], fmt: str) -> None:
    model = build_teacher("mit_tiny", 5, decoder_embed_dim=16)
    decoder = _state_copy(model.decoder)
    assert init_from_imagenet(model, imagenet_files["files"][fmt])["loaded"] == ["encoder"]
    assert _same_state(model.encoder, imagenet_files["expected"]) and _same_state(model.decoder, decoder)


def test_imagenet_wrong_variant_names_both(tmp_path: Path) -> None:
    """B2 weights offered to B4 models fail before loading anything, naming both variants."""
    with torch.device("meta"):
        b2 = build_mit("mit_b2").state_dict()
        student, teacher = build_student("mit_b4", 40), build_teacher("mit_b4", 40)
    shapes_only = {f"encoder.{k}": torch.zeros(()).expand(v.shape) for k, v in b2.items()}  # stride 0: tiny file
    release = {k.removeprefix("backbone."): t for k, t in teacher_to_official(shapes_only).items()}
    torch.save(release, tmp_path / "mit_b2.pth")
    for model in (student, teacher):
        with pytest.raises(CheckpointMismatchError, match=r"(?s)mit_b2\.pth.*weights: .*= mit_b2.*model: .*= mit_b4"):
            init_from_imagenet(model, tmp_path / "mit_b2.pth")


def test_imagenet_extra_tensor_is_reported(imagenet_files: dict[str, Any], tmp_path: Path) -> None:
    """Anything besides the classifier head that the encoder has no place for is an error, not silently dropped."""
    sd = torch.load(imagenet_files["files"]["segformer_pth"], weights_only=True)
    torch.save({**sd, "pos_embed": torch.zeros(3)}, tmp_path / "odd.pth")
    with pytest.raises(KeyError, match="pos_embed"):
        init_from_imagenet(build_teacher("mit_tiny", 5, 16), tmp_path / "odd.pth")


def test_resolve_pretrained(tmp_path: Path) -> None:
    assert resolve_pretrained("none", "mit_b2", tmp_path) is None
    with pytest.raises(DataError) as err:
        resolve_pretrained("imagenet", "mit_b2", tmp_path / "pretrained")
    message = str(err.value)
    assert "drive.google.com" in message and "https://huggingface.co/nvidia/mit-b2" in message
    assert str(tmp_path / "pretrained" / "mit_b2.pth") in message and "none" in message
    (tmp_path / "mit-b4").mkdir()
    with pytest.raises(DataError, match="mit_b4"):  # an HF folder without weight files does not count
        resolve_pretrained("imagenet", "mit_b4", tmp_path)
    (tmp_path / "mit-b4" / "model.safetensors").write_bytes(b"")
    assert resolve_pretrained("imagenet", "mit_b4", tmp_path) == tmp_path / "mit-b4"
    (tmp_path / "mit_b4.pth").write_bytes(b"")
    assert resolve_pretrained("imagenet", "mit_b4", tmp_path) == tmp_path / "mit_b4.pth"  # the release file first
    assert resolve_pretrained(str(tmp_path / "mit_b4.pth"), "mit_b4", "unused") == tmp_path / "mit_b4.pth"
    with pytest.raises(DataError, match=r"(?s)elsewhere\.pth not found.*huggingface\.co/nvidia/mit-b0"):
        resolve_pretrained(str(tmp_path / "elsewhere.pth"), "mit_b0", tmp_path)
    with pytest.raises(DataError, match="no ImageNet weights exist for the MiT variant 'mit_nano'"):
        resolve_pretrained("imagenet", "mit_nano", tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------------

def _official_checkpoint(path: Path, sd: dict[str, Tensor], wrapped: bool) -> Path:
    """Save ``sd`` as the official engines do (``{"model": …}`` with a DDP prefix and optimizer state) or bare."""
    if wrapped:
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"state": {}, "param_groups": []},
                    "epoch": 500, "iteration": 49700}, path)
    else:
        torch.save(dict(sd), path)
    return path


@pytest.mark.parametrize("wrapped", [True, False])
def test_official_student_reproduces_fixture(cmx_fixture: dict[str, Any], tmp_path: Path, wrapped: bool,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A PrimKD-style student checkpoint (CMX weights + aligners) loads and reproduces the official outputs."""
    cfg, outputs = cmx_fixture["config"], cmx_fixture["outputs"]
    path = _official_checkpoint(tmp_path / "student.pth", {**cmx_fixture["state_dict"], **ALIGNERS}, wrapped)
    kwargs = dict(variant=_mit_settings(cfg), num_classes=cfg["num_classes"],
                  decoder_embed_dim=cfg["decoder_embed_dim"])
    with caplog.at_level(logging.INFO):
        train_eps = load_official_student(path, decoder_bn_eps=cfg["batchnorm_eps"]["decoder_linear_fuse"], **kwargs)
    assert "8 entries" in caplog.text and "decode_head.align_loss*" in caplog.text
    eval_eps = load_official_student(path, **kwargs)  # default: the official evaluation's 1e-5
    assert not train_eps.training and not eval_eps.training
    with torch.no_grad():
        assert _rel_error(train_eps(**cmx_fixture["inputs"])["logits"], outputs["logits"]) <= TOLERANCE
        logits = eval_eps(**cmx_fixture["inputs"])["logits"]
    assert _rel_error(logits, outputs["logits_decoder_bn_eps_1e-5"]) <= TOLERANCE


def test_official_teacher_reproduces_fixture(teacher_fixture: dict[str, Any], tmp_path: Path) -> None:
    cfg, outputs = teacher_fixture["config"], teacher_fixture["outputs"]
    path = _official_checkpoint(tmp_path / "nyu-rgb.pth", teacher_fixture["state_dict"], wrapped=True)
    import_official(path, "teacher", _mit_settings(cfg), cfg["num_classes"], tmp_path / "teacher.pt",
                    decoder_embed_dim=cfg["decoder_embed_dim"])
    model, meta = load_model(tmp_path / "teacher.pt")
    assert meta["inputs"] == ["rgb"] and meta["arch"]["decoder_bn_eps"] == 1e-5  # the teacher's official eps
    with torch.no_grad():
        out = model(teacher_fixture["inputs"]["rgb"])
    assert _rel_error(out["logits"], outputs["logits"]) <= TOLERANCE
    assert _rel_error(out["features"], outputs["features"]) <= TOLERANCE


def test_official_checkpoint_of_the_wrong_kind(cmx_fixture: dict[str, Any], teacher_fixture: dict[str, Any],
                                               tmp_path: Path) -> None:
    cfg = cmx_fixture["config"]
    student = _official_checkpoint(tmp_path / "cmx.pth", cmx_fixture["state_dict"], wrapped=True)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)cmx\.pth.*backbone\.extra_"):
        import_official(student, "teacher", _mit_settings(cfg), cfg["num_classes"], tmp_path / "t.pt",
                        decoder_embed_dim=32)
    teacher = _official_checkpoint(tmp_path / "rgb.pth", teacher_fixture["state_dict"], wrapped=False)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)rgb\.pth.*missing: encoder_modal\."):
        load_official_student(teacher, _mit_settings(cfg), cfg["num_classes"], decoder_embed_dim=32)
    with pytest.raises(CheckpointMismatchError, match=r"decoder\.classifier\.bias: weights \(5,\) vs model \(40,\)"):
        load_official_student(student, _mit_settings(cfg), 40, decoder_embed_dim=32)
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"broken\.pth: cannot read"):
        load_official_student(tmp_path / "broken.pth", "mit_tiny", 5)


def test_import_and_export_round_trip(cmx_fixture: dict[str, Any], tmp_path: Path) -> None:
    """Official checkpoint → model file (BGR recorded) → safetensors export: the same network at every step."""
    cfg = cmx_fixture["config"]
    path = _official_checkpoint(tmp_path / "cmx.pth", {**cmx_fixture["state_dict"], **ALIGNERS}, wrapped=True)
    classes = [f"class{i}" for i in range(cfg["num_classes"])]
    import_official(path, "student", _mit_settings(cfg), cfg["num_classes"], tmp_path / "model.pt",
                    decoder_embed_dim=cfg["decoder_embed_dim"], classes=classes)
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["inputs"] == ["rgb", "modal"] and meta["info"]["bgr"] is True
    assert meta["arch"]["kind"] == "student" and meta["arch"]["decoder_bn_eps"] == 1e-5
    with torch.no_grad():
        logits = model(**cmx_fixture["inputs"])["logits"]
    assert _rel_error(logits, cmx_fixture["outputs"]["logits_decoder_bn_eps_1e-5"]) <= TOLERANCE

    export_safetensors(tmp_path / "model.pt", tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [".primkd-output", "config.json",
                                                                        "model.safetensors"]
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert (config["inputs"], config["bgr"], config["classes"]) == (["rgb", "modal"], True, classes)
    exported, exported_meta = load_exported(tmp_path / "export")
    assert exported_meta["inputs"] == meta["inputs"] and exported_meta["info"]["bgr"] is True
    assert exported_meta["arch"] == meta["arch"]
    with torch.no_grad():
        assert torch.equal(exported(**cmx_fixture["inputs"])["logits"], logits)
    with pytest.raises(DataError, match=r"config\.json: file not found"):
        load_exported(tmp_path)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="primkd")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.log is None  # cli.main reads it before dispatching
    args.func(args)


def test_cli_import_official_and_export(tmp_path: Path) -> None:
    """The sub-commands convert a teacher checkpoint (RGB order kept with --no-bgr) and export it."""
    torch.manual_seed(2)
    teacher = build_teacher("mit_tiny", 3, decoder_embed_dim=16).eval()
    _official_checkpoint(tmp_path / "t.pth", teacher_to_official(teacher.state_dict()), wrapped=True)
    _cli(["import-official", "--checkpoint", str(tmp_path / "t.pth"), "--kind", "teacher", "--variant", "mit_tiny",
          "--num-classes", "3", "--decoder-embed-dim", "16", "--no-bgr", "--out", str(tmp_path / "t.pt")])
    _cli(["export", "--model", str(tmp_path / "t.pt"), "--out", str(tmp_path / "t_export")])
    model, meta = load_exported(tmp_path / "t_export")
    assert meta["inputs"] == ["rgb"] and meta["info"]["bgr"] is False and meta["arch"]["decoder_bn_eps"] == 1e-5
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        teacher.decoder.fuse_bn.eps = 1e-5  # both were built with the teacher default
        assert torch.equal(model(x)["logits"], teacher(x)["logits"])
    student = build_student("mit_tiny", 3, decoder_embed_dim=16)
    _official_checkpoint(tmp_path / "s.pth", cmx_to_official(student.state_dict()), wrapped=False)
    with pytest.raises(CheckpointMismatchError, match="mit_tiny"):
        _cli(["import-official", "--checkpoint", str(tmp_path / "s.pth"), "--kind", "student", "--variant",
              "mit_nano", "--num-classes", "3", "--decoder-embed-dim", "16", "--out", str(tmp_path / "s.pt")])
    assert not (tmp_path / "s.pt").exists()


def test_export_out_never_deletes_what_it_did_not_write(tmp_path: Path, monkeypatch, capsys) -> None:
    """`primkd export --out DIR` into a folder holding other files refuses in one line and leaves them; `--out .`
    likewise; its own earlier export is replaced, readable under the user's umask."""
    from primkd import cli
    from primkd.models.io import save_model

    model = tmp_path / "model.pt"
    arch = {"kind": "teacher", "variant": "mit_tiny", "num_classes": 3, "decoder_embed_dim": 16,
            "drop_path_rate": 0.0, "decoder_bn_eps": 1e-3}
    save_model(model, build_teacher("mit_tiny", 3, decoder_embed_dim=16), arch, ["rgb"], {"run": "teacher_rgb"})
    out = tmp_path / "thesis"
    (out / "sub").mkdir(parents=True)
    (out / "precious.txt").write_text("mine")
    (out / "sub" / "thesis.tex").write_text("mine too")
    monkeypatch.chdir(tmp_path)
    for target, message in [(out, f"{out}: is not a folder primkd wrote (precious.txt, sub/thesis.tex)"),
                            (Path("."), ".: is the current folder or one that holds it")]:
        with pytest.raises(SystemExit) as info:
            cli.main(["export", "--model", str(model), "--out", str(target)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in err and f"ERROR primkd: {message}" in err
    assert (out / "precious.txt").read_text() == "mine" and (out / "sub" / "thesis.tex").read_text() == "mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "thesis"]
    old = os.umask(0o022)
    try:
        for _ in range(2):  # the second export replaces the first: its own folder
            cli.main(["export", "--model", str(model), "--out", str(tmp_path / "export")])
    finally:
        os.umask(old)
    assert (tmp_path / "export" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_import_official_refuses_an_absurd_number_of_classes(tmp_path: Path, capsys) -> None:
    from primkd import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["import-official", "--checkpoint", str(tmp_path / "x.pth"), "--kind", "student", "--variant",
                  "mit_b2", "--num-classes", "1000000000", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "ERROR primkd: --num-classes 1000000000: a model predicts 1 to 255 classes (NYU 40, SUN-RGBD 37)" in err


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_cli_imports_the_released_file_formats(tmp_path: Path, kind: str) -> None:
    """PrimKD's nyu-rgb.pth and CMX's NYU model as their engines save them (official names, AdamW state, epoch):
    `primkd import-official` with its defaults reads kind, variant, classes and decoder width from the file, records
    BGR input and reproduces the network."""
    torch.manual_seed(3)
    build = build_teacher if kind == "teacher" else build_student
    model = build("mit_tiny", 3, decoder_embed_dim=16, decoder_bn_eps=1e-5)  # the official evaluation's eps
    with torch.no_grad():  # running statistics that eval-mode BatchNorm must read from the file
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    path = save_released(tmp_path / ("nyu-rgb.pth" if kind == "teacher" else "NYU-MiT-B2.pth"), model.eval())
    _cli(["import-official", "--checkpoint", str(path), "--out", str(tmp_path / "model.pt")])
    imported, meta = load_model(tmp_path / "model.pt")
    assert meta["info"]["bgr"] is True and meta["info"]["source"] == str(path)
    assert (meta["arch"]["kind"], meta["arch"]["variant"], meta["arch"]["num_classes"],
            meta["arch"]["decoder_embed_dim"]) == (kind, "mit_tiny", 3, 16)
    assert meta["inputs"] == (["rgb"] if kind == "teacher" else ["rgb", "modal"])
    inputs = [torch.randn(2, 3, 64, 64) for _ in meta["inputs"]]
    with torch.no_grad():
        assert torch.equal(imported(*inputs)["logits"], model(*inputs)["logits"])


def test_an_encoder_of_no_known_variant_or_a_foreign_file_is_named(tmp_path: Path) -> None:
    sd = teacher_to_official(build_teacher("mit_tiny", 3, decoder_embed_dim=16).state_dict())
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith("backbone.block4.")}}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointMismatchError, match=r"cut\.pth: an encoder of stage widths \[16, 32, 64, 96\] "
                                                      r"and depths \[2, 1, 1, 0\]"):
        _cli(["import-official", "--checkpoint", str(tmp_path / "cut.pth"), "--out", str(tmp_path / "m.pt")])
    torch.save({"model": {"conv.weight": torch.ones(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match=r"other\.pth: not an official CMX / PrimKD checkpoint"):
        _cli(["import-official", "--checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "m.pt")])
    assert not (tmp_path / "m.pt").exists()


def test_a_teacher_file_is_a_model_file_or_the_released_checkpoint(tmp_path: Path) -> None:
    """kd.teachers may name a model file or an official single-stream checkpoint; a CMX checkpoint is refused."""
    torch.manual_seed(4)
    teacher = build_teacher("mit_tiny", 3, decoder_embed_dim=16, decoder_bn_eps=1e-5).eval()
    released = save_released(tmp_path / "nyu-rgb.pth", teacher)
    import_official(released, None, None, None, tmp_path / "teacher.pt")
    x = torch.randn(1, 3, 64, 64)
    for path in (released, tmp_path / "teacher.pt"):
        model, meta = read_teacher(path)
        assert meta["inputs"] == ["rgb"] and meta["info"]["bgr"] is True and meta["arch"]["kind"] == "teacher"
        with torch.no_grad():
            assert torch.equal(model(x)["logits"], teacher(x)["logits"])
    cmx = save_released(tmp_path / "cmx.pth", build_student("mit_tiny", 3, decoder_embed_dim=16))
    with pytest.raises(DataError, match=r"cmx\.pth: an RGB-D \(CMX\) checkpoint, not a single-stream teacher"):
        read_teacher(cmx)
    with pytest.raises(DataError, match=r"absent\.pth: teacher file not found; place it there or set its "
                                        r"kd\.teachers entry to train"):
        read_teacher(tmp_path / "absent.pth")


def test_import_teacher_records_the_file_and_checks_the_classes(tmp_path: Path) -> None:
    torch.manual_seed(6)
    teacher = build_teacher("mit_tiny", 3, decoder_embed_dim=16, decoder_bn_eps=1e-5).eval()
    released = save_released(tmp_path / "nyu-rgb.pth", teacher)
    import_teacher(released, tmp_path / "model.pt", ["a", "b", "c"], {"run": "teacher_rgb"})
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["info"]["run"] == "teacher_rgb" and meta["info"]["source"] == str(released)
    assert meta["info"]["sha256"] == hashlib.sha256(released.read_bytes()).hexdigest()
    assert meta["info"]["bgr"] is True and meta["info"]["classes"] == ["a", "b", "c"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], teacher(x)["logits"])
    with pytest.raises(DataError, match=r"nyu-rgb\.pth: the teacher predicts 3 classes, the prepared dataset has 2"):
        import_teacher(released, tmp_path / "other.pt", ["a", "b"], {})
    assert not (tmp_path / "other.pt").exists()
