"""MiT, the SegFormer Mix Transformer encoder (Xie et al., NeurIPS 2021), variants B0–B5.

Read top to bottom: stochastic depth and the truncated-normal initialiser, overlapping patch embedding, efficient
self-attention with spatial reduction, Mix-FFN, block, stage, the encoder, SegFormer's weight initialisation, then the
variant registry and the builder.

Tokens are the feature map flattened row-major (H then W): ``B×C×H×W <-> B×(H·W)×C``. Each stage maps
``B×C_in×H×W -> B×C×H'×W'`` (patch embedding, blocks, stage LayerNorm), so the dual-stream CMX student can run two
encoders stage by stage. Module names follow the official release inside a block (``norm1``, ``attn.q``,
``attn.kv``, ``attn.sr``, ``attn.norm``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``); the stage containers are
``stages.{s}.patch_embed`` / ``.blocks.{j}`` / ``.norm`` with ``s`` 0-based (``models/convert.py`` maps the names).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from primkd.models.convert import NameTable, StateDict, convert_names


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``drop_prob`` and scale the
    kept ones by ``1 / (1 − drop_prob)``; the identity in evaluation.

    Defined here rather than taken from timm, whose import pulls in torchvision and torch._dynamo (seconds of every
    training stage's start-up, docs/BENCHMARKS.md); it draws the same Bernoulli numbers as ``timm.layers.DropPath``
    (tests/test_startup.py), so seeded trainings are unchanged.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # one draw per sample
        if keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


@torch.no_grad()
def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Tensor:
    """Fill ``tensor`` in place from N(mean, std²) truncated to ``[a, b]`` (absolute bounds, not in units of std).

    Inverse-CDF sampling: uniform numbers between the bounds' CDF values, mapped through erfinv. This is timm's
    ``trunc_normal_``, draw for draw (tests/test_startup.py), which SegFormer's initialisation and the parity fixtures
    used; ``torch.nn.init.trunc_normal_`` now rejection-samples instead, so it would give other weights.
    """
    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    tensor.uniform_(2 * lo - 1, 2 * hi - 1)  # erfinv's domain (-1, 1)
    tensor.erfinv_()
    tensor.mul_(std * math.sqrt(2.0)).add_(mean)
    return tensor.clamp_(min=a, max=b)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with padding ``k // 2`` (overlapping patches) followed by LayerNorm on the tokens."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Map ``B×C_in×H×W`` to tokens ``B×(H'·W')×C`` and the new map size ``H', W'``."""
        x = self.proj(x)
        _, _, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, H'·W', C)
        return self.norm(x), H, W


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a map shrunk ``sr_ratio`` times per side.

    With ``sr_ratio > 1`` the keys/values are computed from ``LayerNorm(Conv(k = stride = sr_ratio)(map))``; the
    convolution has no padding, so the reduced size is floored. ``kv`` outputs the C key channels first, then the C
    value channels; head ``h`` owns channels ``h·d … (h+1)·d − 1`` of each. Scale ``d^-0.5``.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 sr_norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads; pick heads dividing it")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_norm_eps)
        else:
            self.sr = None
            self.norm = None

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """Attend over tokens ``B×(H·W)×C`` of an ``H×W`` map; returns ``B×(H·W)×C``."""
        B, N, C = x.shape
        heads, d = self.num_heads, C // self.num_heads
        q = self.q(x).reshape(B, N, heads, d).transpose(1, 2)  # (B, heads, N, d)
        if self.sr is not None:
            x = x.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
            x = self.sr(x).flatten(2).transpose(1, 2)  # (B, M, C), M = ⌊H/sr⌋·⌊W/sr⌋
            x = self.norm(x)
        kv = self.kv(x).reshape(B, -1, 2, heads, d).permute(2, 0, 3, 1, 4)  # (2, B, heads, M, d)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj(out)


