"""Rehearse a paper preset end to end at its real sizes, and measure what its full run would cost.

    make rehearse PRESET=nyuv2_b2                      # = .venv/bin/python bench/rehearse.py --preset nyuv2_b2
    python bench/rehearse.py --preset nyuv2_b4_official --tool both --iterations 2 --test-images 2
    python bench/rehearse.py --preset sunrgbd_b2 --count-only         # the FLOPs and the floor alone, no run

The rehearsal runs in its own scratch copy of the workflow (``rehearsal/<preset>/<tool>/``, git-ignored; the
repository's params.yaml and results are never touched), with a params.yaml that is the repository's plus only
these overrides (:func:`rehearsal_params`), none of which a real run carries:

- the schedule: ``train.epochs: 1`` of ``batch_size × iterations`` training images; the evaluation during training
  falls on that last epoch (``eval_every`` / ``eval_from`` stay the preset's: the last epoch is always evaluated);
- ``seeds: [0]`` and ``experiments: {primkd: {teacher: rgb}}``: the main comparison (RGB teacher, CMX, PrimKD); the
  depth teacher trains too, since the analysis needs it;
- the data's location: ``data.urls`` point at a server on 127.0.0.1 that this script runs, serving raw files in the
  dataset's real format (NYU: the labeled .mat in HDF5 layout, a splits.mat of these images, the published class
  mapping; SUN-RGBD: the archive and toolbox zips) generated at the real image sizes (tests/fake_data.py), and
  ``data.checksums`` are their checksums;
- the ImageNet weights the preset asks for (``model.pretrained: imagenet``) are a randomly initialised encoder
  written in the SegFormer release's format into the scratch copy's ``data/pretrained/``.

Everything else (image size, crop, batch, backbone, scales, windows, precision, the kd and model settings, the
worker counts) is the preset's. The tools run the whole pipeline (download, prepare, HHA, both teachers, CMX,
PrimKD, their evaluations, the analysis and REPORT.md, whose Δ columns compare with the paper and which says that
these numbers are meaningless after so few iterations).

Measured and printed: per training run the time per optimiser step (the first apart) and per image at the real
crop and batch, peak memory (train.json: process RSS, and on a GPU the peak allocated; the script's /proc poller:
each stage's main process and its DataLoader workers together), the evaluation time per test image in each mode,
every stage's wall time, a PROJECTION of the full preset's wall time on this machine from those, the FLOPs of one
training image (torch.utils.flop_counter, with the backward of grouped convolutions counted correctly, see
:func:`training_flops`) and the floor: the full run's FLOPs at a stated share of an H100's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the raw-format generators and the workflow copy are the tests' helpers

from fake_data import write_nyuv2_raw, write_sunrgbd_raw  # noqa: E402
from pipeline_utils import copy_workflow  # noqa: E402

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM, dense bf16 tensor-core peak (no sparsity)
# The real datasets' splits: the projection scales the rehearsal's measurements to them.
REAL_SPLITS = {"nyuv2": {"train": 795, "test": 654}, "sunrgbd": {"train": 5285, "test": 5050}}
MAIN_RUNS = ("teacher_rgb", "teacher_depth", "cmx", "primkd")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
HEADER = re.compile(r"^===== (\S+) pid \d+: primkd ")
EVAL_LINE = re.compile(r"\((last|best), (\w+), test split\): mIoU")  # engine.evaluate_run, the test split only
EVAL_TIME = re.compile(r" (\w+) mode: \d+ test images in [\d.]+ s \(([\d.]+) s per image\)")


# ---------------------------------------------------------------------------------------------------------------
# The scratch copy and its parameters
# ---------------------------------------------------------------------------------------------------------------

def rehearsal_params(raw: dict, preset: str, urls: dict[str, str], checksums: dict[str, str],
                     overrides: dict[str, object] | None = None) -> dict:
    """``raw`` (params.yaml's contents) with ``preset`` active and only the rehearsal's cuts (module docstring).

    ``overrides`` (dotted keys of the preset, e.g. ``{"train.batch_size": 2}``) cut further than a rehearsal may:
    the CI's reduced form uses them, and the summary lists them."""
    if preset not in raw["presets"]:
        raise SystemExit(f"bench/rehearse.py: no preset {preset!r} in params.yaml; choose one of "
                         f"{', '.join(sorted(raw['presets']))}")
    out = json.loads(json.dumps(raw))
    out["preset"] = preset
    own = out["presets"][preset]
    own["train"]["epochs"] = 1
    for key, value in (overrides or {}).items():
        section, *path = key.split(".")
        node = own.setdefault(section, {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    out["seeds"] = [0]
    out["experiments"] = {"primkd": {"teacher": "rgb"}}
    out["data"]["urls"] = {**out["data"]["urls"], **urls}
    out["data"]["checksums"] = {**out["data"]["checksums"], **checksums}
    return out


def effective(params: dict) -> dict:
    from primkd.config import resolve

    return resolve(params)


def write_fake_imagenet(path: Path, variant: str) -> None:
    """A randomly initialised MiT encoder in the SegFormer release's format (``mit_bX.pth``: official names)."""
    import torch

    from primkd.models.segmentors import build_teacher, teacher_to_official

    torch.manual_seed(0)
    encoder = build_teacher(variant, 2).encoder.state_dict()
    official = teacher_to_official({f"encoder.{k}": v for k, v in encoder.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k.removeprefix("backbone."): v for k, v in official.items()}, path)


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.server.files.get(self.path.lstrip("/"))
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile)

    def log_message(self, *args) -> None:
        pass


def serve(files: dict[str, Path]) -> tuple[ThreadingHTTPServer, dict[str, str]]:
    """A server on 127.0.0.1 (random port) for ``files`` by data.urls key; returns it and the URLs."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.files = dict(files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, {key: f"http://127.0.0.1:{httpd.server_address[1]}/{key}" for key in files}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


# ---------------------------------------------------------------------------------------------------------------
# Memory of each stage: a /proc poller
# ---------------------------------------------------------------------------------------------------------------

class StageMemory:
    """Polls /proc for the stage commands (``primkd <cmd> ... --log <file>``) below this process: per stage (its log
    file), the peak RSS of the main process (its VmHWM) and of the main process with its children (the DataLoader
    workers; the sum's maximum over the polls, so a short peak between two polls may be missed)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peaks, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StageMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _status(pid: str) -> dict[str, str]:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            return {}
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            procs = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    status = self._status(entry.name)
                    if status:
                        procs[entry.name] = status
            children: dict[str, list[str]] = {}
            for pid, status in procs.items():
                children.setdefault(status.get("PPid", "").strip(), []).append(pid)
            # only this process's descendants: on a shared machine other pipelines run stages of the same names
            below, todo = [], list(children.get(str(os.getpid()), ()))
            while todo:
                below.append(pid := todo.pop())
                todo.extend(children.get(pid, ()))
            for pid in below:
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                except OSError:
                    continue
                if "--log" not in argv or not any(a.endswith("primkd") for a in argv[:2]):
                    continue
                log = argv[argv.index("--log") + 1]
                kib = lambda st, key: int(st.get(key, "0 kB").split()[0])  # noqa: E731
                main = kib(procs[pid], "VmHWM")
                total = kib(procs[pid], "VmRSS") + sum(kib(procs[c], "VmRSS") for c in children.get(pid, ()))
                peak = self.peaks.setdefault(Path(log).stem, {"main_mib": 0.0, "with_workers_mib": 0.0})
                peak["main_mib"] = max(peak["main_mib"], round(main / 1024, 1))
                peak["with_workers_mib"] = max(peak["with_workers_mib"], round(total / 1024, 1))


# ---------------------------------------------------------------------------------------------------------------
# Reading the stage logs
# ---------------------------------------------------------------------------------------------------------------

def _stamp(line: str) -> float | None:
    m = LOG_TIME.match(line)
    if m:
        return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(
            tzinfo=datetime.UTC).timestamp()
    m = HEADER.match(line)
    return datetime.datetime.fromisoformat(m.group(1)).timestamp() if m else None


def log_timings(log: Path) -> dict:
    """Wall seconds of the last run in a stage log (its header to its last line) and, for an evaluation, the seconds
    per test image of each checkpoint and mode (engine.evaluate logs each mode's time; the ``(checkpoint, mode):
    mIoU`` line that follows names the checkpoint)."""
    lines = log.read_text(errors="replace").splitlines()
    start = max((i for i, line in enumerate(lines) if HEADER.match(line)), default=0)
    stamped = [(t, line) for line in lines[start:] if (t := _stamp(line)) is not None]
    if not stamped:
        return {}
    out: dict = {"wall_s": round(stamped[-1][0] - stamped[0][0], 1), "modes": {}}
    pending: dict[str, float] = {}
    for _, line in stamped:
        if m := EVAL_TIME.search(line):
            pending[m.group(1)] = float(m.group(2))
        elif (m := EVAL_LINE.search(line)) and m.group(2) in pending:
            out["modes"][f"{m.group(1)}/{m.group(2)}"] = pending.pop(m.group(2))
    return out


# ---------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------

def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """The backward of a convolution: each of grad_input and grad_weight costs the forward's FLOPs. torch's own
    formula (2.x) ignores ``groups`` and counts a depthwise 3×3 convolution's backward C times too high (257× for
    MiT's 256-channel Mix-FFN convolutions), which would triple a MiT training step's count."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def num_classes(source: str) -> int:
    from primkd.data.layout import NYU40_CLASSES
    from primkd.data.sunrgbd import SUNRGBD37_CLASSES

    return len({"nyuv2": NYU40_CLASSES, "sunrgbd": SUNRGBD37_CLASSES}[source])


def training_flops(cfg: dict, num_classes: int) -> dict:
    """FLOPs of one training image at the crop (batch 1; the counts are linear in the batch), counted on the meta
    device (shapes only): each teacher's forward and backward, CMX's forward and backward, PrimKD's teacher forward
    plus student forward and backward with its loss (aligners included), and the inference forward (one window)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from primkd.config import KDConfig, ModelConfig
    from primkd.engine.train import Objective, Run, build_loss
    from primkd.models.io import architecture, build_model

    aten = torch.ops.aten
    m = ModelConfig.of(cfg)
    h, w = cfg["train"]["crop"]
    kd = KDConfig(**cfg["kd"], teacher_modality="rgb")
    runs = {"cmx": Run("cmx", "student", ["rgb", "modal"]),
            "primkd": Run("primkd", "student", ["rgb", "modal"], kd=kd, teacher_path=None)}

    def count(fn) -> int:
        with FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: _conv_backward_flop}) as c:
            fn()
        return c.get_total_flops()

    with torch.device("meta"):
        x, label = torch.empty(1, 3, h, w), torch.zeros(1, h, w, dtype=torch.long)
        teacher = build_model(architecture(m, "teacher", num_classes)).train()
        out = {"teacher_train": count(lambda: teacher(x)["logits"].sum().backward())}
        teacher.eval()
        with torch.no_grad():
            out["teacher_forward"] = count(lambda: teacher(x))
            t_out = teacher(x)
        for name, run in runs.items():
            student = build_model(architecture(m, "student", num_classes)).train()
            objective = Objective(student, build_loss(run, m.backbone)).train()
            teacher_out = t_out if run.kd else None
            out[f"{name}_train"] = count(lambda o=objective, t=teacher_out: o([x, x], label, t)["loss"].backward())
        out["primkd_train"] += out["teacher_forward"]
        with torch.no_grad():
            out["student_forward"] = count(lambda: student.eval()(x, x))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------------------------------------------

def steps_per_epoch(n_train: int, batch: int, fill_last_batch: bool) -> int:
    """Optimiser steps of one epoch (engine.train.epoch_samples: the official epoch adds one filled batch)."""
    return n_train // batch + (1 if fill_last_batch else 0)


def evaluations_during_training(epochs: int, every: int, start: int) -> int:
    from primkd.engine.train import evaluation_due

    return sum(evaluation_due(e, epochs, every, start) for e in range(1, epochs + 1))


def _schedule(cfg_full: dict) -> dict:
    t = cfg_full["train"]
    split = REAL_SPLITS[cfg_full["data"]["source"]]
    steps = steps_per_epoch(split["train"], t["batch_size"], t["fill_last_batch"]) * t["epochs"]
    return {"real_split": split, "steps_per_run": steps, "train_images_per_run": steps * t["batch_size"],
            "evaluations_during_training": evaluations_during_training(t["epochs"], t["eval_every"], t["eval_from"]),
            "seeds": len(cfg_full["seeds"]), "students": {"main": 1, "grid": len(cfg_full["experiments"])}}


def floors(cfg_full: dict, flops: dict, share: float) -> dict:
    """The full preset's FLOPs and its floor at ``share`` of an H100's dense bf16 peak, for the main comparison (both
    teachers, CMX and PrimKD at every seed of the repository's ``seeds``) and for the whole grid (every experiment of
    params.yaml): counted from the FLOPs of one image alone, so it needs no rehearsal (``--count-only``)."""
    s = _schedule(cfg_full)
    test, evals = s["real_split"]["test"], s["evaluations_during_training"]
    run_flops = {}
    for run in MAIN_RUNS:
        train, forward = ("teacher_train", "teacher_forward") if run.startswith("teacher") else (f"{run}_train",
                                                                                                   "student_forward")
        run_flops[run] = s["train_images_per_run"] * flops[train] + (evals + 1) * test * flops[forward]
    out = {**s}
    for scope, students in s["students"].items():
        fl = (run_flops["teacher_rgb"] + run_flops["teacher_depth"]
              + s["seeds"] * (run_flops["cmx"] + students * run_flops["primkd"]))
        out[scope] = {"runs": 2 + s["seeds"] * (1 + students), "flops": fl,
                      "h100_floor_s": round(fl / (share * H100_BF16_DENSE_TFLOPS * 1e12), 1)}
    return out


def project(cfg_full: dict, measured: dict, flops: dict, share: float) -> dict:
    """The full preset's wall time on this machine (a PROJECTION from the measured per-step and per-image times) and
    its floor (:func:`floors`)."""
    out = floors(cfg_full, flops, share)
    split, steps, evals = out["real_split"], out["steps_per_run"], out["evaluations_during_training"]
    per_run = {}
    for run in MAIN_RUNS:
        m = measured["runs"].get(run)
        if not m or m.get("step_s") is None:
            continue
        single = m.get("eval_single_s_per_image") or 0.0
        final = sum(m.get("eval_s_per_image", {}).values())  # the evaluate stage: every mode and checkpoint
        per_run[run] = round(steps * m["step_s"] + evals * split["test"] * single + split["test"] * final, 0)
    hha = measured.get("hha_s_per_image")
    data_s = (hha or 0.0) * (split["train"] + split["test"])
    out["hha_s"] = round(data_s)
    for scope, students in out["students"].items():
        if not {"teacher_rgb", "cmx", "primkd"} <= set(per_run):
            break
        teachers = per_run["teacher_rgb"] + per_run.get("teacher_depth", per_run["teacher_rgb"])
        wall = data_s + teachers + out["seeds"] * (per_run["cmx"] + students * per_run["primkd"])
        out[scope].update(projected_wall_s=round(wall), projected_wall_days=round(wall / 86400, 2))
    out["per_run_projected_s"] = per_run
    return out


# ---------------------------------------------------------------------------------------------------------------
# Driving the tools
# ---------------------------------------------------------------------------------------------------------------

def tool_command(tool: str, cores: int) -> list[list[str]]:
    if tool == "dvc":
        return [["dvc", "init", "--no-scm", "-q"], ["dvc", "repro"]]
    return [["snakemake", "--cores", str(cores), "all"]]


def run_tool(tool: str, root: Path, log: Path, cores: int) -> float:
    """Run the whole pipeline in ``root`` with ``tool``; its output goes to ``log``. Returns the wall seconds."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(root / "src"), PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    with open(log, "a") as out:
        for cmd in tool_command(tool, cores):
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            if subprocess.run(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
                raise SystemExit(f"bench/rehearse.py: `{' '.join(cmd)}` failed in {root}; log {log}:\n{tail}")
    return time.perf_counter() - start


def measurements(root: Path, cfg: dict, memory: dict) -> dict:
    """Per training run: steps, step time, per-image time, memory; per evaluation: seconds per image and mode; the
    HHA time per image; every stage's wall time."""
    results = root / "results" / cfg["preset"]
    logs = {p.stem: log_timings(p) for p in sorted((results / "logs").glob("*.log"))}
    evals = json.loads((results / "eval" / "cmx.json").read_text()) if (results / "eval" / "cmx.json").is_file() \
        else {}
    n_test = evals.get("num_test_images")
    batch = cfg["train"]["batch_size"]
    runs = {}
    for run in MAIN_RUNS:
        folder = results / "models" / run
        train_json = folder / "train.json" if run.startswith("teacher") else folder / "seed0" / "train.json"
        if not train_json.is_file():
            continue
        tj = json.loads(train_json.read_text())
        step = tj.get("step_seconds") or {}
        step_s = step.get("median_after_first") or step.get("first")
        log_name = f"train_{run}" if run.startswith("teacher") else f"train_{run}_seed0"
        eval_log = logs.get(f"evaluate_{run}" if not run.startswith("teacher") else
                            f"evaluate_teacher_{run.removeprefix('teacher_')}", {})
        modes = eval_log.get("modes", {})
        runs[run] = {"iterations": tj.get("iterations"), "step_first_s": step.get("first"), "step_s": step_s,
                     "s_per_image": round(step_s / batch, 3) if step_s else None,
                     "peak_memory_train_json": tj.get("peak_memory"), "peak_memory_polled": memory.get(log_name),
                     "train_stage_wall_s": logs.get(log_name, {}).get("wall_s"),
                     "eval_s_per_image": modes, "eval_single_s_per_image": modes.get("last/single"),
                     "eval_memory_polled": memory.get(f"evaluate_{run}") or
                     memory.get(f"evaluate_teacher_{run.removeprefix('teacher_')}")}
    hha_wall = logs.get("hha", {}).get("wall_s")
    images = n_test + cfg["_train_images"] if n_test else None
    return {"runs": runs, "test_images": n_test, "hha_s_per_image": round(hha_wall / images, 3) if hha_wall and
            images else None, "stage_wall_s": {k: v.get("wall_s") for k, v in logs.items()},
            "stage_memory": memory}


def report_text(summary: dict) -> str:
    """The printed summary: the measured table, the projection (labelled) and the floor."""
    lines = [f"Rehearsal of {summary['preset']} ({summary['tool']}, {summary['device']}); load average "
             f"{summary['load_before']} before, {summary['load_after']} after; {summary['date']}",
             f"  whole pipeline: {summary['pipeline_wall_s']:.0f} s; overrides beyond the schedule: "
             f"{summary['overrides'] or 'none'}",
             "  run            iters  step 1 (s)  step (s)  s/image  peak RSS MiB (train.json | with workers)"
             "  eval s/image by mode"]
    m = summary["measured"]
    for run, r in m["runs"].items():
        pm, polled = r["peak_memory_train_json"] or {}, r["peak_memory_polled"] or {}
        cuda = f", GPU {pm['cuda_allocated_mib']:.0f}" if pm.get("cuda_allocated_mib") else ""
        lines.append(f"  {run:<14} {r['iterations']!s:>5}  {r['step_first_s']!s:>10}  {r['step_s']!s:>8}  "
                     f"{r['s_per_image']!s:>7}  {pm.get('rss_mib')!s:>8} | {polled.get('with_workers_mib')!s:<8}"
                     f"{cuda}  {json.dumps(r['eval_s_per_image'])}")
    lines.append(f"  HHA: {m['hha_s_per_image']} s/image; test images {m['test_images']}")
    return "\n".join(lines + flops_text(summary))


def flops_text(summary: dict) -> list[str]:
    """The FLOPs of one training image and the full preset's floor, with the PROJECTION where a rehearsal measured
    one (``--count-only`` has none)."""
    f = summary["flops"]
    lines = [f"  FLOPs of one training image at the crop (GFLOP): teacher fwd+bwd {f['teacher_train'] / 1e9:.0f}, "
             f"CMX fwd+bwd {f['cmx_train'] / 1e9:.0f}, PrimKD (teacher fwd + student fwd+bwd) "
             f"{f['primkd_train'] / 1e9:.0f}; inference forward: teacher {f['teacher_forward'] / 1e9:.0f}, "
             f"student {f['student_forward'] / 1e9:.0f}"]
    p = summary["projection"]
    projected = "projected_wall_s" in p["main"]
    lines.append(f"  {'PROJECTION (not measured) of the full preset on this machine' if projected else 'Full preset'}"
                 f": {p['steps_per_run']} steps per run, {p['evaluations_during_training']} evaluations during "
                 f"training, {p['seeds']} seeds")
    for scope in ("main", "grid"):
        s = p[scope]
        here = f"{s['projected_wall_s']} s = {s['projected_wall_days']} days here; " if "projected_wall_s" in s else ""
        lines.append(f"    {scope:<5} ({s['runs']} trainings): {here}floor at {summary['h100_share']:.0%} of an "
                     f"H100's {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s bf16: {s['h100_floor_s']} s "
                     f"({s['flops'] / 1e15:.1f} PFLOP)")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True, help="a paper preset of params.yaml (nyuv2_b2, nyuv2_b4_official, ...)")
    p.add_argument("--tool", choices=("dvc", "snakemake", "both"), default="both")
    p.add_argument("--iterations", type=int, default=2, help="optimiser steps per training (the first is timed apart)")
    p.add_argument("--test-images", type=int, default=2)
    p.add_argument("--scratch", type=Path, default=REPO / "rehearsal", help="parent of the scratch copies")
    p.add_argument("--share", type=float, default=0.4, help="share of the H100's bf16 peak for the floor")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a further preset override (YAML value), e.g. train.batch_size=2: not a rehearsal of the "
                        "preset any more (the CI's reduced form); listed in the summary")
    p.add_argument("--out", type=Path, help="summary JSON (default <scratch>/<preset>/summary_<tool>.json)")
    p.add_argument("--count-only", action="store_true",
                   help="only count the FLOPs of one training image and the full preset's floor (seconds, runs "
                        "nothing, writes only --out)")
    return p.parse_args(argv)


