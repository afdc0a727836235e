"""Stage features of the project's networks, and linear CKA between them accumulated over a data set.

The single-stream SegFormer (RGB teacher, depth-only model) exposes its four stage outputs (after each stage's
LayerNorm) as ``features``; the CMX student exposes its four FFM outputs as ``fused``. Both are B×C_s×H_s×W_s at
strides 4, 8, 16, 32, so no hooks are needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from primkd.analysis.cka import CKAAccumulator
from primkd.engine.evaluate import model_inputs
from primkd.models.io import load_any


@dataclass
class LoadedModel:
    """A network in eval mode with the batch keys it takes (a model file's ``inputs``)."""

    model: nn.Module
    inputs: list[str]


def load_for_analysis(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a model file written by ``primkd train`` or an exported folder (eval mode, no gradients)."""
    model, meta = load_any(path, device)
    model.requires_grad_(False)
    return LoadedModel(model, list(meta["inputs"]))


@torch.no_grad()
def forward_features(net: LoadedModel, batch: dict, device: torch.device) -> tuple[Tensor, list[Tensor]]:
    """Run one network on a batch.

    Returns:
        Logits B×K×H×W and the four stage maps B×C_s×H_s×W_s: ``fused`` (FFM outputs) for a CMX student,
        ``features`` (stage outputs after LayerNorm) for a single-stream SegFormer.
    """
    out = net.model(*model_inputs(batch, net.inputs, device))
    stages = out["fused"] if "fused" in out else out["features"]
    return out["logits"], list(stages)


def iterate_features(nets: Mapping[str, LoadedModel], batches: Iterable[dict],
                     device: torch.device) -> Iterator[dict[str, list[Tensor]]]:
    """For each batch, the stage maps of every network: ``{name: [stage1, ..., stage4]}``."""
    for batch in batches:
        yield {name: forward_features(net, batch, device)[1] for name, net in nets.items()}


def match_spatial(x: Tensor, y: Tensor) -> Tensor:
    """``y`` (B×C×h×w) resized bilinearly (align_corners False) to the spatial size of ``x`` when they differ."""
    if y.shape[-2:] == x.shape[-2:]:
        return y
    return F.interpolate(y.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)


class PairwiseStageCKA:
    """Linear CKA per stage between pairs of named networks, accumulated one minibatch at a time.

    Samples are spatial positions of every test image, features are channels (see :mod:`primkd.analysis.cka`);
    memory is bounded by the channel counts (one C1×C2 moment set per pair and stage), whatever the data set size.
    When two stage maps differ in spatial size, the second is resized to the first (bilinear).

    Args:
        pairs: ``(a, b)`` network names; CKA compares the stage maps of ``a`` with those of ``b``.
        num_stages: stages per network (4 for MiT).
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], num_stages: int = 4) -> None:
        self.pairs = list(pairs)
        self.num_stages = num_stages
        self.acc = {(a, b, s): CKAAccumulator() for a, b in self.pairs for s in range(num_stages)}

    def update(self, features: Mapping[str, Sequence[Tensor]]) -> None:
        """Add one minibatch: ``{name: [stage maps]}`` holding at least every name in ``pairs``."""
        for a, b in self.pairs:
            for s in range(self.num_stages):
                x, y = features[a][s], features[b][s]
                self.acc[(a, b, s)].update(x, match_spatial(x, y))

    def rows(self) -> list[dict]:
        """``{"a", "b", "stage" (1-based), "cka", "samples"}`` for every pair and stage."""
        return [{"a": a, "b": b, "stage": s + 1, "cka": self.acc[(a, b, s)].value(), "samples": self.acc[(a, b, s)].n}
                for a, b in self.pairs for s in range(self.num_stages)]
