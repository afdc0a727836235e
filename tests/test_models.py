"""Networks: parity with the official CMX / PrimKD fixtures and with transformers' SegFormer, sizes, gradients and
weight-name conversion."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from primkd.io import DataError
from primkd.models import (
    MIT_VARIANTS,
    CheckpointMismatchError,
    FusionConfig,
    build_mit,
    build_student,
    build_teacher,
    cmx_from_official,
    cmx_to_official,
    count_macs,
    count_parameters,
    load_state_dict_checked,
    measure_complexity,
    mit_config,
    mit_from_hf,
    read_mit_pretrained,
    strip_prefix,
    teacher_from_official,
    teacher_to_official,
)
from primkd.models.decoder import MLPDecoder
from primkd.models.fusion import PerImageBatchNorm2d, per_image_batchnorm
from primkd.models.ops import pointwise

TOLERANCE = 1e-4  # max|ours − ref| <= TOLERANCE · max|ref| per tensor (fixtures/README.md)


def _rel_error(ours: Tensor | list[Tensor], ref: Tensor | list[Tensor]) -> float:
    """Largest per-tensor error relative to the reference's scale (lists: worst tensor)."""
    if isinstance(ref, list):
        assert len(ours) == len(ref)
        return max(_rel_error(o, r) for o, r in zip(ours, ref))
    assert ours.shape == ref.shape
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _mit_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """MixVisionTransformer settings, LayerNorm eps included, read from a fixture's ``config``."""
    assert cfg["qk_scale"] is None, "the fixture sets an explicit attention scale, which MiT here does not support"
    embeds = [cfg["patch_embed"]["stage1"], *[cfg["patch_embed"]["stages2to4"]] * 3]
    assert all(pe["padding"] == pe["kernel"] // 2 for pe in embeds)
    ln = cfg["layernorm_eps"]
    return dict(
        embed_dims=cfg["embed_dims"], num_heads=cfg["num_heads"], depths=cfg["depths"], sr_ratios=cfg["sr_ratios"],
        mlp_ratios=cfg["mlp_ratios"], qkv_bias=cfg["qkv_bias"], patch_sizes=[pe["kernel"] for pe in embeds],
        strides=[pe["stride"] for pe in embeds], patch_norm_eps=ln["patch_embed_norm"],
        sr_norm_eps=ln["attention_spatial_reduction_norm"], block_norm_eps=ln["block_norm1_norm2"],
        stage_norm_eps=next(v for k, v in ln.items() if k.startswith("stage_output_norm")),
    )


def _check_norm_eps(model: nn.Module, cfg: dict[str, Any], from_official) -> None:
    """Every norm the fixture lists has the same type and eps here, and the model has no other norms."""
    for name, info in cfg["norm_eps_by_module"].items():
        ours = next(iter(from_official({f"{name}.weight": torch.empty(0)}))).removesuffix(".weight")
        module = model.get_submodule(ours)
        assert (type(module).__name__, module.eps) == (info["type"], info["eps"]), name
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm | nn.BatchNorm2d)]
    assert len(norms) == len(cfg["norm_eps_by_module"])


@pytest.fixture(scope="module")
def cmx_outputs(cmx_fixture: dict[str, Any]) -> dict[str, Any]:
    """Our CMX, built from the fixture's config and loaded with its weights, run on its inputs."""
    cfg = cmx_fixture["config"]
    fusion = FusionConfig(
        frm_reduction=cfg["frm"]["reduction"], lambda_c=cfg["frm"]["lambda_c"], lambda_s=cfg["frm"]["lambda_s"],
        ffm_reduction=cfg["ffm"]["reduction"], ffm_num_heads=tuple(cfg["ffm"]["num_heads"]),
        ln_eps=cfg["layernorm_eps"]["ffm_crosspath_norm1_norm2"], bn_eps=cfg["batchnorm_eps"]["ffm_channel_emb"],
    )
    model = build_student(_mit_settings(cfg), cfg["num_classes"], decoder_embed_dim=cfg["decoder_embed_dim"],
                          drop_path_rate=cfg["drop_path_rate"],
                          decoder_bn_eps=cfg["batchnorm_eps"]["decoder_linear_fuse"], modal_chans=cfg["in_chans"],
                          decoder_dropout=cfg["decoder_dropout_ratio"], fusion=fusion)
    _check_norm_eps(model, cfg, cmx_from_official)
    load_state_dict_checked(model, cmx_from_official(cmx_fixture["state_dict"]), "tiny_cmx_seed0.pt")
    model.eval()
    with torch.no_grad():
        out = model(**cmx_fixture["inputs"], return_intermediates=True)
        odd = model(**cmx_fixture["extra_odd_size"]["inputs"], return_intermediates=True)
        model.decoder.fuse_bn.eps = 1e-5
        eps5 = model(**cmx_fixture["inputs"], return_intermediates=True)
    out.update({f"odd_{k}": v for k, v in odd.items()})
    out.update(logits_quarter_decoder_bn_eps_1e_5=eps5["logits_quarter"], logits_decoder_bn_eps_1e_5=eps5["logits"])
    return out


