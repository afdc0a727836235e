"""Whole-dataset HHA conversion time: NYU-size synthetic depth maps through ``primkd hha``, process start included.

Usage::

    PYTHONPATH=src python bench/hha_dataset.py                        # 1449 images of 480×640 (NYU Depth V2's count)
    PYTHONPATH=src python bench/hha_dataset.py --images 20 --in-library

Writes ``--images`` synthetic depth maps (rooms: floor, walls and ceiling seen from a pitched and rolled camera, 3%
of the pixels missing in blocks, 0.5% depth noise) as uint16 millimetre PNGs in the prepared layout of a temporary
folder, then times ``python -m primkd hha --data ... --out ... --force`` as a whole (interpreter start, imports, the
``hha.workers`` processes of params.yaml, PNG reading and writing): wall time, and CPU time of the command and its
worker processes (user + system). ``--in-library`` also times ``convert_dataset`` with the same workers in this
process, which leaves out the interpreter start and the imports. The command runs under ``-X importtime``, so its
import cost is printed too, with whether it imported torch.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from primkd.config import load_params
from primkd.data.hha import convert_dataset
from primkd.data.layout import NYU40_CLASSES, NYU_INTRINSICS, write_split
from primkd.io import write_json, write_png

REPO = Path(__file__).resolve().parents[1]
NYU_IMAGES = 1449  # NYU Depth V2 labelled set: 795 train + 654 test
NYU_TRAIN = 795


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=NYU_IMAGES, help="Number of depth maps.")
    parser.add_argument("--height", type=int, default=480, help="Depth map height.")
    parser.add_argument("--width", type=int, default=640, help="Depth map width.")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml",
                        help="Parameter file for the command (its hha.workers sets the processes).")
    parser.add_argument("--in-library", action="store_true",
                        help="Also time convert_dataset in this process (no interpreter start or imports).")
    parser.add_argument("--workdir", type=Path, help="Folder for the dataset and outputs (default: a temporary one).")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images must be at least 2 (one train and one test image)")
    return args


def room_depth(rng: np.random.Generator, height: int, width: int, intrinsics: dict) -> np.ndarray:
    """Depth (m) of a box-shaped room seen from a random pose, with missing blocks (0) and multiplicative noise."""
    pitch, roll = np.radians(rng.uniform(-20.0, 5.0)), np.radians(rng.uniform(-6.0, 6.0))
    cam_height, room_height = rng.uniform(1.0, 1.6), rng.uniform(2.4, 3.0)
    left, right, back = rng.uniform(1.2, 3.0), rng.uniform(1.2, 3.0), rng.uniform(2.5, 7.0)
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rotation = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]]) @ np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    u = (np.arange(1, width + 1) - intrinsics["cx"]) / intrinsics["fx"]  # 1-based principal point
    v = (np.arange(1, height + 1) - intrinsics["cy"]) / intrinsics["fy"]
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], 1.0), axis=-1) @ rotation.T  # world rays, y down
    depth = np.full((height, width), np.inf)
    # planes n·P = d in world coordinates (camera at the origin): floor, ceiling, back, left and right walls
    for axis, distance in ((1, cam_height), (1, cam_height - room_height), (2, back), (0, -left), (0, right)):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = distance / rays[..., axis]  # camera-z of the hit, since the camera ray has z = 1
        depth = np.where((t > 0) & (t < depth), t, depth)
    depth = np.minimum(depth, 10.0) * (1.0 + 0.005 * rng.standard_normal(depth.shape))
    for _ in range(rng.integers(5, 15)):  # missing blocks, ~3% of the pixels in all
        h, w = rng.integers(2, max(3, height // 12)), rng.integers(2, max(3, width // 12))
        top, left_col = rng.integers(0, height - h), rng.integers(0, width - w)
        depth[top:top + h, left_col:left_col + w] = 0.0
    return depth


def make_dataset(root: Path, images: int, height: int, width: int) -> None:
    """A prepared dataset (layout.py) holding only what the HHA stage reads: Depth PNGs, splits and meta.json."""
    scale_x, scale_y = width / 640, height / 480
    intrinsics = {"fx": NYU_INTRINSICS["fx"] * scale_x, "fy": NYU_INTRINSICS["fy"] * scale_y,
                  "cx": NYU_INTRINSICS["cx"] * scale_x, "cy": NYU_INTRINSICS["cy"] * scale_y}
    rng = np.random.default_rng(0)
    names = [f"{i:06d}" for i in range(images)]
    for name in names:
        depth_mm = np.rint(room_depth(rng, height, width, intrinsics) * 1000.0).astype(np.uint16)
        write_png(root / "Depth" / f"{name}.png", depth_mm)
    n_train = max(1, min(images - 1, round(images * NYU_TRAIN / NYU_IMAGES)))
    write_split(root, "train", names[:n_train])
    write_split(root, "test", names[n_train:])
    write_json(root / "meta.json", {"name": "synthetic-nyu-size", "classes": list(NYU40_CLASSES),
                                    "ignore_index": 255, "intrinsics": intrinsics, "depth_scale": 1000})


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system of this process and its reaped children) of ``fn()``."""
    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    start_wall, start_cpu = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - start_wall, cpu() - start_cpu


