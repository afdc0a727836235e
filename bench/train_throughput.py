"""Training and evaluation throughput: the plain fp32 eager configuration against the optimised one, in one invocation.

Usage::

    PYTHONPATH=src python bench/train_throughput.py                      # CUDA if present: MiT-B2, 480×640
    PYTHONPATH=src python bench/train_throughput.py --device cpu         # tiny: mit_tiny, 64×96, batch 2

Configurations (the models, losses and optimiser are the project's; only how they run differs):

* ``fp32_eager``: as the official code trains: fp32, NCHW tensors, the frozen teacher run with autograd on, attention
  computed explicitly (SDPA's math backend, which materialises softmax(QKᵀ·d^-0.5) and multiplies it by V: the
  operations and memory of the official explicit form; the models call scaled_dot_product_attention).
* ``optimised``: bf16 autocast (CUDA only; CPUs run fp32), channels_last, the teacher under no_grad, attention through
  SDPA's fused kernels, and ``torch.compile`` with ``--compile``.

Tasks: ``train_teacher`` (SegFormer on RGB: forward, cross-entropy, backward, AdamW step), ``train_student`` (CMX with
the PrimKD loss: frozen-teacher forward, KL and aligned-feature terms, backward, AdamW step over student and aligners),
``eval_single`` and ``eval_multi`` (CMX ``predict_probs`` at scale 1, and at the preset's evaluation scales with flip).
Inputs are synthetic tensors (random images, labels with 10% ignored pixels).

Each (task, configuration) runs in a fresh process, so its peak memory is its own: on CUDA the peak of
``torch.cuda.max_memory_allocated`` (weights, optimiser state and activations), on the CPU the rise of the peak resident
set size over its value after the imports. Images/s is the median over ``--repeats`` timed runs of ``--iters`` steps
each, after ``--warmup`` untimed steps. The table and a JSON file (``--out``) give both configurations and the ratios
optimised / fp32_eager.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from primkd.config import load_params
from primkd.data.layout import IGNORE_INDEX, NYU40_CLASSES
from primkd.distill.losses import PrimKDLoss
from primkd.engine.evaluate import predict_probs
from primkd.engine.optim import build_optimizer
from primkd.models.mit import MIT_VARIANTS
from primkd.models.segmentors import build_student, build_teacher

REPO = Path(__file__).resolve().parents[1]
TASKS = ("train_teacher", "train_student", "eval_single", "eval_multi")
CONFIGS = ("fp32_eager", "optimised")
# Defaults per device type: (variant, height, width, batch); the CUDA ones are the paper's NYU setting.
DEFAULTS = {"cuda": ("mit_b2", 480, 640, None), "cpu": ("mit_tiny", 64, 96, 2)}


@dataclass(frozen=True)
class Setup:
    """How a configuration runs the same networks."""

    autocast: bool  # bf16 autocast around forward and loss
    channels_last: bool  # weights and inputs in NHWC memory format
    teacher_no_grad: bool  # frozen teacher under no_grad (else autograd records its graph)
    fused_attention: bool  # SDPA picks its fused kernels (else the explicit math backend)
    compile: bool  # torch.compile the networks


def setups(device: torch.device, compile_: bool) -> dict[str, Setup]:
    """The two configurations compared; autocast only on CUDA (bf16 matmuls are slow on most CPUs)."""
    return {"fp32_eager": Setup(False, False, False, False, False),
            "optimised": Setup(device.type == "cuda", True, True, True, compile_)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="Device to run on (cuda, cuda:1, cpu); default cuda when available.")
    parser.add_argument("--variant", help="MiT variant (default mit_b2 on CUDA, mit_tiny on the CPU).")
    parser.add_argument("--height", type=int, help="Input height in pixels (default 480 on CUDA, 64 on the CPU).")
    parser.add_argument("--width", type=int, help="Input width in pixels (default 640 on CUDA, 96 on the CPU).")
    parser.add_argument("--batch", type=int,
                        help="Training images per step (default: the preset's train.batch_size on CUDA, 2 on the CPU).")
    parser.add_argument("--eval-batch", type=int, default=1, help="Test images per forward pass (the paper's: 1).")
    parser.add_argument("--iters", type=int, default=10, help="Steps per timed run.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps before the timed runs.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs; images/s is their median.")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="Tasks to measure.")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of each measurement (torch.set_num_threads); default PyTorch's choice.")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks of the optimised setup.")
    parser.add_argument("--preset", default="nyuv2_b2",
                        help="params.yaml preset giving the model, optimiser, kd and multi-scale evaluation settings.")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="The parameter file.")
    parser.add_argument("--out", type=Path, help="JSON output (default results/bench/train_throughput_<device>.json).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: JSON spec of one measurement
    args = parser.parse_args(argv)
    kind = torch.device(args.device).type
    variant, height, width, batch = DEFAULTS.get(kind, DEFAULTS["cuda"])
    args.variant = args.variant or variant
    args.height, args.width = args.height or height, args.width or width
    args.batch = args.batch or batch or load_params(args.params, args.preset)["train"]["batch_size"]
    args.out = args.out or REPO / "results" / "bench" / f"train_throughput_{kind}.json"
    return args


def device_name(device: torch.device, threads: int | None = None) -> str:
    """GPU model, or the CPU model and the threads the measurements use."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{model}, {threads or torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(batch: int, height: int, width: int, num_classes: int, device: torch.device,
                    channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised-looking RGB and HHA ``B×3×H×W`` and labels ``B×H×W`` in 0..K-1 with 10% ignored pixels."""
    gen = torch.Generator().manual_seed(0)
    rgb, hha = torch.randn(2, batch, 3, height, width, generator=gen)
    labels = torch.randint(0, num_classes, (batch, height, width), generator=gen)
    labels[torch.rand(batch, height, width, generator=gen) < 0.1] = IGNORE_INDEX
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (rgb.to(device).contiguous(memory_format=fmt), hha.to(device).contiguous(memory_format=fmt),
            labels.to(device))


def prepare(model: torch.nn.Module, setup: Setup, device: torch.device) -> torch.nn.Module:
    model = model.to(device)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if setup.compile else model


def make_step(task: str, setup: Setup, cfg: dict, args: argparse.Namespace,
              device: torch.device) -> tuple[Callable[[], None], int]:
    """One step of ``task`` as a closure, and the images it processes."""
    m, K = cfg["model"], len(NYU40_CLASSES)
    channels = MIT_VARIANTS[args.variant]["embed_dims"]
    batch = args.batch if task.startswith("train") else args.eval_batch
    rgb, hha, labels = synthetic_batch(batch, args.height, args.width, K, device, setup.channels_last)
    teacher = build_teacher(args.variant, K, m["decoder_embed_dim"], m["drop_path_rate"], m["teacher_decoder_bn_eps"])
    student = build_student(args.variant, K, m["decoder_embed_dim"], m["drop_path_rate"], m["decoder_bn_eps"])
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if setup.autocast else contextlib.nullcontext
    attention = (contextlib.nullcontext if setup.fused_attention else lambda: sdpa_kernel(SDPBackend.MATH))

    if task == "train_teacher":
        net, criterion = prepare(teacher.train(), setup, device), PrimKDLoss(channels=channels).to(device)
        opt = build_optimizer([net], cfg["train"])

        def forward() -> torch.Tensor:
            return criterion(net(rgb)["logits"], labels)["loss"]
    elif task == "train_student":
        kd = cfg["kd"]
        criterion = PrimKDLoss(channels=channels, alpha=kd["alpha"], beta=kd["beta"], rule=kd["rule"],
                               aligner=kd["aligner"], per_sample=kd["per_sample"], kl_direction=kd["kl_direction"],
                               temperature=kd["temperature"]).to(device)
        if setup.teacher_no_grad:
            teacher.requires_grad_(False)
        net, frozen = prepare(student.train(), setup, device), prepare(teacher.eval(), setup, device)
        opt = build_optimizer([net, criterion], cfg["train"])
        teacher_mode = torch.no_grad if setup.teacher_no_grad else contextlib.nullcontext

        def forward() -> torch.Tensor:
            out = net(rgb, hha)
            with teacher_mode():
                t_out = frozen(rgb)
            return criterion(out["logits"], labels, out["fused"], t_out["logits"], t_out["features"])["loss"]
    else:
        net = prepare(student.eval(), setup, device)
        scales, flip = (cfg["eval"]["scales"], cfg["eval"]["flip"]) if task == "eval_multi" else ([1.0], False)

        def step() -> None:
            with amp(), attention():
                predict_probs(net, [rgb, hha], scales, flip)
        return step, batch

    def step() -> None:
        with amp(), attention():
            loss = forward()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, batch


def measure(spec: dict) -> dict:
    """Run one (task, configuration) measurement in this process: images/s of each timed run and peak MiB."""
    args = argparse.Namespace(**spec["args"])
    device = torch.device(args.device)
    setup = Setup(**spec["setup"])
    cfg = load_params(args.params, args.preset)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    step, images = make_step(spec["task"], setup, cfg, args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.iters):
            step()
        synchronize(device)
        rates.append(images * args.iters / (time.perf_counter() - start))
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_start) / 1024
    return {"images_per_s": rates, "median_images_per_s": statistics.median(rates), "peak_mib": peak_mib}


def run_worker(task: str, name: str, setup: Setup, args: argparse.Namespace) -> dict:
    """Measure in a fresh process; a failure (e.g. out of memory) is recorded, not raised."""
    shared = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("worker", "out")}
    spec = json.dumps({"task": task, "setup": asdict(setup), "args": shared})
    proc = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(results: dict[str, dict]) -> dict[str, float]:
    """optimised / fp32_eager for images/s (speed-up) and peak memory, when both ran."""
    base, opt = results.get("fp32_eager", {}), results.get("optimised", {})
    if "median_images_per_s" not in base or "median_images_per_s" not in opt:
        return {}
    return {"speedup": opt["median_images_per_s"] / base["median_images_per_s"],
            "memory_ratio": opt["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else float("nan")}


def table(report: dict) -> str:
    """Markdown table of the report: one row per task."""
    head = ("| task | fp32_eager img/s | optimised img/s | speed-up | fp32_eager peak MiB | optimised peak MiB "
            "| memory ratio |\n|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for task, res in report["results"].items():
        cells = []
        for key in ("median_images_per_s", "peak_mib"):
            for name in CONFIGS:
                r = res[name]
                cells.append(f"{r[key]:.1f}" if key in r else "failed")
        r = report["ratios"].get(task, {})
        speed, mem = (f"{r[k]:.2f}×" if k in r else "–" for k in ("speedup", "memory_ratio"))
        rows.append(f"| {task} | {cells[0]} | {cells[1]} | {speed} | {cells[2]} | {cells[3]} | {mem} |")
    return "\n".join([head, *rows])


def main(args: argparse.Namespace) -> None:
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    device = torch.device(args.device)
    configs = setups(device, args.compile)
    results = {task: {name: run_worker(task, name, setup, args) for name, setup in configs.items()}
               for task in args.tasks}
    report = {"device": device_name(device, args.threads), "torch": torch.__version__, "command": " ".join(sys.argv),
              "settings": {k: str(v) for k, v in vars(args).items() if k != "worker"},
              "setups": {name: asdict(s) for name, s in configs.items()}, "results": results,
              "ratios": {task: ratios(res) for task, res in results.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{report['device']}; {args.variant}, {args.height}×{args.width}, batch {args.batch} (train), "
          f"{args.eval_batch} (eval); median of {args.repeats} runs of {args.iters} steps\n{table(report)}\n"
          f"JSON: {args.out}")
    errors = [f"{t}/{n}: {r['error']}" for t, res in results.items() for n, r in res.items() if "error" in r]
    if errors:
        sys.exit("failed measurements:\n" + "\n".join(errors))


if __name__ == "__main__":
    main(parse_args())
