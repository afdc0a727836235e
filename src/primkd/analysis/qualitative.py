"""Qualitative predictions (the paper's Figure 3): RGB, HHA, ground truth and each model's prediction per image.

Label maps are drawn with the fixed palette of :func:`primkd.data.viz.label_palette` (class k ↔ colour k, the
ignore label 255 black), and a legend lists the classes that appear in the figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from primkd.analysis.features import LoadedModel, forward_features
from primkd.data.dataset import RGBDDataset
from primkd.data.layout import IGNORE_INDEX
from primkd.data.viz import label_palette
from primkd.io import save_figure


@dataclass
class Sample:
    """One figure row: raw images (uint8 H×W×3), the ground truth and each model's prediction (uint8 H×W)."""

    name: str
    rgb: np.ndarray
    hha: np.ndarray | None
    label: np.ndarray
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@torch.no_grad()
def predict_samples(nets: Mapping[str, LoadedModel], dataset: RGBDDataset, indices: Sequence[int],
                    device: torch.device) -> list[Sample]:
    """Predict test images ``indices`` of ``dataset`` (full size, single scale) with every network.

    Args:
        nets: display name → network, in column order.
        dataset: test split (with HHA when a network reads it).
        indices: images to show.
        device: where to run the networks.
    """
    samples = []
    for index in indices:
        images, label = dataset.load(index)
        item = dataset[index]
        batch = {k: v.unsqueeze(0) for k, v in item.items() if torch.is_tensor(v)}  # (1, C, H, W) per input
        sample = Sample(item["name"], images[0], images[1] if len(images) > 1 else None, label)
        for name, net in nets.items():
            logits, _ = forward_features(net, batch, device)
            sample.predictions[name] = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)  # (H, W)
        samples.append(sample)
    return samples


def classes_present(samples: Sequence[Sample]) -> list[int]:
    """Sorted class indices found in the ground truths and predictions (the ignore label excluded)."""
    maps = [m for s in samples for m in (s.label, *s.predictions.values())]
    return sorted(set(np.unique(np.concatenate([m.ravel() for m in maps])).tolist()) - {IGNORE_INDEX})


def qualitative_figure(samples: Sequence[Sample], class_names: Sequence[str], png: str, pdf: str) -> None:
    """Write the figure: columns RGB, HHA (when present), ground truth, then one per prediction, one row per image.

    Args:
        samples: :func:`predict_samples` output (every sample with the same prediction columns).
        class_names: name of class k (legend).
        png: PNG to write (atomically).
        pdf: PDF to write (atomically).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = label_palette()
    with_hha = samples[0].hha is not None
    columns = ["RGB", *(["HHA"] if with_hha else []), "ground truth", *samples[0].predictions]
    shown = classes_present(samples)
    ncol = min(8, max(1, len(shown)))
    legend_height = 0.25 + 0.2 * math.ceil(len(shown) / ncol)  # inches below the panels
    h, w = samples[0].label.shape
    fig = Figure(figsize=(2.2 * len(columns), 2.2 * h / w * len(samples) + 0.3 + legend_height), dpi=120)
    axes = fig.subplots(len(samples), len(columns), squeeze=False)
    for row, sample in enumerate(samples):
        panels = [sample.rgb, *([sample.hha] if with_hha else []), palette[sample.label],
                  *(palette[p] for p in sample.predictions.values())]
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(sample.name, fontsize=8)
    fig.legend(handles=[Patch(color=palette[c] / 255, label=class_names[c]) for c in shown], loc="lower center",
               ncol=ncol, fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.04, right=0.99, top=1 - 0.3 / fig.get_figheight(),
                        bottom=legend_height / fig.get_figheight(), wspace=0.03, hspace=0.03)
    save_figure(fig, png, pdf)
