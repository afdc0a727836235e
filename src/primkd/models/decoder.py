"""SegFormer's all-MLP decoder head, as CMX and PrimKD use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from primkd.models.convert import NameTable
from primkd.models.ops import pointwise


class MLPDecoder(nn.Module):
    """Per-stage Linear to a common width, upsampling to stride 4, fusion, per-pixel classifier.

    Stage ``k`` goes through Linear C_k→E on its tokens and is upsampled bilinearly (align_corners False) to the
    stride-4 size; the maps are concatenated in the order c4, c3, c2, c1, then Conv1×1 4E→E → BatchNorm → ReLU →
    Dropout2d → Conv1×1 E→K.

    Args:
        in_channels: channels of the four encoder stages.
        embed_dim: common width E.
        num_classes: number of classes K.
        dropout: Dropout2d probability before the classifier.
        bn_eps: eps of the fusion BatchNorm (CMX's training builder uses 1e-3, its evaluation script 1e-5).
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int, dropout: float = 0.1,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(c, embed_dim) for c in in_channels)
        self.fuse = nn.Conv2d(len(in_channels) * embed_dim, embed_dim, 1)
        self.fuse_bn = nn.BatchNorm2d(embed_dim, eps=bn_eps)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """CMX's decoder initialisation: convolutions Kaiming-normal (fan in, ReLU gain) with zero bias, BatchNorm
        weight 1 and bias 0; the Linear projections keep PyTorch's default."""
        for conv in (self.fuse, self.classifier):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.ones_(self.fuse_bn.weight)
        nn.init.zeros_(self.fuse_bn.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Map the stage outputs (``B×C_k×H_k×W_k``, stride 4 first) to logits ``B×K×H_1×W_1`` at stride 4.

        Computed in an equivalent order: the fuse convolution is linear per input channel block, and bilinear
        upsampling is linear with weights summing to 1 per output pixel, so the two commute. Stage ``k``'s Linear
        C_k→E and its E→E block of the fuse weights are composed into one C_k→E map applied at the stage's own
        resolution; the E-channel results are upsampled and summed, and the fuse bias is added once. That is
        ``fuse(concat(up(proj_k(x_k))))`` up to rounding with a third of the multiply-adds at stride 4 (and none of
        the 4E-channel concatenation); the parameters and their names are those of the description above.
        """
        size = features[0].shape[-2:]
        n, E = len(features), self.fuse.out_channels
        fuse_w = self.fuse.weight.flatten(1)  # (E, n·E), input blocks in the order c4, c3, c2, c1
        x = None
        for k, (proj, f) in enumerate(zip(self.proj, features)):
            w_k = fuse_w[:, (n - 1 - k) * E:(n - k) * E]  # (E, E): stage k's block of the fuse weights
            y = pointwise(f, w_k @ proj.weight, w_k @ proj.bias)  # (B, E, H_k, W_k)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = y if x is None else x + y
        x = torch.relu(self.fuse_bn(x + self.fuse.bias[:, None, None]))  # (B, E, H_1, W_1)
        x = self.dropout(x)
        return pointwise(x, self.classifier.weight, self.classifier.bias)

def reset_conv_biases(module: nn.Module) -> None:
    """Redraw every Conv2d bias of ``module`` with PyTorch's default, uniform in ±1/sqrt(fan_in): the official
    training builder re-initialises the decoder's conv weights but leaves the biases as PyTorch created them."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            fan_in = m.weight[0].numel()
            nn.init.uniform_(m.bias, -(fan_in**-0.5), fan_in**-0.5)


# Official names (CMX / PrimKD ``DecoderHead``) <-> ours, for primkd.models.convert.
OFFICIAL_NAMES: NameTable = [
    ("decode_head.linear_c{S}.proj.{rest}", "decoder.proj.{s}.{rest}"),
    ("decode_head.linear_fuse.0.{rest}", "decoder.fuse.{rest}"),
    ("decode_head.linear_fuse.1.{rest}", "decoder.fuse_bn.{rest}"),
    ("decode_head.linear_pred.{rest}", "decoder.classifier.{rest}"),
]
