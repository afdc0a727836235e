"""A random prepared dataset for tests that train, evaluate or check data (tests/ is on pytest's pythonpath)."""

from pathlib import Path

import numpy as np

from primkd.data.layout import IGNORE_INDEX, write_split
from primkd.io import write_json, write_png

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, n_train: int = 4, n_test: int = 2, size=(32, 48), classes: int = 3) -> Path:
    """A random prepared dataset with a matching HHA folder (``root/hha``)."""
    rng = np.random.default_rng(0)
    H, W = size
    names = {"train": [f"tr{i}" for i in range(n_train)], "test": [f"te{i}" for i in range(n_test)]}
    for name in names["train"] + names["test"]:
        label = rng.integers(0, classes, (H, W)).astype(np.uint8)
        label[0, :] = IGNORE_INDEX
        write_png(root / "RGB" / f"{name}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        write_png(root / "Depth" / f"{name}.png", rng.integers(500, 4000, (H, W)).astype(np.uint16))
        write_png(root / "Label" / f"{name}.png", label)
        write_png(root / "hha" / f"{name}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    for split, items in names.items():
        write_split(root, split, items)
    write_json(root / "meta.json", {"name": "random", "classes": [f"c{i}" for i in range(classes)],
                                    "intrinsics": {"fx": 50.0, "fy": 50.0, "cx": 24.5, "cy": 16.5}})
    return root