class MixFFN(nn.Module):
    """Linear C→hidden, depthwise 3×3 convolution on the map, exact (erf) GELU, Linear hidden→C."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """Tokens ``B×(H·W)×C`` of an ``H×W`` map to tokens of the same shape."""
        x = self.fc1(x)
        B, _, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, H, W)  # (B, hidden, H, W)
        x = self.dwconv(x).flatten(2).transpose(1, 2)  # (B, N, hidden)
        return self.fc2(self.act(x))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MixFFN(LN(x)))``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float, qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_eps: float = 1e-6, sr_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio, qkv_bias=qkv_bias, sr_norm_eps=sr_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """Tokens ``B×(H·W)×C`` to tokens of the same shape."""
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class MiTStage(nn.Module):
    """One encoder stage: overlapping patch embedding, ``len(drop_paths)`` blocks, LayerNorm."""

    def __init__(self, in_chans: int, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float, patch_size: int,
                 stride: int, drop_paths: Sequence[float], qkv_bias: bool = True, patch_norm_eps: float = 1e-5,
                 sr_norm_eps: float = 1e-5, block_norm_eps: float = 1e-6, stage_norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_chans, dim, patch_size, stride, norm_eps=patch_norm_eps)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, sr_ratio, mlp_ratio, qkv_bias=qkv_bias, drop_path=p, norm_eps=block_norm_eps,
                  sr_norm_eps=sr_norm_eps)
            for p in drop_paths
        )
        self.norm = nn.LayerNorm(dim, eps=stage_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``B×C_in×H×W`` to ``B×C×H'×W'`` (after the stage LayerNorm)."""
        x, H, W = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, H, W)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, H, W)  # (B, C, H', W')