def run_command(data: Path, out: Path, params: Path, import_log: Path | None = None) -> None:
    """``python -m primkd hha --data ... --out ... --force`` in a fresh interpreter, failing loudly."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable] + (["-X", "importtime"] if import_log else []) + [
        "-m", "primkd", "hha", "--data", str(data), "--out", str(out), "--params", str(params), "--force",
        "--no-progress"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"primkd hha failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    if import_log:
        import_log.write_text(proc.stderr)


def import_summary(log: Path) -> tuple[float, bool]:
    """Seconds spent importing (the cumulative times of the top-level imports that ``-X importtime`` logs) and
    whether torch was imported."""
    total_us, torch = 0, False
    for line in log.read_text().splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # not an import line, or the header
        name = parts[2]
        if len(name) - len(name.lstrip()) == 1:  # nested imports are indented further
            total_us += int(parts[1])
        torch |= name.strip() == "torch"
    return total_us / 1e6, torch


def main(args: argparse.Namespace) -> dict:
    workers = load_params(args.params)["hha"]["workers"]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        data = root / "data"
        start = time.perf_counter()
        make_dataset(data, args.images, args.height, args.width)
        print(f"wrote {args.images} synthetic {args.height}x{args.width} depth PNGs in "
              f"{time.perf_counter() - start:.1f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        wall, cpu = timed(lambda: run_command(data, root / "hha", args.params, import_log=root / "importtime.txt"))
        import_s, torch = import_summary(root / "importtime.txt")
        written = len(list((root / "hha").glob("*.png")))
        if written != args.images:
            sys.exit(f"primkd hha wrote {written} HHA images, expected {args.images}")
        report = {"images": args.images, "size": [args.height, args.width], "workers": workers,
                  "command": {"wall_s": wall, "cpu_s": cpu}, "imports_s": import_s, "imports_torch": torch}
        print(f"primkd hha (whole command, {workers} worker processes): {wall:.1f} s wall, {cpu:.1f} s CPU, "
              f"{1e3 * cpu / args.images:.1f} ms CPU per image; its imports take {import_s:.2f} s "
              f"({'with' if torch else 'without'} torch)")
        if args.in_library:
            wall_lib, cpu_lib = timed(lambda: convert_dataset(data, root / "hha_lib", workers=workers, force=True,
                                                                    progress=False))
            report["in_library"] = {"wall_s": wall_lib, "cpu_s": cpu_lib}
            print(f"convert_dataset in this process ({workers} workers): {wall_lib:.1f} s wall, {cpu_lib:.1f} s CPU")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report["load_average_after"] = os.getloadavg()
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main(parse_args())