CMX_KEYS = ["stage_rgb", "stage_modal", "rectified_rgb", "rectified_modal", "fused", "logits_quarter", "logits",
            "odd_fused", "odd_logits_quarter", "odd_logits", "logits_quarter_decoder_bn_eps_1e_5",
            "logits_decoder_bn_eps_1e_5"]


@pytest.mark.parametrize("key", CMX_KEYS)
def test_cmx_matches_official(cmx_fixture: dict[str, Any], cmx_outputs: dict[str, Any], key: str) -> None:
    odd = cmx_fixture["extra_odd_size"]["outputs"]
    ref_outputs = {**cmx_fixture["outputs"], **{f"odd_{k}": v for k, v in odd.items()}}
    ref = ref_outputs[key.replace("eps_1e_5", "eps_1e-5")]
    assert _rel_error(cmx_outputs[key], ref) <= TOLERANCE


def test_cmx_decoder_eps_is_visible(cmx_fixture: dict[str, Any], cmx_outputs: dict[str, Any]) -> None:
    """The two decoder-eps variants differ by more than the tolerance, so the parity test can tell them apart."""
    ref = cmx_fixture["outputs"]["logits"]
    assert _rel_error(cmx_outputs["logits_decoder_bn_eps_1e_5"], ref) > 10 * TOLERANCE


@pytest.fixture(scope="module")
def teacher_outputs(teacher_fixture: dict[str, Any]) -> dict[str, Any]:
    cfg = teacher_fixture["config"]
    model = build_teacher(_mit_settings(cfg), cfg["num_classes"], decoder_embed_dim=cfg["decoder_embed_dim"],
                          drop_path_rate=cfg["drop_path_rate"],
                          decoder_bn_eps=cfg["batchnorm_eps"]["decoder_linear_fuse"], in_chans=cfg["in_chans"],
                          decoder_dropout=cfg["decoder_dropout_ratio"])
    _check_norm_eps(model, cfg, teacher_from_official)
    load_state_dict_checked(model, teacher_from_official(teacher_fixture["state_dict"]), "tiny_teacher_seed0.pt")
    model.eval()
    with torch.no_grad():
        out = model(teacher_fixture["inputs"]["rgb"], return_intermediates=True)
        model.decoder.fuse_bn.eps = 1e-3
        eps3 = model(teacher_fixture["inputs"]["rgb"], return_intermediates=True)
    out.update({"logits_quarter_decoder_bn_eps_1e-3": eps3["logits_quarter"],
                "logits_decoder_bn_eps_1e-3": eps3["logits"]})
    return out


@pytest.mark.parametrize("key", ["features", "logits_quarter", "logits", "logits_quarter_decoder_bn_eps_1e-3",
                                 "logits_decoder_bn_eps_1e-3"])
def test_teacher_matches_official(teacher_fixture: dict[str, Any], teacher_outputs: dict[str, Any], key: str) -> None:
    assert _rel_error(teacher_outputs[key], teacher_fixture["outputs"][key]) <= TOLERANCE