class MixVisionTransformer(nn.Module):
    """The four-stage MiT encoder; ``forward`` returns the stage outputs at strides 4, 8, 16 and 32.

    Args:
        embed_dims: channels of the four stages.
        num_heads: attention heads per stage.
        depths: blocks per stage.
        sr_ratios: spatial-reduction ratio of the keys/values per stage.
        mlp_ratios: Mix-FFN hidden width over the stage width.
        qkv_bias: bias in the query and key/value projections.
        drop_path_rate: stochastic-depth rate of the last block; it rises linearly from 0 over all blocks.
        in_chans: input channels.
        patch_sizes: patch-embedding kernel per stage (padding ``k // 2``).
        strides: patch-embedding stride per stage.
        patch_norm_eps: eps of the patch-embedding LayerNorms.
        sr_norm_eps: eps of the LayerNorm after the spatial-reduction convolution.
        block_norm_eps: eps of the two LayerNorms inside each block.
        stage_norm_eps: eps of the LayerNorm that ends each stage.
    """

    def __init__(self, embed_dims: Sequence[int], num_heads: Sequence[int], depths: Sequence[int],
                 sr_ratios: Sequence[int], mlp_ratios: Sequence[float], qkv_bias: bool = True,
                 drop_path_rate: float = 0.1, in_chans: int = 3, patch_sizes: Sequence[int] = (7, 3, 3, 3),
                 strides: Sequence[int] = (4, 2, 2, 2), patch_norm_eps: float = 1e-5, sr_norm_eps: float = 1e-5,
                 block_norm_eps: float = 1e-6, stage_norm_eps: float = 1e-6) -> None:
        super().__init__()
        per_stage = [embed_dims, num_heads, depths, sr_ratios, mlp_ratios, patch_sizes, strides]
        if len({len(v) for v in per_stage}) != 1:
            raise ValueError(f"per-stage settings differ in length: {per_stage}; give one value per stage")
        self.embed_dims = list(embed_dims)
        self.num_heads = list(num_heads)
        total = sum(depths)
        rates = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]  # linear from 0 to the rate
        starts = [sum(depths[:s]) for s in range(len(depths))]
        chans = [in_chans, *embed_dims[:-1]]
        self.stages = nn.ModuleList(
            MiTStage(chans[s], embed_dims[s], num_heads[s], sr_ratios[s], mlp_ratios[s], patch_sizes[s], strides[s],
                     rates[starts[s]:starts[s] + depths[s]], qkv_bias=qkv_bias, patch_norm_eps=patch_norm_eps,
                     sr_norm_eps=sr_norm_eps, block_norm_eps=block_norm_eps, stage_norm_eps=stage_norm_eps)
            for s in range(len(depths))
        )
        self.apply(init_weights_segformer)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Map ``B×C_in×H×W`` to the stage outputs ``B×C_s×⌈H/4⌉×⌈W/4⌉``, …, ``B×C_4×(H/32)×(W/32)``."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def init_weights_segformer(module: nn.Module) -> None:
    """SegFormer's initialisation, for ``nn.Module.apply``.

    Linear: truncated normal std 0.02, bias 0. Conv2d: normal with std ``sqrt(2 / fan_out)``, ``fan_out = k_h·k_w·
    out / groups``, bias 0. LayerNorm: weight 1, bias 0. Other modules keep PyTorch's defaults.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


_B1_TO_B5 = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
_COMMON = dict(sr_ratios=(8, 4, 2, 1), mlp_ratios=(4, 4, 4, 4), qkv_bias=True)

MIT_VARIANTS: dict[str, dict[str, Any]] = {
    # SegFormer's released encoders (SegFormer paper, Table 1; ImageNet weights mit_b0.pth … mit_b5.pth).
    "mit_b0": dict(embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8), depths=(2, 2, 2, 2), **_COMMON),
    "mit_b1": dict(**_B1_TO_B5, depths=(2, 2, 2, 2), **_COMMON),
    "mit_b2": dict(**_B1_TO_B5, depths=(3, 4, 6, 3), **_COMMON),
    "mit_b3": dict(**_B1_TO_B5, depths=(3, 4, 18, 3), **_COMMON),
    "mit_b4": dict(**_B1_TO_B5, depths=(3, 8, 27, 3), **_COMMON),
    "mit_b5": dict(**_B1_TO_B5, depths=(3, 6, 40, 3), **_COMMON),
    # The reference fixtures' network (fixtures/cmx): head width 16 in every stage.
    "mit_tiny": dict(embed_dims=(16, 32, 64, 96), num_heads=(1, 2, 4, 6), depths=(2, 1, 1, 1), **_COMMON),
    # CPU demo: one block per stage, head width 32 (about 1.1M parameters).
    "mit_nano": dict(embed_dims=(32, 64, 128, 160), num_heads=(1, 2, 4, 5), depths=(1, 1, 1, 1), **_COMMON),
}


def mit_config(variant: str | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a variant name of ``MIT_VARIANTS`` or a mapping of ``MixVisionTransformer`` arguments.

    A mapping must give ``embed_dims``, ``num_heads``, ``depths``; the other per-stage settings default to those
    of the released variants (``sr_ratios`` 8, 4, 2, 1; ``mlp_ratios`` 4). It may also set the LayerNorm eps values.
    """
    if isinstance(variant, str):
        if variant not in MIT_VARIANTS:
            raise KeyError(f"unknown MiT variant {variant!r}; choose one of {sorted(MIT_VARIANTS)}")
        return dict(MIT_VARIANTS[variant])
    allowed = set(inspect.signature(MixVisionTransformer).parameters) - {"drop_path_rate", "in_chans"}
    unknown = set(variant) - allowed
    missing = {"embed_dims", "num_heads", "depths"} - set(variant)
    if unknown or missing:
        raise KeyError(f"MiT configuration: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                       f"allowed keys are {sorted(allowed)}")
    return {**_COMMON, **variant}


def build_mit(variant: str | Mapping[str, Any], drop_path_rate: float = 0.1, in_chans: int = 3) -> MixVisionTransformer:
    """Build a MiT encoder from a variant name (``MIT_VARIANTS``) or a mapping of settings (see ``mit_config``)."""
    return MixVisionTransformer(**mit_config(variant), drop_path_rate=drop_path_rate, in_chans=in_chans)


# --- Names of the SegFormer release and of Hugging Face -----------------------------------------------------

# SegFormer ImageNet release (encoder-relative) <-> MixVisionTransformer.
OFFICIAL_NAMES: NameTable = [
    ("patch_embed{S}.{rest}", "stages.{s}.patch_embed.{rest}"),
    ("block{S}.{j}.mlp.dwconv.dwconv.{rest}", "stages.{s}.blocks.{j}.mlp.dwconv.{rest}"),
    ("block{S}.{j}.{rest}", "stages.{s}.blocks.{j}.{rest}"),
    ("norm{S}.{rest}", "stages.{s}.norm.{rest}"),
]
# Hugging Face (encoder-relative, transformers 4 and 5 names) -> SegFormer release names; ``attn.k``/``attn.v``
# are merged into ``attn.kv`` afterwards.
_HF_BLOCK = [
    ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
    ("attention.self.query", "attn.q"), ("attention.self.key", "attn.k"), ("attention.self.value", "attn.v"),
    ("attention.self.sr", "attn.sr"), ("attention.self.layer_norm", "attn.norm"),
    ("attention.output.dense", "attn.proj"), ("attention.q_proj", "attn.q"), ("attention.k_proj", "attn.k"),
    ("attention.v_proj", "attn.v"), ("attention.o_proj", "attn.proj"),
    ("attention.sequence_reduction.sequence_reduction", "attn.sr"),
    ("attention.sequence_reduction.layer_norm", "attn.norm"),
    ("mlp.dense1", "mlp.fc1"), ("mlp.dense2", "mlp.fc2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
    ("mlp.dwconv.dwconv", "mlp.dwconv.dwconv"),
]
_HF: NameTable = [
    ("patch_embeddings.{s}.proj.{rest}", "patch_embed{S}.proj.{rest}"),
    ("patch_embeddings.{s}.layer_norm.{rest}", "patch_embed{S}.norm.{rest}"),
    ("stages.{s}.patch_embeddings.proj.{rest}", "patch_embed{S}.proj.{rest}"),
    ("stages.{s}.patch_embeddings.layer_norm.{rest}", "patch_embed{S}.norm.{rest}"),
    *[(f"block.{{s}}.{{j}}.{hf}.{{rest}}", f"block{{S}}.{{j}}.{off}.{{rest}}") for hf, off in _HF_BLOCK],
    *[(f"stages.{{s}}.blocks.{{j}}.{hf}.{{rest}}", f"block{{S}}.{{j}}.{off}.{{rest}}") for hf, off in _HF_BLOCK],
    ("layer_norm.{s}.{rest}", "norm{S}.{rest}"),
    ("stages.{s}.layer_norm.{rest}", "norm{S}.{rest}"),
]



def mit_from_segformer(sd: Mapping[str, Tensor]) -> StateDict:
    """SegFormer ImageNet weights (``mit_bX.pth``) → ``MixVisionTransformer`` names; the classifier ``head.*`` is
    dropped."""
    return convert_names(sd, OFFICIAL_NAMES, True, "SegFormer MiT weights", drop=("head.",))


def mit_to_segformer(sd: Mapping[str, Tensor]) -> StateDict:
    """``MixVisionTransformer`` names → the SegFormer release's (``mit_bX.pth``), which :func:`mit_from_segformer`
    reads back: the format of the pretrain stage's encoder, so that ``model.pretrained`` loads it as ImageNet
    weights."""
    return convert_names(sd, OFFICIAL_NAMES, False, "MiT encoder weights")


def _merge_kv(sd: StateDict) -> StateDict:
    """Stack separate ``attn.k.*`` and ``attn.v.*`` entries (rows k then v) into ``attn.kv.*``."""
    out = {k: v for k, v in sd.items() if ".attn.k." not in k and ".attn.v." not in k}
    for key in (k for k in sd if ".attn.k." in k):
        partner = key.replace(".attn.k.", ".attn.v.")
        if partner not in sd:
            raise KeyError(f"Hugging Face MiT weights: {key} has no matching value projection; the file is incomplete")
        out[key.replace(".attn.k.", ".attn.kv.")] = torch.cat([sd[key], sd[partner]], dim=0)  # (2C, …)
    return out


def mit_from_hf(sd: Mapping[str, Tensor]) -> StateDict:
    """Hugging Face ``nvidia/mit-bX`` / ``SegformerModel`` weights → ``MixVisionTransformer`` names.

    Accepts transformers 4 names with or without the ``segformer.`` prefix (``segformer.encoder.block.0.0.…``) and
    transformers 5 in-memory names (``stages.0.blocks.0.…``); separate key/value projections are stacked into
    ``kv`` (key rows first). Classifier and decoder-head entries are dropped.
    """
    encoder = {k.removeprefix("segformer.").removeprefix("encoder."): v for k, v in sd.items()}
    official = convert_names(encoder, _HF, True, "Hugging Face MiT weights", drop=("classifier.", "decode_head."))
    return mit_from_segformer(_merge_kv(official))
