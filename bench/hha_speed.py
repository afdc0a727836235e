"""HHA encoding speed of the 480×640 fixture depth, side by side with the reference Depth2HHA-python, on one thread.

Usage::

    PYTHONPATH=src python bench/hha_speed.py                                   # primkd only
    PYTHONPATH=src .refs/hha-venv/bin/python bench/hha_speed.py --reference .refs/Depth2HHA-python

``--reference DIR`` is a checkout of charlesCXK/Depth2HHA-python (6c7c14b; README, "Development"), imported unmodified
(``getHHA.getHHA``). It needs numpy < 1.24 (it builds a ragged array in ``getRMatrix``), so with the reference the
script runs in an interpreter with the fixture's versions (numpy 1.23.5, scipy 1.10.1, opencv-python-headless
4.8.1.78, tqdm); primkd runs in the same process on the same libraries.

Each round encodes every scene once with the reference and ``--repeats`` times with primkd, alternating, so that a
change of machine load hits both columns alike. Reported: medians over all timed calls of the CPU time of this process
(``time.process_time``: what the encoder costs, less sensitive than the wall clock to other processes sharing the
machine) and of the wall time, and the ratios reference / primkd. Thread pools (OpenMP, BLAS, OpenCV) are pinned to
one thread before numpy is imported, so the numbers are per core.
"""

from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from primkd.data.hha import compute_hha  # noqa: E402
from primkd.io import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCENES = ("depth.npy", "depth_clean.npy")
NOT_MEASURED = ("reference Depth2HHA-python: not measured (pass --reference DIR, a checkout of "
                "charlesCXK/Depth2HHA-python; README, 'Development')")


def default_fixtures() -> Path:
    """The reference fixtures: $PRIMKD_FIXTURES, else the repository's copy ``tests/fixtures``."""
    return Path(os.environ.get("PRIMKD_FIXTURES", REPO / "tests" / "fixtures"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path,
                        help="Checkout of charlesCXK/Depth2HHA-python to time beside primkd (imported unmodified).")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds (reference once, primkd --repeats).")
    parser.add_argument("--repeats", type=int, default=10, help="primkd calls per scene and round.")
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), help="Depth files of <fixtures>/hha to encode.")
    parser.add_argument("--fixtures", type=Path, default=default_fixtures(),
                        help="The reference fixtures folder (holds hha/<scene> and hha/scene_meta.json).")
    parser.add_argument("--profile", type=int, default=0,
                        help="Also profile this many primkd calls on the first scene (cProfile, CPU-time timer) and "
                             "print the functions with the most own time.")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    return args


def thread_report() -> str:
    """The thread settings the timings run under, as one line."""
    env = ", ".join(f"{var}={os.environ.get(var)}" for var in THREAD_VARS)
    return f"threads: {env}, cv2.getNumThreads()={cv2.getNumThreads()}"


def load_reference(folder: Path) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """``getHHA(C, D, RD)`` of a Depth2HHA-python checkout, imported unmodified (it imports ``utils.*`` from its
    folder, so the folder goes first on sys.path)."""
    if not (folder / "getHHA.py").is_file() or not (folder / "utils" / "rgbd_util.py").is_file():
        sys.exit(f"{folder}: not a Depth2HHA-python checkout (getHHA.py, utils/rgbd_util.py missing); "
                 "see README, 'Development'")
    if "utils" in sys.modules:
        sys.exit(f"a module named 'utils' is already imported ({sys.modules['utils']}); it would shadow {folder}/utils")
    sys.path.insert(0, str(folder.resolve()))
    module = importlib.import_module("getHHA")
    return module.getHHA


def check_reference_runs(get_hha: Callable, camera: np.ndarray, depth: np.ndarray, folder: Path) -> np.ndarray:
    """One reference call (also the warm-up), with a one-line error if the libraries are too new for it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reference's ragged-array deprecation warning under numpy < 1.24
            return get_hha(camera, depth, depth)
    except ValueError as e:
        sys.exit(f"{folder}: the reference fails under numpy {np.__version__} ({e}); run this script with numpy "
                 "1.23.5, scipy 1.10.1, opencv-python-headless 4.8.1.78 (README, 'Development')")


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """Result, CPU ms and wall ms of one call."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.process_time() - start_cpu) * 1e3, (time.perf_counter() - start_wall) * 1e3


def parity(ours: np.ndarray, ref_rgb: np.ndarray, depth: np.ndarray) -> str:
    """Differences from the reference, in the terms of the fixture tolerances (fixtures/README.md)."""
    ours, ref_rgb = ours.astype(np.int64), ref_rgb.astype(np.int64)
    delta = np.abs(ours - ref_rgb)
    valid = depth != 0
    return (f"disparity differs at {int((delta[..., 0] > 0).sum())} px, height max |Δ| {int(delta[..., 1].max())} at "
            f"{100 * (delta[..., 1] > 0).mean():.3f}% px, angle differs at "
            f"{100 * (delta[..., 2][valid] > 0).mean():.3f}% of valid px")


