"""Linear centred kernel alignment (CKA, Kornblith et al. 2019) between two representations.

Samples are spatial positions (every pixel of every image) and features are channels: a B×C×H×W feature map becomes
a (B·H·W)×C matrix. With column-centred X (N×D1) and Y (N×D2),

    CKA(X, Y) = ||YᵀX||_F² / (||XᵀX||_F · ||YᵀY||_F),

which equals HSIC(XXᵀ, YYᵀ) / sqrt(HSIC(XXᵀ, XXᵀ) · HSIC(YYᵀ, YYᵀ)) without forming the N×N Gram matrices. It lies in
[0, 1] and is invariant to orthogonal transforms and isotropic scaling of either representation. Both maps must have
the same N (same batch and spatial size): resize one of them beforehand (e.g. ``F.interpolate``) if needed.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def _cka_from_moments(xtx: Tensor, yty: Tensor, xty: Tensor, sx: Tensor, sy: Tensor, n: int) -> float:
    """CKA from raw second moments XᵀX, YᵀY, XᵀY, column sums Σx, Σy and sample count n (centred here)."""
    cxx = xtx - torch.outer(sx, sx) / n  # (D1, D1) = XcᵀXc
    cyy = yty - torch.outer(sy, sy) / n  # (D2, D2)
    cxy = xty - torch.outer(sx, sy) / n  # (D1, D2)
    denominator = torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy)
    if denominator <= 0:
        raise ValueError("CKA is undefined: one representation is constant over all samples (zero variance)")
    return float(cxy.square().sum() / denominator)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between two representations of the same N samples, computed in float64.

    Args:
        x: N×D1 (rows = samples).
        y: N×D2.

    Returns:
        CKA in [0, 1].
    """
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"linear_cka expects N×D matrices, got shapes {tuple(x.shape)} and {tuple(y.shape)}; "
                         f"use CKAAccumulator for B×C×H×W feature maps")
    _check_same_n(x.shape[0], y.shape[0])
    x, y = x.double(), y.double()
    return _cka_from_moments(x.T @ x, y.T @ y, x.T @ y, x.sum(0), y.sum(0), x.shape[0])


def _check_same_n(n_x: int, n_y: int) -> None:
    if n_x != n_y:
        raise ValueError(f"the two representations have {n_x} and {n_y} samples; CKA compares the same samples, "
                         f"so resize the feature maps to the same batch and spatial size first")


class CKAAccumulator:
    """Linear CKA over a whole data set, accumulated one minibatch of feature maps at a time.

    Keeps XᵀX (C1×C1), YᵀY (C2×C2), XᵀY (C1×C2), the column sums and the sample count in float64, so memory is
    bounded by C² whatever the data set size, and :meth:`value` equals :func:`linear_cka` on the concatenation of all
    minibatches (up to float64 rounding). The moments are added one image at a time, so the same images give the
    same value bit for bit however they are grouped into minibatches (a batched product would sum in another order).
    Works on CPU or CUDA (the sums live on the first input's device).
    """

    def __init__(self) -> None:
        self.n = 0
        self.xtx: Tensor | None = None
        self.yty: Tensor | None = None
        self.xty: Tensor | None = None
        self.sx: Tensor | None = None
        self.sy: Tensor | None = None

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add one minibatch.

        Args:
            x: B×C1×H×W feature map; each image flattened to (H·W)×C1 (samples = positions, features = channels).
            y: B×C2×H×W feature map of the same B, H, W.
        """
        if x.dim() != 4 or y.dim() != 4:
            raise ValueError(f"CKAAccumulator.update expects B×C×H×W maps, got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
            raise ValueError(f"the two maps are {tuple(x.shape)} and {tuple(y.shape)}; CKA compares the same positions "
                             f"of the same images, so resize the feature maps to the same batch and spatial size first")
        c1, c2 = x.shape[1], y.shape[1]
        if self.xtx is None:
            zeros = functools.partial(x.new_zeros, dtype=torch.float64)
            self.xtx, self.yty, self.xty = zeros(c1, c1), zeros(c2, c2), zeros(c1, c2)
            self.sx, self.sy = zeros(c1), zeros(c2)
        if self.xty.shape != (c1, c2):
            raise ValueError(f"channel counts changed between minibatches: {tuple(self.xty.shape)} before, "
                             f"{(c1, c2)} now; use one accumulator per pair of feature maps")
        for xi, yi in zip(x.detach(), y.detach(), strict=True):  # one image at a time: see the class docstring
            x2 = xi.double().permute(1, 2, 0).reshape(-1, c1)  # (H·W, C1)
            y2 = yi.double().permute(1, 2, 0).reshape(-1, c2)  # (H·W, C2)
            self.xtx += x2.T @ x2
            self.yty += y2.T @ y2
            self.xty += x2.T @ y2
            self.sx += x2.sum(0)
            self.sy += y2.sum(0)
            self.n += x2.shape[0]

    def value(self) -> float:
        """CKA of everything added so far, in [0, 1]."""
        if self.n == 0:
            raise ValueError("CKAAccumulator.value called before any update")
        return _cka_from_moments(self.xtx, self.yty, self.xty, self.sx, self.sy, self.n)