def full_config(raw: dict, preset: str, overrides: dict[str, object]) -> dict:
    """The preset's effective configuration with its full schedule, and the further overrides (the CI's reduced form
    projects what it ran)."""
    full = effective({**raw, "preset": preset})
    for key, value in overrides.items():
        section, *path = key.split(".")
        node = full[section]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return full


def count_only(raw: dict, preset: str, overrides: dict[str, object], share: float, out: Path | None) -> dict:
    full = full_config(raw, preset, overrides)
    flops = training_flops(full, num_classes(full["data"]["source"]))
    summary = {"preset": preset, "overrides": overrides, "flops": flops, "h100_share": share,
               "projection": floors(full, flops, share)}
    if out:
        out.write_text(json.dumps(summary, indent=1))
    print("\n".join([f"FLOPs and floor of {preset} (counted, nothing run); overrides: {overrides or 'none'}",
                     *flops_text(summary)]), flush=True)
    return summary


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    probe = effective(rehearsal_params(raw, args.preset, {}, {}, overrides))
    source, batch = probe["data"]["source"], probe["train"]["batch_size"]
    if source not in REAL_SPLITS:
        raise SystemExit(f"bench/rehearse.py: preset {args.preset} reads data.source {source!r}; a rehearsal needs a "
                         f"real dataset's format ({', '.join(REAL_SPLITS)})")
    if args.count_only:
        return [count_only(raw, args.preset, overrides, args.share, args.out)]
    n_train = batch * args.iterations
    base = args.scratch / args.preset
    if base.exists():
        shutil.rmtree(base)
    raw_dir = base / "served"
    files = (write_nyuv2_raw(raw_dir, n_train, args.test_images) if source == "nyuv2"
             else write_sunrgbd_raw(raw_dir, n_train, args.test_images))
    httpd, urls = serve(files)
    checksums = {key: sha256(path) for key, path in files.items()}
    params = rehearsal_params(raw, args.preset, urls, checksums, overrides)
    cfg = effective(params)
    cfg["_train_images"] = n_train
    flops = training_flops(cfg, num_classes(source))
    summaries = []
    try:
        for tool in (("dvc", "snakemake") if args.tool == "both" else (args.tool,)):
            root = copy_workflow(base / tool)
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            env = dict(os.environ, PYTHONPATH=str(root / "src"))
            subprocess.run([sys.executable, "-m", "primkd.stages", "--write"], cwd=root, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            if cfg["model"]["pretrained"] == "imagenet":
                write_fake_imagenet(root / cfg["model"]["pretrained_dir"] / f"{cfg['model']['backbone']}.pth",
                                    cfg["model"]["backbone"])
            load_before = round(os.getloadavg()[0], 2)
            with StageMemory() as memory:
                wall = run_tool(tool, root, base / f"{tool}.log", os.cpu_count() or 1)
            report = root / "results" / args.preset / "REPORT.md"
            text = report.read_text()
            if "Δ" not in text or "numbers are meaningless" not in text:
                raise SystemExit(f"bench/rehearse.py: {report} lacks the Δ columns or the short-schedule warning")
            import torch

            measured = measurements(root, cfg, memory.peaks)
            summary = {"preset": args.preset, "tool": tool, "date": datetime.datetime.now(datetime.UTC)
                       .isoformat(timespec="seconds"), "device": "cuda: " + torch.cuda.get_device_name()
                       if torch.cuda.is_available() and cfg["train"]["device"] != "cpu" else
                       f"cpu ({os.cpu_count()} cores)", "load_before": load_before,
                       "load_after": round(os.getloadavg()[0], 2), "pipeline_wall_s": round(wall, 1),
                       "overrides": overrides, "train_images": n_train, "report": str(report),
                       "measured": measured, "flops": flops, "h100_share": args.share,
                       "projection": project(full_config(raw, args.preset, overrides), measured, flops,
                                             args.share)}
            out = args.out or base / f"summary_{tool}.json"
            out.write_text(json.dumps(summary, indent=1))
            print(report_text(summary), flush=True)
            summaries.append(summary)
    finally:
        httpd.shutdown()
        httpd.server_close()
    return summaries


if __name__ == "__main__":
    main()
