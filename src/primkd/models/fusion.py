"""CMX's cross-modal modules (Zhang et al., CMX, IEEE T-ITS 2023): feature rectification and feature fusion.

At every encoder stage the FRM exchanges information between the RGB and the other-modality ("modal") maps, and
the rectified maps feed both the next stage and the FFM, whose fused map goes to the decoder. Maps are
``B×C×H×W``; tokens are maps flattened row-major, ``B×(H·W)×C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from primkd.models.convert import NameTable
from primkd.models.ops import pointwise


@dataclass(frozen=True)
class FusionConfig:
    """Settings of the FRMs and FFMs (the official CMX values are the defaults).

    Attributes:
        frm_reduction: hidden-width divisor of the FRM's channel MLP and spatial convolutions.
        lambda_c: weight of the channel-wise rectification term.
        lambda_s: weight of the spatial rectification term.
        ffm_reduction: hidden-width divisor of the FFM's cross path and channel embedding.
        ffm_num_heads: heads of the FFM cross attention per stage; ``None`` takes the encoder stage's heads.
        ln_eps: eps of the FFM cross-path LayerNorms.
        bn_eps: eps of the FFM channel-embedding BatchNorms.
    """

    frm_reduction: int = 1
    lambda_c: float = 0.5
    lambda_s: float = 0.5
    ffm_reduction: int = 1
    ffm_num_heads: tuple[int, ...] | None = None
    ln_eps: float = 1e-5
    bn_eps: float = 1e-5


class FeatureRectifyModule(nn.Module):
    """FRM: each modality is corrected by the other, weighted channel-wise and spatially.

    Channel weights: ``concat(avgpool(z), maxpool(z))`` of ``z = concat(rgb, modal)`` (4C) → Linear 4C→4C/r → ReLU
    → Linear 4C/r→2C → Sigmoid, read as two C-vectors ``cw[0]`` (first C outputs) and ``cw[1]``. Spatial weights:
    Conv1×1 2C→C/r → ReLU → Conv1×1 C/r→2 → Sigmoid, maps ``sw[0]`` and ``sw[1]``. Then
    ``rgb' = rgb + λc·cw[1]·modal + λs·sw[1]·modal`` and ``modal' = modal + λc·cw[0]·rgb + λs·sw[0]·rgb``.
    """

    def __init__(self, dim: int, reduction: int = 1, lambda_c: float = 0.5, lambda_s: float = 0.5) -> None:
        super().__init__()
        self.lambda_c = lambda_c
        self.lambda_s = lambda_s
        self.channel_fc1 = nn.Linear(4 * dim, 4 * dim // reduction)
        self.channel_fc2 = nn.Linear(4 * dim // reduction, 2 * dim)
        self.spatial_conv1 = nn.Conv2d(2 * dim, dim // reduction, 1)
        self.spatial_conv2 = nn.Conv2d(dim // reduction, 2, 1)

    def channel_weights(self, z: Tensor) -> Tensor:
        """Per-channel weights ``2×B×C×1×1`` from the concatenated pair ``z`` (``B×2C×H×W``)."""
        B, C2 = z.shape[:2]
        pooled = torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)  # (B, 4C)
        w = torch.sigmoid(self.channel_fc2(torch.relu(self.channel_fc1(pooled))))  # (B, 2C)
        return w.reshape(B, 2, C2 // 2, 1, 1).transpose(0, 1)  # (2, B, C, 1, 1)

    def spatial_weights(self, z: Tensor) -> Tensor:
        """Per-position weights ``2×B×1×H×W`` from the concatenated pair ``z`` (``B×2C×H×W``)."""
        hidden = torch.relu(pointwise(z, self.spatial_conv1.weight, self.spatial_conv1.bias))
        w = torch.sigmoid(pointwise(hidden, self.spatial_conv2.weight, self.spatial_conv2.bias))  # (B, 2, H, W)
        return w.unsqueeze(2).transpose(0, 1)  # (2, B, 1, H, W)

    def forward(self, rgb: Tensor, modal: Tensor) -> tuple[Tensor, Tensor]:
        """Rectify the pair of ``B×C×H×W`` maps; returns ``(rgb', modal')`` of the same shape."""
        z = torch.cat([rgb, modal], dim=1)  # (B, 2C, H, W)
        cw, sw = self.channel_weights(z), self.spatial_weights(z)
        rgb_out = rgb + self.lambda_c * cw[1] * modal + self.lambda_s * sw[1] * modal
        modal_out = modal + self.lambda_c * cw[0] * rgb + self.lambda_s * sw[0] * rgb
        return rgb_out, modal_out


class CrossPath(nn.Module):
    """The FFM's first step: efficient cross attention between the two token sets.

    Per modality ``Linear C→2C' + ReLU`` (``C' = C/r``) splits into ``y`` (first C') and ``u`` (last C'). Per head
    (width d) the context is ``softmax(kᵀv · d^-0.5)``, a d×d matrix with the softmax over its first axis (the key
    channel), where ``k, v = Linear C'→2C' (no bias)(u)``. Each modality's query ``u`` is multiplied by the other
    modality's context. ``out = LayerNorm(x + Linear 2C'→C(concat(y, attended)))``.
    """

    def __init__(self, dim: int, num_heads: int, reduction: int = 1, norm_eps: float = 1e-5) -> None:
        super().__init__()
        inner = dim // reduction
        if inner % num_heads:
            raise ValueError(f"FFM width {inner} is not divisible by {num_heads} heads; pick heads dividing it")
        self.num_heads = num_heads
        self.proj_rgb = nn.Linear(dim, 2 * inner)
        self.proj_modal = nn.Linear(dim, 2 * inner)
        self.kv_rgb = nn.Linear(inner, 2 * inner, bias=False)
        self.kv_modal = nn.Linear(inner, 2 * inner, bias=False)
        self.out_rgb = nn.Linear(2 * inner, dim)
        self.out_modal = nn.Linear(2 * inner, dim)
        self.norm_rgb = nn.LayerNorm(dim, eps=norm_eps)
        self.norm_modal = nn.LayerNorm(dim, eps=norm_eps)

    def _heads(self, u: Tensor) -> Tensor:
        B, N, C = u.shape
        return u.reshape(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, heads, N, d)

    def _context(self, kv: nn.Linear, u: Tensor) -> Tensor:
        """Per-head ``d×d`` context of tokens ``u`` (``B×N×C'``), softmax over the key-channel axis."""
        B, N, C = u.shape
        d = C // self.num_heads
        k, v = kv(u).reshape(B, N, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        return (k.transpose(-2, -1) @ v * d**-0.5).softmax(dim=-2)  # (B, heads, d, d)

    def forward(self, rgb: Tensor, modal: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens ``B×N×C`` of both modalities to tokens of the same shape."""
        B, N, _ = rgb.shape
        y_rgb, u_rgb = torch.relu(self.proj_rgb(rgb)).chunk(2, dim=-1)  # each (B, N, C')
        y_modal, u_modal = torch.relu(self.proj_modal(modal)).chunk(2, dim=-1)
        ctx_rgb, ctx_modal = self._context(self.kv_rgb, u_rgb), self._context(self.kv_modal, u_modal)
        att_rgb = (self._heads(u_rgb) @ ctx_modal).transpose(1, 2).reshape(B, N, -1)  # (B, N, C')
        att_modal = (self._heads(u_modal) @ ctx_rgb).transpose(1, 2).reshape(B, N, -1)  # (B, N, C')
        rgb = self.norm_rgb(rgb + self.out_rgb(torch.cat([y_rgb, att_rgb], dim=-1)))
        modal = self.norm_modal(modal + self.out_modal(torch.cat([y_modal, att_modal], dim=-1)))
        return rgb, modal


class ChannelEmbed(nn.Module):
    """The FFM's second step on ``z = concat(rgb, modal)`` (``B×2C×H×W``).

    ``BN(Conv1×1 2C→C no bias (z) + BN(Conv1×1 C'→C(ReLU(DWConv3×3(Conv1×1 2C→C'(z))))))`` with ``C' = C/r``; the
    1×1 convolutions run as matrix products on the channels-last maps (``ops.pointwise``).
    """

    def __init__(self, in_dim: int, out_dim: int, reduction: int = 1, bn_eps: float = 1e-5) -> None:
        super().__init__()
        inner = out_dim // reduction
        self.residual = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.conv_in = nn.Conv2d(in_dim, inner, 1)
        self.dwconv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.conv_out = nn.Conv2d(inner, out_dim, 1)
        self.bn = nn.BatchNorm2d(out_dim, eps=bn_eps)
        self.norm = nn.BatchNorm2d(out_dim, eps=bn_eps)

    def forward(self, z: Tensor) -> Tensor:
        """``B×2C×H×W`` to ``B×C×H×W``."""
        hidden = torch.relu(self.dwconv(pointwise(z, self.conv_in.weight, self.conv_in.bias)))
        main = self.bn(pointwise(hidden, self.conv_out.weight, self.conv_out.bias))
        return self.norm(pointwise(z, self.residual.weight) + main)


class PerImageBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that in training normalises each image of the batch with that image's own statistics.

    This is what the released CMX / PrimKD fusion modules compute: the training script passes SyncBatchNorm, but
    the ``mit_b*`` classes do not forward ``norm_fuse`` (``mit_b4``: CMX e251d86 models/encoders/dual_segformer.py
    504-509, PrimKD c816fd7 the same file, 528-533), so the eight FFM BatchNorms are plain ``BatchNorm2d`` and, with
    one image per GPU, each normalises a single image (mean and biased variance over its H×W positions). In
    training that is an instance normalisation with the BatchNorm's affine parameters.

    Running statistics, for one process: updated once per forward pass, from the **first** image of the batch only.
    In the released 4 GPUs × 1 image launch each GPU's layer updates its buffers from its own image and DDP
    broadcasts rank 0's buffers, which are the ones saved. Rank ``r`` of ``N`` ranks here takes images ``r``,
    ``r + N``, … of the shared order (``EpochSampler``), so the first image of a one-process batch is the image rank
    0 would see, and one process with a batch of N matches N ranks × 1 image in its saved statistics too.
    With gradient accumulation each micro-batch is a forward pass and updates them once. Evaluation uses the running
    statistics, as ``BatchNorm2d`` does. State-dict names and contents are those of ``BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``B×C×H×W`` to the same shape."""
        if not self.training:
            return super().forward(x)
        H, W = x.shape[-2:]
        if H * W < 2:
            raise ValueError(f"a per-image BatchNorm needs more than one position per image, got {H}x{W}; use a "
                             f"larger train.crop or train.fusion_bn: batch")
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                F.batch_norm(x[:1].detach(), self.running_mean, self.running_var, None, None, True, momentum,
                             self.eps)  # updates the running statistics in place; the output is discarded
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


