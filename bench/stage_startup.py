"""Start-up of a pipeline stage, a baseline checkout against a candidate, alternated in one run.

Each checkout runs its own ``.venv/bin/primkd`` (an editable install of its own ``src``). Per round, for each
checkout (the order flips every round, so a drift in the machine's load hits both alike):

- ``primkd train --help``: wall and CPU time (user + system, from ``wait4``) of the whole process;
- a smoke training stage (``primkd train --role teacher`` on the smoke preset): wall and CPU time from the start of
  the process until its first training line (``training teacher_rgb ...``), the import and set-up a stage pays
  before its first iteration; the process is then killed.

Torch, OpenMP and MKL are held to one thread (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``; the smoke preset's
``resources.train.cpus_per_task`` is 1 too), and no ``.pyc`` is written (``PYTHONDONTWRITEBYTECODE=1``): each
checkout runs with the bytecode its venv was installed with. The 1-minute load average is recorded before every run.

    python bench/stage_startup.py --baseline /work/main --rounds 7 --out startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_LINE = "training teacher_rgb"
TICK = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True, help="Checkout with its own .venv (e.g. main's).")
    p.add_argument("--candidate", type=Path, default=REPO, help="Checkout with its own .venv (default: this one).")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--data", type=Path, help="Folder for the smoke dataset (prepared and HHA); default: a temporary "
                                             "one, prepared by the candidate")
    p.add_argument("--out", type=Path, help="JSON file of every run and the medians.")
    return p.parse_args(argv)


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # No .pyc written during the runs, so that every round of a checkout starts from the same files: a venv holds
    # the .pyc files its installer wrote (`make venv` compiles them) and no others.
    return dict(e, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                PYTHONDONTWRITEBYTECODE="1")


def load() -> float:
    return os.getloadavg()[0]


def time_help(checkout: Path) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen([str(checkout / ".venv/bin/primkd"), "train", "--help"], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{checkout}: primkd train --help exited with {proc.returncode}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, all its threads (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def time_stage(checkout: Path, data: Path, work: Path) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(dir=work))
    cmd = [str(checkout / ".venv/bin/primkd"), "train", "--params", str(checkout / "params.yaml"), "--preset", "smoke",
           "--role", "teacher", "--modality", "rgb", "--data", str(data / "prepared"), "--hha", str(data / "hha"),
           "--out-dir", str(out / "teacher_rgb"), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env(), cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if FIRST_LINE in line:
            wall, cpu = time.perf_counter() - start, cpu_seconds(proc.pid)
            proc.kill()
            proc.wait()
            return {"wall_s": wall, "cpu_s": cpu}
    proc.wait()
    tail = "".join(lines)[-2000:]
    raise SystemExit(f"{checkout}: the stage ended ({proc.returncode}) before {FIRST_LINE!r}:\n{tail}")


def prepare(checkout: Path, data: Path) -> None:
    primkd = str(checkout / ".venv/bin/primkd")
    common = ["--params", str(checkout / "params.yaml"), "--preset", "smoke"]
    if not (data / "prepared").is_dir():
        subprocess.run([primkd, "prepare", *common, "--out", str(data / "prepared")], env=env(), check=True)
    if not (data / "hha").is_dir():
        subprocess.run([primkd, "hha", *common, "--data", str(data / "prepared"), "--out", str(data / "hha")],
                       env=env(), check=True)


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    return {f"median_{k}": statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s")}


def main(args: argparse.Namespace) -> dict:
    checkouts = {"baseline": args.baseline.resolve(), "candidate": args.candidate.resolve()}
    for name, path in checkouts.items():
        if not (path / ".venv/bin/primkd").is_file():
            raise SystemExit(f"--{name} {path}: no .venv/bin/primkd there; run `make venv` in it")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data or work / "data"
        prepare(checkouts["candidate"], data)
        runs = {name: {"help": [], "stage": []} for name in checkouts}
        for r in range(args.rounds):
            order = list(checkouts) if r % 2 == 0 else list(reversed(checkouts))
            for name in order:
                for kind, fn in (("help", lambda p: time_help(p)), ("stage", lambda p: time_stage(p, data, work))):
                    before = load()
                    runs[name][kind].append({**fn(checkouts[name]), "load_1min": before})
                    row = runs[name][kind][-1]
                    print(f"round {r + 1} {name:9s} {kind:5s} wall {row['wall_s']:6.2f} s  cpu {row['cpu_s']:6.2f} s  "
                          f"load {before:.2f}", flush=True)
    report = {"checkouts": {k: str(v) for k, v in checkouts.items()}, "rounds": args.rounds,
              "threads": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1", "cpus": os.cpu_count(), "runs": runs,
              "medians": {name: {kind: summarise(rs) for kind, rs in kinds.items()} for name, kinds in runs.items()}}
    loads = [row["load_1min"] for kinds in runs.values() for rs in kinds.values() for row in rs]
    report["load_1min_range"] = [min(loads), max(loads)]
    for kind in ("help", "stage"):
        for name in checkouts:
            m = report["medians"][name][kind]
            print(f"median {kind:5s} {name:9s} wall {m['median_wall_s']:6.2f} s  cpu {m['median_cpu_s']:6.2f} s")
    print(f"load average (1 min) {loads and min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} CPUs")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
