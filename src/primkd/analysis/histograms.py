"""Feature-value histograms per stage (the paper's Figure 4), accumulated over minibatches with bounded memory.

Bins: each stage has one set of ``num_bins`` equal-width bins shared by every network, so the curves of the RGB
teacher, the CMX baseline and the PrimKD student are directly comparable. The range of a stage is fixed from the
first ``calibration_images`` test images: the ``quantiles`` (default 0.1 % and 99.9 %) of the values of all networks
pooled, computed on a seeded random sample of at most ``sample_size`` values. The stage maps are held on the CPU until
that many images have arrived, then the range is fixed and the held maps binned; every later minibatch is binned as it
arrives. Memory is therefore bounded by ``calibration_images`` images (plus the rest of the minibatch that completes
them) of stage maps plus the counts.

The result does not depend on how the images are grouped into minibatches (the analysis's ``--batch-size``, params.yaml
``eval.batch_size``, which is why no pipeline stage depends on that key): the range comes from a fixed number of images,
not of minibatches, and the pooled values are put in one order (network by network, image by image) before they are
sampled, so the sample and the quantiles are the same for any batch size; the counts are per-value, so their sums are.
Given the same feature values the result is bit-identical; the networks' float32 forward pass itself may differ in the
last bits between batch sizes (BLAS blocking), which moves edges by that much.

Values outside the range are counted as underflow / overflow rather than clipped into the edge bins, and densities
are normalised by the number of all values, so the area under a curve equals the fraction of values inside the range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from primkd.io import save_figure


def bin_counts(values: Tensor, edges: Tensor) -> Tensor:
    """Counts of ``values`` in the bins ``[e_i, e_{i+1})`` (the last bin also holds ``e_n``).

    Args:
        values: any shape; flattened.
        edges: n+1 increasing edges.

    Returns:
        int64 tensor of n+2 counts: underflow (< e_0), the n bins, overflow (> e_n).
    """
    v = values.detach().reshape(-1).to(edges.dtype)  # (N,)
    n = edges.numel() - 1
    idx = torch.bucketize(v, edges, right=True) - 1  # -1 below the range, n above it (or exactly e_n)
    idx = torch.where(v == edges[-1], n - 1, idx)
    return torch.bincount(idx + 1, minlength=n + 2)


def robust_range(values: Tensor, quantiles: tuple[float, float], sample_size: int,
                 generator: torch.Generator) -> tuple[float, float]:
    """The two ``quantiles`` of ``values`` (flattened), from a random sample when there are more than ``sample_size``.

    A degenerate range (constant values) is widened to ``[v - 0.5, v + 0.5]``.
    """
    v = values.reshape(-1).float()  # (N,)
    if v.numel() > sample_size:
        v = v[torch.randint(v.numel(), (sample_size,), generator=generator)]
    lo, hi = torch.quantile(v, torch.tensor(quantiles, dtype=v.dtype)).tolist()
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


class StageHistograms:
    """Per-stage histograms of the feature values of several networks (see the module docstring for the bins).

    Args:
        num_bins: bins per stage.
        calibration_images: test images whose values fix the range of each stage (all of them when fewer arrive).
        quantiles: lower and upper quantile of the pooled values that bound the range.
        sample_size: most values used to estimate the quantiles of one stage.
        seed: seed of the sampling.
    """

    def __init__(self, num_bins: int = 100, calibration_images: int = 8,
                 quantiles: tuple[float, float] = (1e-3, 0.999), sample_size: int = 1_000_000, seed: int = 0) -> None:
        if num_bins < 1 or calibration_images < 1 or not 0 <= quantiles[0] < quantiles[1] <= 1:
            raise ValueError(f"histograms need num_bins >= 1, calibration_images >= 1 and 0 <= q_lo < q_hi <= 1; "
                             f"got {num_bins}, {calibration_images}, {quantiles}")
        self.num_bins, self.calibration_images = num_bins, calibration_images
        self.quantiles, self.sample_size = quantiles, sample_size
        self.generator = torch.Generator().manual_seed(seed)
        self.held: list[dict[str, list[Tensor]]] = []
        self.held_images = 0
        self.edges: list[Tensor] | None = None
        self.counts: dict[str, list[Tensor]] = {}

    def update(self, features: Mapping[str, Sequence[Tensor]]) -> None:
        """Add one minibatch: ``{name: [stage maps B×C×H×W]}`` (every call must name the same networks)."""
        batch = {name: [f.detach().float().cpu() for f in maps] for name, maps in features.items()}
        if self.edges is not None:
            self._bin(batch)
            return
        self.held.append(batch)
        self.held_images += next(iter(batch.values()))[0].shape[0]
        if self.held_images >= self.calibration_images:
            self._calibrate()

    def _calibrate(self) -> None:
        names = list(self.held[0])
        num_stages = len(self.held[0][names[0]])
        self.edges = []
        for s in range(num_stages):
            # The first calibration_images images of each network, in image order: the same tensor whatever the
            # minibatches were, so the seeded sample below picks the same values.
            pooled = torch.cat([torch.cat([batch[name][s] for batch in self.held])[: self.calibration_images]
                                .reshape(-1) for name in names])  # (N,)
            lo, hi = robust_range(pooled, self.quantiles, self.sample_size, self.generator)
            self.edges.append(torch.linspace(lo, hi, self.num_bins + 1, dtype=torch.float64))
        held, self.held = self.held, []
        for batch in held:
            self._bin(batch)

    def _bin(self, batch: Mapping[str, Sequence[Tensor]]) -> None:
        for name, maps in batch.items():
            counts = [bin_counts(f, e) for f, e in zip(maps, self.edges, strict=True)]
            if name in self.counts:
                counts = [a + b for a, b in zip(self.counts[name], counts, strict=True)]
            self.counts[name] = counts

    def result(self) -> dict:
        """Edges and counts: ``{"edges": [stage: (n+1,) array], "counts": {name: [stage: (n,) int array]},
        "underflow"/"overflow": {name: [stage: int]}, "total": {name: [stage: int]}}``."""
        if self.edges is None:
            if not self.held:
                raise ValueError("StageHistograms.result called before any update")
            self._calibrate()
        return {"edges": [e.numpy() for e in self.edges],
                "counts": {n: [c[1:-1].numpy() for c in cs] for n, cs in self.counts.items()},
                "underflow": {n: [int(c[0]) for c in cs] for n, cs in self.counts.items()},
                "overflow": {n: [int(c[-1]) for c in cs] for n, cs in self.counts.items()},
                "total": {n: [int(c.sum()) for c in cs] for n, cs in self.counts.items()}}


def density(counts: np.ndarray, edges: np.ndarray, total: int) -> np.ndarray:
    """Counts divided by (all values × bin width): integrates to the fraction of values inside the range."""
    return counts / (total * np.diff(edges))


def histogram_rows(result: Mapping) -> list[dict]:
    """CSV rows ``stage, model, bin_left, bin_right, count, density`` of :meth:`StageHistograms.result`; each
    (stage, model) also gets an underflow row (bin_left -inf) and an overflow row (bin_right inf), density empty."""
    rows = []
    for name, stage_counts in result["counts"].items():
        for s, (counts, edges) in enumerate(zip(stage_counts, result["edges"], strict=True)):
            total = result["total"][name][s]
            base = {"stage": s + 1, "model": name}
            rows.append({**base, "bin_left": -math.inf, "bin_right": float(edges[0]),
                         "count": result["underflow"][name][s], "density": ""})
            dens = density(counts, edges, total)
            rows.extend({**base, "bin_left": float(edges[i]), "bin_right": float(edges[i + 1]), "count": int(counts[i]),
                         "density": float(dens[i])} for i in range(counts.size))
            rows.append({**base, "bin_left": float(edges[-1]), "bin_right": math.inf,
                         "count": result["overflow"][name][s], "density": ""})
    return rows


def plot_histograms(result: Mapping, labels: Mapping[str, str], png: str, pdf: str) -> None:
    """Figure 4: one panel per stage, the density of every network as a step curve over the shared bins.

    Args:
        result: :meth:`StageHistograms.result`.
        labels: display name of each network (legend).
        png: PNG to write (atomically).
        pdf: PDF to write (atomically).
    """
    from matplotlib.figure import Figure

    num_stages = len(result["edges"])
    fig = Figure(figsize=(3.2 * num_stages, 3.0), dpi=120)
    axes = fig.subplots(1, num_stages, squeeze=False)[0]
    for s, ax in enumerate(axes):
        edges = result["edges"][s]
        for name, stage_counts in result["counts"].items():
            dens = density(stage_counts[s], edges, result["total"][name][s])
            ax.stairs(dens, edges, label=labels.get(name, name), linewidth=1.2)
        ax.set_title(f"stage {s + 1}", fontsize=10)
        ax.set_xlabel("feature value", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("density", fontsize=8)
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    save_figure(fig, png, pdf)
