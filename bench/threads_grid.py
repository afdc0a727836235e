"""Time one demo training stage over a grid of core budgets and DataLoader workers, alternating the configurations.

Each configuration is a ``(cpus_per_task, num_workers)`` pair written into a copy of the parameter file
(``presets.<preset>.resources.train.cpus_per_task`` and ``presets.<preset>.train.num_workers``); the stage splits
those cores as every stage does (``primkd.resources.plan_threads``: DataLoader workers first, torch threads the
cores left), so the table shows what the resources keys buy. The CMX student is trained for ``--epochs`` epochs from
scratch in a fresh folder each time (a whole ``primkd train`` process: start-up included), the configurations
alternate within each round, and the table gives medians of wall time and of the child's CPU time.

Usage: ``python bench/threads_grid.py --work /tmp/grid --epochs 3 --rounds 3 [--configs 1:0 2:0 2:1]``; the demo
data are prepared (prepare, hha) into ``--work`` on first use. Run it on an otherwise idle machine: the point is
which split is fastest when the stage has the cores to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="Parameter file to start from.")
    parser.add_argument("--preset", default="demo", help="Preset whose training stage is timed.")
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (data, runs, parameter copies).")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per timed training.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds; each runs every configuration once.")
    parser.add_argument("--configs", nargs="+", default=["1:0", "2:0", "2:1", "2:2"],
                        help="cpus_per_task:num_workers pairs.")
    return parser.parse_args(argv)


def primkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "primkd", *args]


def params_copy(args: argparse.Namespace, cpus: int, workers: int) -> Path:
    """The parameter file with the configuration's keys, ``--epochs`` epochs, one seed and no intermediate tests."""
    raw = yaml.safe_load(args.params.read_text())
    preset = raw["presets"][args.preset]
    preset.setdefault("resources", {}).setdefault("train", dict(raw["resources"]["train"]))["cpus_per_task"] = cpus
    preset["train"].update(num_workers=workers, epochs=args.epochs, eval_every=0,
                           warmup_epochs=min(preset["train"].get("warmup_epochs", 1), args.epochs))
    raw["seeds"] = [0]
    path = args.work / f"params_{cpus}_{workers}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare_data(args: argparse.Namespace) -> tuple[Path, Path]:
    data, hha = args.work / "prepared", args.work / "hha"
    if not hha.is_dir():
        common = ["--params", str(args.params), "--preset", args.preset, "--no-progress"]
        subprocess.run(primkd("prepare", *common, "--out", str(data)), check=True)
        subprocess.run(primkd("hha", *common, "--data", str(data), "--out", str(hha)), check=True)
    return data, hha


def time_one(params: Path, data: Path, hha: Path, out: Path, preset: str) -> tuple[float, float, dict]:
    """Wall and child CPU seconds of one training from scratch, and the thread plan it recorded."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = primkd("train", "--params", str(params), "--preset", preset, "--role", "student", "--seed", "0",
                 "--data", str(data), "--hha", str(hha), "--out-dir", str(out / "model"),
                 "--checkpoint-dir", str(out / "ckpt"), "--no-progress")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})  # as DVC starts a stage
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    plan = json.loads((out / "model" / "train.json").read_text()).get("threads") or {}
    return wall, cpu, plan


def main(args: argparse.Namespace) -> dict:
    """Run the grid and print its table; returns ``{"cpus:workers": {"plan", "wall_s", "cpu_s"}}``."""
    args.work.mkdir(parents=True, exist_ok=True)
    data, hha = prepare_data(args)
    configs = [tuple(int(x) for x in c.split(":")) for c in args.configs]
    files = {c: params_copy(args, *c) for c in configs}
    times: dict[tuple, list[tuple[float, float]]] = {c: [] for c in configs}
    plans: dict[tuple, dict] = {}
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.preset} CMX, {args.epochs} epochs, "
          f"{args.rounds} rounds, configurations alternating", flush=True)
    for r in range(args.rounds):
        for c in configs:
            wall, cpu, plans[c] = time_one(files[c], data, hha, args.work / f"run_{c[0]}_{c[1]}", args.preset)
            times[c].append((wall, cpu))
            print(f"round {r + 1} cpus {c[0]} workers {c[1]}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    print(f"\nload at the end {os.getloadavg()[0]:.2f}\n")
    print("| cpus_per_task | num_workers asked | torch threads | DataLoader workers | wall median | CPU median |")
    print("|---:|---:|---:|---:|---:|---:|")
    out = {}
    for c in configs:
        p, wall, cpu = plans[c], [w for w, _ in times[c]], [u for _, u in times[c]]
        print(f"| {c[0]} | {c[1]} | {p.get('torch_threads', '?')} | {p.get('workers', '?')} | "
              f"{statistics.median(wall):.1f} s | {statistics.median(cpu):.1f} s |")
        out[f"{c[0]}:{c[1]}"] = {"plan": p, "wall_s": wall, "cpu_s": cpu}
    return out


if __name__ == "__main__":
    main(parse_args())
