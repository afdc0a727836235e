"""Pictures of labels and prepared datasets: the fixed label palette and the contact sheet of a dataset's first
test images (used by the hha stage, inference and the analysis figures)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from primkd.data.layout import IGNORE_INDEX, NYU40_CLASSES, Layout, depth_scale, read_meta, read_split
from primkd.io import read_image, save_figure


def label_palette() -> np.ndarray:
    """Fixed 256×3 uint8 colours for label maps: 40 distinct NYU-40 colours (tab20 + tab20b), black elsewhere."""
    from matplotlib import colormaps

    colors = np.concatenate([colormaps["tab20"].colors, colormaps["tab20b"].colors])  # (40, 3) in [0, 1]
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(colors)] = np.rint(np.asarray(colors) * 255)
    return palette


def contact_sheet(data_root: str | os.PathLike, out_png: str | os.PathLike, num: int = 6,
                  hha_root: str | os.PathLike | None = None) -> None:
    """Write a PNG grid (atomically) of the first ``num`` test images of a prepared dataset.

    Columns: RGB, depth in metres (meta.json's ``depth_scale``; turbo colour map over the shown images' valid range,
    holes black), label
    (:func:`label_palette`, legend below) and, if ``hha_root`` is given, ``<hha_root>/<name>.png``.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    layout = Layout(Path(data_root))
    names = read_split(data_root, "test")[:num]
    rgbs = [read_image(layout.rgb(n)) for n in names]
    scale = depth_scale(read_meta(data_root))
    depths = [read_image(layout.depth(n), "depth").astype(np.float32) / scale for n in names]
    labels = [read_image(layout.label(n), "gray") for n in names]
    valid = np.concatenate([d[d > 0] for d in depths])
    vmin, vmax = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
    columns = ["RGB", "depth (m)", "label"] + (["HHA"] if hha_root is not None else [])
    h, w = rgbs[0].shape[:2]
    fig = Figure(figsize=(2.6 * len(columns), 2.6 * h / w * len(names) + 0.9), dpi=110)
    axes = fig.subplots(len(names), len(columns), squeeze=False)
    cmap = colormaps["turbo"].with_extremes(bad="black")
    palette = label_palette()
    for row, name in enumerate(names):
        panels = [rgbs[row], np.ma.masked_equal(depths[row], 0), palette[labels[row]]]
        if hha_root is not None:
            panels.append(read_image(Path(hha_root) / f"{name}.png"))
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, cmap=cmap if col == 1 else None, vmin=vmin if col == 1 else None,
                      vmax=vmax if col == 1 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col] + (f" {vmin:.1f}–{vmax:.1f}" if col == 1 else ""), fontsize=9)
        axes[row, 0].set_ylabel(name, fontsize=8)
    shown = sorted(set(np.unique(np.concatenate([lab.ravel() for lab in labels]))) - {IGNORE_INDEX})
    fig.legend(handles=[Patch(color=palette[c] / 255, label=NYU40_CLASSES[c]) for c in shown], loc="lower center",
               ncol=min(8, len(shown)), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.96, bottom=0.9 / fig.get_figheight(), wspace=0.03, hspace=0.03)
    save_figure(fig, out_png)
