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


def fake_mode(per_seed: dict, macc: float = 0.6, pacc: float = 0.7, scales=(1.0,), flip: bool = False,
              epochs: dict | None = None):
    """One checkpoint × mode of an evaluation from ``{seed: miou}`` or ``{seed: (miou, macc, pacc)}`` (metrics in
    [0, 1]; two classes, IoU 0.4 and 0.6); ``epochs``: ``{seed: epoch}``."""
    from primkd.engine.results import ModeResult, SeedResult

    rows = {s: v if isinstance(v, tuple) else (v, macc, pacc) for s, v in per_seed.items()}
    seeds = tuple(SeedResult(s, *v, (epochs or {}).get(s)) for s, v in rows.items())
    return ModeResult(tuple(scales), flip, seeds, {"c0": 0.4, "c1": 0.6})


def write_evaluation(path: Path, last: dict, best: dict | None = None, per_image: dict | None = None,
                     model: str = "x") -> None:
    """``eval/<run>.json`` as ``primkd evaluate`` writes it, from ``{mode: fake_mode(...)}`` per checkpoint."""
    from primkd.engine.results import Evaluation

    Evaluation(model, 4, {"last": last, **({"best": best} if best else {})}, per_image).write(path)