def _hf_model(variant: str) -> nn.Module:
    """transformers' SegformerModel with the variant's sizes, eps 1e-5 everywhere, and every weight perturbed."""
    import transformers  # the [test] extra installs it: a missing package fails here instead of skipping
    v = MIT_VARIANTS[variant]
    config = transformers.SegformerConfig(
        num_channels=3, depths=list(v["depths"]), hidden_sizes=list(v["embed_dims"]),
        num_attention_heads=list(v["num_heads"]), sr_ratios=list(v["sr_ratios"]), mlp_ratios=list(v["mlp_ratios"]),
        patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], hidden_act="gelu", layer_norm_eps=1e-5, drop_path_rate=0.0)
    torch.manual_seed(0)
    model = transformers.SegformerModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial biases and norm affines, so a mis-mapped one shows
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("variant", ["mit_b0", "mit_b2"])
def test_mit_matches_transformers(variant: str, tmp_path: Path) -> None:
    hf = _hf_model(variant)
    hf.save_pretrained(tmp_path)  # files carry the transformers 4 names (segformer.encoder.* without the prefix)
    ours = build_mit({**mit_config(variant), "block_norm_eps": 1e-5, "stage_norm_eps": 1e-5}, drop_path_rate=0.0)
    ours.load_state_dict(read_mit_pretrained(tmp_path))
    ours.eval()
    in_memory = mit_from_hf({f"segformer.{k}": v for k, v in hf.state_dict().items()})  # transformers 5 names
    assert all(torch.equal(in_memory[k], v) for k, v in ours.state_dict().items())
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = list(hf(pixel_values=x, output_hidden_states=True).hidden_states)
        assert _rel_error(ours(x), ref) <= TOLERANCE


def test_mit_from_hf_splits_kv_rows() -> None:
    """``kv`` = key rows, then value rows; transformers 4 names with the ``segformer.`` prefix."""
    base = "segformer.encoder.block.1.0.attention.self."
    sd = {base + "key.weight": torch.zeros(2, 2), base + "value.weight": torch.ones(2, 2),
          base + "key.bias": torch.tensor([1.0, 2.0]), base + "value.bias": torch.tensor([3.0, 4.0]),
          "classifier.weight": torch.ones(1)}
    out = mit_from_hf(sd)
    assert sorted(out) == ["stages.1.blocks.0.attn.kv.bias", "stages.1.blocks.0.attn.kv.weight"]
    assert out["stages.1.blocks.0.attn.kv.bias"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert out["stages.1.blocks.0.attn.kv.weight"][:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_read_mit_pretrained_segformer_release(tmp_path: Path) -> None:
    """A ``mit_bX.pth``-style file (wrapped, DDP prefix, ImageNet head) reads into our names; a missing one fails."""
    encoder = build_mit("mit_tiny")
    official = {k.removeprefix("backbone."): v
                for k, v in teacher_to_official({f"encoder.{k}": v for k, v in encoder.state_dict().items()}).items()}
    assert "block1.0.mlp.dwconv.dwconv.weight" in official and "patch_embed1.proj.weight" in official
    wrapped = {"state_dict": {f"module.{k}": v for k, v in {**official, "head.weight": torch.ones(3, 96)}.items()}}
    torch.save(wrapped, tmp_path / "mit_tiny.pth")
    loaded = read_mit_pretrained(tmp_path / "mit_tiny.pth")
    assert loaded.keys() == encoder.state_dict().keys()
    with pytest.raises(DataError, match=r"mit_bX\.pth"):
        read_mit_pretrained(tmp_path / "absent.pth")


@pytest.mark.parametrize(("variant", "student", "encoder"), [("mit_b0", None, 3.32), ("mit_b2", 66.6, 24.20),
                                                            ("mit_b4", 139.9, 60.84)])
def test_parameter_counts(variant: str, student: float | None, encoder: float) -> None:
    """Encoder counts (SegFormer paper, without the ImageNet head) and CMX counts (PrimKD paper, Table 2)."""
    with torch.device("meta"):
        assert round(count_parameters(build_mit(variant)) / 1e6, 2) == encoder
        if student is not None:
            assert round(count_parameters(build_student(variant, 40)) / 1e6, 1) == student


def test_drop_path_rises_linearly() -> None:
    encoder = build_mit("mit_b0", drop_path_rate=0.1)
    blocks = [b for stage in encoder.stages for b in stage.blocks]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates == pytest.approx([0.1 * k / 7 for k in range(8)])


def _assert_all_grads_finite(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), name


def test_teacher_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_teacher("mit_tiny", 3, decoder_embed_dim=16).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2, 3, 64, 64)
    assert [f.shape[1:] for f in out["features"]] == [(16, 16, 16), (32, 8, 8), (64, 4, 4), (96, 2, 2)]
    (out["logits"].square().mean() + sum(f.mean() for f in out["features"])).backward()
    _assert_all_grads_finite(model)


def test_student_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_student("mit_tiny", 3, decoder_embed_dim=16).train()
    out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2, 3, 64, 64)
    assert [f.shape[1:] for f in out["fused"]] == [(16, 16, 16), (32, 8, 8), (64, 4, 4), (96, 2, 2)]
    out["logits"].square().mean().backward()
    _assert_all_grads_finite(model)


