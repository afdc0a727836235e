"""Time the HHA encoding of the 480×640 fixture depth on one CPU core.

Usage: ``PYTHONPATH=src python bench/hha_speed.py [--repeats 20] [--fixtures ../shared/fixtures]``. Thread pools
(OpenMP, BLAS, OpenCV) are limited to one thread before numpy is imported, so the number is per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from primkd.data.hha import compute_hha  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="Number of timed runs per depth map.")
    parser.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures",
                        help="The shared fixtures folder (holds hha/depth.npy and hha/scene_meta.json).")
    return parser.parse_args(argv)


def time_runs(depth: np.ndarray, intrinsics: dict, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of ``repeats`` calls of compute_hha, after one untimed warm-up call.

    The CPU time (user + system of this process) is less sensitive than the wall clock to other processes that share
    the machine.
    """
    compute_hha(depth, intrinsics)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        compute_hha(depth, intrinsics)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return wall, cpu


def main(args: argparse.Namespace) -> None:
    cv2.setNumThreads(1)
    folder = args.fixtures / "hha"
    meta = json.loads((folder / "scene_meta.json").read_text())
    intrinsics = {key: meta[key] for key in ("fx", "fy", "cx", "cy")}
    medians = {}
    for name in ("depth.npy", "depth_clean.npy"):
        depth = np.load(folder / name)
        wall, cpu = time_runs(depth, intrinsics, args.repeats)
        medians[name] = statistics.median(wall), statistics.median(cpu)
        print(f"{name:16s} {depth.shape[0]}x{depth.shape[1]}: wall median {medians[name][0]:6.1f} ms "
              f"(min {min(wall):6.1f}, max {max(wall):6.1f}), CPU median {medians[name][1]:6.1f} ms, "
              f"{args.repeats} runs")
    wall_ms, cpu_ms = medians["depth.npy"]
    print(f"summary: compute_hha takes {wall_ms:.1f} ms (CPU {cpu_ms:.1f} ms) per 480x640 image on one core, "
          f"median of {args.repeats} runs; the reference Depth2HHA-python takes about 3300 ms")


if __name__ == "__main__":
    main(parse_args())