def per_image_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every plain ``BatchNorm2d`` inside ``module`` into a :class:`PerImageBatchNorm2d`, in place; apply it to
    a CMX's ``ffms`` to train its fusion modules as released.

    Returns:
        ``module``.
    """
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = PerImageBatchNorm2d  # adds no state: parameters, buffers and their names stay as they are
    return module


class FeatureFusionModule(nn.Module):
    """FFM: cross path on the tokens of both modalities, then channel embedding of their concatenation."""

    def __init__(self, dim: int, num_heads: int, reduction: int = 1, ln_eps: float = 1e-5,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.cross = CrossPath(dim, num_heads, reduction=reduction, norm_eps=ln_eps)
        self.channel_embed = ChannelEmbed(2 * dim, dim, reduction=reduction, bn_eps=bn_eps)

    def forward(self, rgb: Tensor, modal: Tensor) -> Tensor:
        """Fuse two ``B×C×H×W`` maps into one ``B×C×H×W`` map."""
        B, C, H, W = rgb.shape
        rgb, modal = self.cross(rgb.flatten(2).transpose(1, 2), modal.flatten(2).transpose(1, 2))  # (B, H·W, C)
        z = torch.cat([rgb, modal], dim=-1).transpose(1, 2).reshape(B, 2 * C, H, W)  # (B, 2C, H, W)
        return self.channel_embed(z)


# Official names (CMX ``FRMs`` / ``FFMs`` under ``backbone.``) <-> ours, for primkd.models.convert.
OFFICIAL_NAMES: NameTable = [
    ("backbone.FRMs.{i}.channel_weights.mlp.0.{rest}", "frms.{i}.channel_fc1.{rest}"),
    ("backbone.FRMs.{i}.channel_weights.mlp.2.{rest}", "frms.{i}.channel_fc2.{rest}"),
    ("backbone.FRMs.{i}.spatial_weights.mlp.0.{rest}", "frms.{i}.spatial_conv1.{rest}"),
    ("backbone.FRMs.{i}.spatial_weights.mlp.2.{rest}", "frms.{i}.spatial_conv2.{rest}"),
    ("backbone.FFMs.{i}.cross.channel_proj1.{rest}", "ffms.{i}.cross.proj_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.channel_proj2.{rest}", "ffms.{i}.cross.proj_modal.{rest}"),
    ("backbone.FFMs.{i}.cross.cross_attn.kv1.{rest}", "ffms.{i}.cross.kv_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.cross_attn.kv2.{rest}", "ffms.{i}.cross.kv_modal.{rest}"),
    ("backbone.FFMs.{i}.cross.end_proj1.{rest}", "ffms.{i}.cross.out_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.end_proj2.{rest}", "ffms.{i}.cross.out_modal.{rest}"),
    ("backbone.FFMs.{i}.cross.norm1.{rest}", "ffms.{i}.cross.norm_rgb.{rest}"),
    ("backbone.FFMs.{i}.cross.norm2.{rest}", "ffms.{i}.cross.norm_modal.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.residual.{rest}", "ffms.{i}.channel_embed.residual.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.0.{rest}", "ffms.{i}.channel_embed.conv_in.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.1.{rest}", "ffms.{i}.channel_embed.dwconv.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.3.{rest}", "ffms.{i}.channel_embed.conv_out.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.channel_embed.4.{rest}", "ffms.{i}.channel_embed.bn.{rest}"),
    ("backbone.FFMs.{i}.channel_emb.norm.{rest}", "ffms.{i}.channel_embed.norm.{rest}"),
]