def _normalised(x: Tensor, dims: tuple[int, ...], bn: nn.BatchNorm2d) -> Tensor:
    """BatchNorm's training output computed by hand with the statistics over ``dims`` (biased variance)."""
    mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None]


def test_per_image_batchnorm_gives_each_image_its_own_statistics() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(1, 3, 4, 5)
    x = torch.cat([x0, 3 * x0 + 2])  # (2, 3, 4, 5): the batch's statistics are neither image's
    plain = nn.BatchNorm2d(3)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0)
        plain.bias.normal_()
    ours = per_image_batchnorm(copy.deepcopy(plain)).train()
    assert type(ours) is PerImageBatchNorm2d and ours.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        y = ours(x)
        torch.testing.assert_close(y, _normalised(x, (2, 3), plain), rtol=1e-5, atol=1e-5)
        assert (copy.deepcopy(plain).train()(x) - y).abs().max() > 0.5  # batch statistics give another output
        # running statistics from the first image only (momentum 0.1, unbiased variance), as rank 0 keeps them
        torch.testing.assert_close(ours.running_mean, 0.1 * x0.mean((0, 2, 3)))
        torch.testing.assert_close(ours.running_var, 0.9 + 0.1 * x0.var((0, 2, 3), unbiased=True))
        assert int(ours.num_batches_tracked) == 1
        ref = copy.deepcopy(plain).train()
        ref(x0)
        assert torch.equal(ours.eval()(x), ref.eval()(x))  # evaluation: the running statistics, as BatchNorm2d
    with pytest.raises(ValueError, match=r"train\.fusion_bn"):
        ours.train()(torch.randn(2, 3, 1, 1))


def test_per_image_fusion_batchnorm_and_batch_decoder_batchnorm_in_a_student() -> None:
    """With the FFMs per image (train.fusion_bn: per_image) each of their 8 BatchNorms normalises each image by its
    own statistics, while the decoder's BatchNorm normalises over the batch."""
    torch.manual_seed(0)
    model = build_student("mit_tiny", 3, decoder_embed_dim=16).train()
    per_image_batchnorm(model.ffms)
    seen: dict[str, tuple[Tensor, Tensor, nn.BatchNorm2d]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, (args[0], out, m)))
    rgb, modal = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(torch.cat([rgb, 2 * rgb + 1]), torch.cat([modal, -3 * modal]))
    assert sorted(seen) == ["decoder.fuse_bn", *sorted(f"ffms.{i}.channel_embed.{n}" for i in range(4)
                                                       for n in ("bn", "norm"))]
    for name, (x, y, bn) in seen.items():
        per_image, batch = _normalised(x, (2, 3), bn), _normalised(x, (0, 2, 3), bn)
        expected, other = (batch, per_image) if name == "decoder.fuse_bn" else (per_image, batch)
        torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
        assert (y - other).abs().max() > 0.05, name


def test_official_names_round_trip(cmx_fixture: dict[str, Any], teacher_fixture: dict[str, Any]) -> None:
    for sd, forward, backward, model in [
        (cmx_fixture["state_dict"], cmx_from_official, cmx_to_official, build_student("mit_tiny", 5, 32)),
        (teacher_fixture["state_dict"], teacher_from_official, teacher_to_official, build_teacher("mit_tiny", 5, 32)),
    ]:
        ours = forward(strip_prefix({f"module.{k}": v for k, v in sd.items()}, "module."))
        assert ours.keys() == model.state_dict().keys()
        back = backward(ours)
        assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)


def test_unknown_official_name_is_named() -> None:
    with pytest.raises(KeyError, match=r"backbone\.mystery\.weight"):
        cmx_from_official({"backbone.mystery.weight": torch.zeros(1)})
    assert cmx_from_official({"decode_head.align_loss1.weight": torch.zeros(1)}, drop=("decode_head.align_loss",)) == {}


def test_wrong_variant_names_the_mismatch() -> None:
    with torch.device("meta"):
        b2, b4 = build_student("mit_b2", 40).state_dict(), build_student("mit_b4", 40)
        with pytest.raises(CheckpointMismatchError, match=r"(?s)missing.*weights: .*mit_b2.*model: .*mit_b4"):
            load_state_dict_checked(b4, b2, "b2.pth")
        teacher = build_teacher("mit_b2", 40)
        with pytest.raises(CheckpointMismatchError, match=r"unexpected: encoder_modal\."):
            load_state_dict_checked(teacher, {**teacher.state_dict(), **b2}, "cmx.pth")
    small, wide = build_teacher("mit_tiny", 5), build_teacher("mit_tiny", 7)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch: decoder.classifier.bias: weights \(7,\)"):
        load_state_dict_checked(small, wide.state_dict(), "7-class weights")


