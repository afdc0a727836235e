"""Tensor operations the model parts share."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pointwise(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 1×1 convolution of ``B×C×H×W`` with ``weight`` (``O×C`` or ``O×C×1×1``), as one matrix product.

    The same function as ``F.conv2d(x, weight, bias)``, computed as ``F.linear`` over the channels-last view: for
    unstrided 1×1 kernels at batch < 16 on one thread, PyTorch's CPU convolution takes its per-sample fallback
    (``_slow_conv2d``), which cost half of a training step. The result is ``B×O×H×W`` in channels-last strides
    (no copy when ``x`` is channels-last already, as the token maps of the encoders are).
    """
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