def cpu_model() -> str:
    """The CPU model name as the machine reports it."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0]} ({len(names)} logical CPUs)" if names else platform.processor() or platform.machine()


def profile(depth: np.ndarray, intrinsics: dict, calls: int, rows: int = 12) -> str:
    """cProfile (CPU-time timer) of ``calls`` compute_hha calls: the functions with the most own time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile(timer=time.process_time)
    profiler.enable()
    for _ in range(calls):
        compute_hha(depth, intrinsics)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(rows)
    return text.getvalue().strip()


def load_scene(folder: Path, name: str) -> np.ndarray:
    path = folder / name
    if not path.is_file():
        sys.exit(f"{path}: fixture depth not found; pass --fixtures (a folder like tests/fixtures) "
                 "or set PRIMKD_FIXTURES")
    return np.load(path).astype(np.float64)


def main(args: argparse.Namespace) -> dict:
    cv2.setNumThreads(1)
    folder = args.fixtures / "hha"
    meta_path = folder / "scene_meta.json"
    if not meta_path.is_file():
        sys.exit(f"{meta_path}: not found; pass --fixtures (a folder like tests/fixtures) or set PRIMKD_FIXTURES")
    meta = json.loads(meta_path.read_text())
    intrinsics = {key: meta[key] for key in ("fx", "fy", "cx", "cy")}
    camera = np.array(meta["camera_matrix"], dtype=np.float64)
    depths = {name: load_scene(folder, name) for name in args.scenes}
    get_hha = load_reference(args.reference) if args.reference else None

    print(f"{cpu_model()}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"opencv {cv2.__version__}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(thread_report())
    samples = {name: {"primkd": {"cpu": [], "wall": []}, "reference": {"cpu": [], "wall": []}} for name in depths}
    checks = {}
    for name, depth in depths.items():  # untimed warm-up of both, and the parity of the two outputs
        ours = compute_hha(depth, intrinsics)
        if get_hha is not None:
            ref_bgr = check_reference_runs(get_hha, camera, depth, args.reference)
            checks[name] = parity(ours, ref_bgr[..., ::-1], depth)
    for _ in range(args.rounds):
        for name, depth in depths.items():
            if get_hha is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, cpu, wall = timed(lambda d=depth: get_hha(camera, d, d))
                samples[name]["reference"]["cpu"].append(cpu)
                samples[name]["reference"]["wall"].append(wall)
            for _ in range(args.repeats):
                _, cpu, wall = timed(lambda d=depth: compute_hha(d, intrinsics))
                samples[name]["primkd"]["cpu"].append(cpu)
                samples[name]["primkd"]["wall"].append(wall)

    results = {}
    print(f"\n{args.rounds} round(s); per round each scene once with the reference and {args.repeats}× with primkd; "
          "medians per 480×640 image\n")
    print("| scene | primkd CPU ms | primkd wall ms | reference CPU ms | reference wall ms | ratio CPU | ratio wall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in samples.items():
        row = {f"{who}_{kind}_ms": statistics.median(v) for who, d in s.items() for kind, v in d.items() if v}
        if get_hha is not None:
            row["ratio_cpu"] = row["reference_cpu_ms"] / row["primkd_cpu_ms"]
            row["ratio_wall"] = row["reference_wall_ms"] / row["primkd_wall_ms"]
            ref = (f"{row['reference_cpu_ms']:.0f} | {row['reference_wall_ms']:.0f} | {row['ratio_cpu']:.1f}× "
                   f"| {row['ratio_wall']:.1f}×")
        else:
            ref = "not measured | not measured | – | –"
        results[name] = row
        print(f"| {name} | {row['primkd_cpu_ms']:.1f} | {row['primkd_wall_ms']:.1f} | {ref} |")
    print()
    if get_hha is None:
        print(NOT_MEASURED)
    for name, text in checks.items():
        print(f"{name}: primkd vs reference output: {text}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.profile:
        name, depth = next(iter(depths.items()))
        print(f"\nprofile of {args.profile} primkd calls on {name}:\n{profile(depth, intrinsics, args.profile)}")
    report = {"command": " ".join(sys.argv), "numpy": np.__version__, "opencv": cv2.__version__,
              "threads": thread_report(), "rounds": args.rounds, "repeats": args.repeats,
              "reference": str(args.reference) if args.reference else None, "results": results, "parity": checks}
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main(parse_args())