def test_mit_config_rejects_unknown_settings() -> None:
    with pytest.raises(KeyError, match="widths"):
        mit_config({"embed_dims": (8,) * 4, "num_heads": (1,) * 4, "depths": (1,) * 4, "widths": 3})
    with pytest.raises(KeyError, match="mit_b9"):
        mit_config("mit_b9")


def _decoder_as_described(decoder: nn.Module, features: list[Tensor]) -> Tensor:
    """The decoder written as its docstring states it: Linear per stage, upsample, concatenate c4..c1, Conv1×1."""
    size = features[0].shape[-2:]
    maps = []
    for proj, x in zip(decoder.proj, features):
        B, _, H, W = x.shape
        x = proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, -1, H, W)
        maps.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    x = torch.relu(decoder.fuse_bn(F.conv2d(torch.cat(maps[::-1], dim=1), decoder.fuse.weight, decoder.fuse.bias)))
    return F.conv2d(decoder.dropout(x), decoder.classifier.weight, decoder.classifier.bias)


@pytest.mark.parametrize("channels_last", [False, True])
def test_decoder_reordering_is_the_same_function(channels_last: bool) -> None:
    """Fuse weights applied per stage before upsampling: same logits and same parameter gradients as the
    concatenate-then-convolve form, at stage sizes with non-integer upsampling factors (15×20 from 4×5 etc.). The
    BatchNorm uses (random) running statistics: under batch statistics the biases before it get a zero gradient,
    which leaves only rounding noise to compare."""
    torch.manual_seed(0)
    decoder = MLPDecoder([16, 32, 64, 96], 24, 5, dropout=0.0).eval()
    decoder.fuse_bn.running_mean.uniform_(-1, 1)
    decoder.fuse_bn.running_var.uniform_(0.5, 2)
    nn.init.uniform_(decoder.fuse.bias, -1, 1)
    nn.init.uniform_(decoder.classifier.bias, -1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    features = [torch.randn(3, c, h, w).contiguous(memory_format=fmt)
                for c, (h, w) in zip([16, 32, 64, 96], [(15, 20), (8, 10), (4, 5), (2, 3)])]
    grad_out = torch.randn(3, 5, 15, 20)
    results = []
    for forward in (decoder, lambda f: _decoder_as_described(decoder, f)):
        decoder.zero_grad()
        out = forward(features)
        (out * grad_out).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in decoder.named_parameters()}))
    (ours, our_grads), (ref, ref_grads) = results
    assert _rel_error(ours, ref) < 1e-5
    for name, g in ref_grads.items():
        assert _rel_error(our_grads[name], g) < 1e-4, name


@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_is_a_1x1_convolution(channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    weight, bias = torch.randn(4, 6, 1, 1), torch.randn(4)
    torch.testing.assert_close(pointwise(x, weight, bias), F.conv2d(x, weight, bias))
    torch.testing.assert_close(pointwise(x, weight), F.conv2d(x, weight))


def test_count_macs_of_a_tiny_conv_net_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 10))
    # Conv: 4 output channels × 8·8 positions × (3 input channels · 3 · 3) = 6912; linear: 256 · 10 = 2560.
    assert count_macs(net, torch.zeros(1, 3, 8, 8)) == 6912 + 2560
    assert count_macs(net, torch.zeros(2, 3, 8, 8)) == 2 * (6912 + 2560)


def test_measure_complexity_on_the_meta_device():
    tiny = measure_complexity("mit_tiny", 3, 32, 48, decoder_embed_dim=16)
    assert tiny["params"] == count_parameters(build_student("mit_tiny", 3, decoder_embed_dim=16))
    # On the meta device attention runs the math path (two batched matmuls), as it does on CPU with that backend;
    # the CPU's fused attention kernel has no FLOP formula and would be missed.
    x = torch.zeros(1, 3, 32, 48)
    with sdpa_kernel(SDPBackend.MATH):
        assert count_macs(build_student("mit_tiny", 3, decoder_embed_dim=16).eval(), x, x) == tiny["macs"]
    b2 = measure_complexity("mit_b2", 40, 480, 640)
    assert round(b2["params"] / 1e6, 1) == 66.6  # CMX-B2 in the paper's Table 2
