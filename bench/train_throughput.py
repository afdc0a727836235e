"""Training and evaluation throughput of the project's networks, side by side with the official CMX and PrimKD code.

Usage::

    PYTHONPATH=src python bench/train_throughput.py --device cpu          # MiT-B0, 120×160, batch 8, 1 thread
    PYTHONPATH=src python bench/train_throughput.py --device cpu \\
        --official-cmx .refs/RGBX_Semantic_Segmentation --official-primkd .refs/PrimKD
    PYTHONPATH=src python bench/train_throughput.py                       # CUDA: MiT-B2, 480×640, params batch

Every (task, configuration) is built once in this one process, and the timed runs alternate between them over
``--rounds`` rounds (the order rotating each round), so that a change of machine load hits every column alike.
Reported per (task, configuration): the median over rounds of images per CPU second of this process
(``time.process_time``, all its threads; on a shared machine less sensitive to other processes than the wall clock) and
of images per wall-clock second, each run being ``--iters`` steps after ``--warmup`` untimed ones; on CUDA also the
peak memory a run allocates above what is resident before it. Threads are pinned (``--threads``, default 1 on the
CPU) and printed.

Configurations:

* ``official`` (with ``--official-cmx DIR`` / ``--official-primkd DIR``): the classes of a checkout of
  huaaaliu/RGBX_Semantic_Segmentation (e251d86) or xiaoshideta/PrimKD (c816fd7), imported unmodified, in the step
  their train.py runs: CMX ``EncoderDecoder`` returning its cross-entropy, AdamW over ``group_weight`` groups; PrimKD
  ``EncoderDecoder3`` (the default ``hint`` student: one 1×1 aligner per stage) beside ``EncoderDecoder2`` (the frozen
  single-stream teacher, ``requires_grad=False``, eval mode, forwarded with the labels as train.py does), the KL of the
  student's prediction from the teacher's (alpha 1) and the largest of the four stage MSEs (beta 0.1). Only train.py's
  arithmetic around the classes is written here (train.py runs a training when imported). Without the options the
  official columns say "not measured".
* ``fp32_eager`` (as the official code trains): the project's networks, fp32, NCHW, the frozen teacher with
  ``requires_grad=False`` and no ``no_grad`` (as the official loop: no graph is recorded for it), attention computed
  explicitly (SDPA's math backend: softmax(QKᵀ·d^-0.5)·V materialised, as the official attention does).
* ``optimised``: bf16 autocast (CUDA only; CPUs run fp32), channels_last, the teacher under ``no_grad``, SDPA's fused
  attention kernels, and ``torch.compile`` with ``--compile``.

Tasks: ``train_teacher`` (SegFormer on RGB: cross-entropy, AdamW), ``train_cmx`` (the CMX student alone:
cross-entropy, AdamW; official: CMX), ``train_student`` (PrimKD: student and frozen teacher, KL and aligned-feature
terms with the official defaults alpha 1, beta 0.1, max rule, 1×1 aligners, per mini-batch; official: PrimKD),
``eval_single`` and ``eval_multi`` (``predict_probs`` at scale 1, and at the preset's scales with flip). Inputs are
synthetic tensors (random images, labels with 10% ignored pixels); the models are randomly initialised.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from primkd.config import TrainConfig, load_params
from primkd.data.layout import IGNORE_INDEX, NYU40_CLASSES
from primkd.distill.losses import PrimKDLoss
from primkd.engine.evaluate import predict_probs
from primkd.engine.optim import build_optimizer
from primkd.io import write_json
from primkd.models.mit import MIT_VARIANTS
from primkd.models.segmentors import build_student, build_teacher

REPO = Path(__file__).resolve().parents[1]
TASKS = ("train_teacher", "train_cmx", "train_student", "eval_single", "eval_multi")
CONFIGS = ("official", "fp32_eager", "optimised")
OFFICIAL_TASKS = {"train_cmx": "official_cmx", "train_student": "official_primkd"}  # task -> option naming its checkout
# Defaults per device type: (variant, height, width, batch); the CUDA ones are the paper's NYU setting.
DEFAULTS = {"cuda": ("mit_b2", 480, 640, None), "cpu": ("mit_b0", 120, 160, 8)}
OFFICIAL_KD = {"alpha": 1.0, "beta": 0.1, "rule": "max", "aligner": "single", "per_sample": False}  # train.py defaults
OFFICIAL_STAGE_LOSSES = ["loss1", "loss2", "loss3", "loss4"]  # train.py's --losses default: every stage
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Setup:
    """How the project's configuration runs its networks."""

    autocast: bool  # bf16 autocast around forward and loss
    channels_last: bool  # weights and inputs in NHWC memory format
    teacher_no_grad: bool  # frozen teacher under no_grad (else only requires_grad=False, as the official loop)
    fused_attention: bool  # SDPA picks its fused kernels (else the explicit math backend)
    compile: bool  # torch.compile the networks


def setups(device: torch.device, compile_: bool) -> dict[str, Setup]:
    """The project's two configurations; autocast only on CUDA (bf16 matmuls are slow on most CPUs)."""
    return {"fp32_eager": Setup(False, False, False, False, False),
            "optimised": Setup(device.type == "cuda", True, True, True, compile_)}


@dataclass
class Measurement:
    """One (task, configuration): its step, the images a step processes, and the timed runs."""

    task: str
    config: str
    step: Callable[[], None]
    images: int
    cpu_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="Device to run on (cuda, cuda:1, cpu); default cuda when available.")
    parser.add_argument("--variant", help="MiT variant (default mit_b2 on CUDA, mit_b0 on the CPU).")
    parser.add_argument("--height", type=int, help="Input height in pixels (default 480 on CUDA, 120 on the CPU).")
    parser.add_argument("--width", type=int, help="Input width in pixels (default 640 on CUDA, 160 on the CPU).")
    parser.add_argument("--batch", type=int,
                        help="Training images per step (default: the preset's train.batch_size on CUDA, 8 on the CPU).")
    parser.add_argument("--eval-batch", type=int, default=1, help="Test images per forward pass (the paper's: 1).")
    parser.add_argument("--iters", type=int, default=3, help="Steps per timed run.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps of each (task, configuration) first.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds; each reported rate is a median.")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["train_cmx", "train_student"],
                        help="Tasks to measure.")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS),
                        help="Configurations to measure (official only where a checkout is given).")
    parser.add_argument("--threads", type=int,
                        help="torch threads (torch.set_num_threads); default 1 on the CPU, PyTorch's choice on CUDA.")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks of the optimised setup.")
    parser.add_argument("--official-cmx", type=Path,
                        help="Checkout of huaaaliu/RGBX_Semantic_Segmentation (e251d86) to time beside train_cmx.")
    parser.add_argument("--official-primkd", type=Path,
                        help="Checkout of xiaoshideta/PrimKD (c816fd7) to time beside train_student.")
    parser.add_argument("--profile", type=int, default=0,
                        help="Also profile this many steps of each project training configuration (torch.profiler) "
                             "and print the operators with the most self CPU time.")
    parser.add_argument("--preset", default="nyuv2_b2",
                        help="params.yaml preset giving the optimiser, decoder width and evaluation scales.")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="The parameter file.")
    parser.add_argument("--out", type=Path, help="JSON output (default results/bench/train_throughput_<device>.json).")
    args = parser.parse_args(argv)
    kind = torch.device(args.device).type
    variant, height, width, batch = DEFAULTS.get(kind, DEFAULTS["cuda"])
    args.variant = args.variant or variant
    args.height, args.width = args.height or height, args.width or width
    args.batch = args.batch or batch or load_params(args.params, args.preset)["train"]["batch_size"]
    args.threads = args.threads or (1 if kind == "cpu" else None)
    args.out = args.out or REPO / "results" / "bench" / f"train_throughput_{kind}.json"
    if min(args.iters, args.rounds) < 1 or args.warmup < 0:
        parser.error("--iters and --rounds must be at least 1, --warmup at least 0")
    return args


def device_name(device: torch.device) -> str:
    """GPU model, or the CPU model and its logical CPU count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0]} ({len(names)} logical CPUs)" if names else platform.processor() or "unknown CPU"


def thread_report() -> str:
    """The thread settings the measurements run under, as one line."""
    env = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    return (f"threads: torch.get_num_threads()={torch.get_num_threads()}, "
            f"torch.get_num_interop_threads()={torch.get_num_interop_threads()}, {env}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(batch: int, height: int, width: int, num_classes: int, device: torch.device,
                    channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised-looking RGB and HHA ``B×3×H×W`` and labels ``B×H×W`` in 0..K-1 with 10% ignored pixels."""
    gen = torch.Generator().manual_seed(0)
    rgb, hha = torch.randn(2, batch, 3, height, width, generator=gen)
    labels = torch.randint(0, num_classes, (batch, height, width), generator=gen)
    labels[torch.rand(batch, height, width, generator=gen) < 0.1] = IGNORE_INDEX
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (rgb.to(device).contiguous(memory_format=fmt), hha.to(device).contiguous(memory_format=fmt),
            labels.to(device))


def prepare(model: nn.Module, setup: Setup, device: torch.device) -> nn.Module:
    model = model.to(device)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if setup.compile else model


def project_step(task: str, setup: Setup, cfg: dict, args: argparse.Namespace,
                 device: torch.device) -> tuple[Callable[[], None], int]:
    """One step of ``task`` with the project's networks in configuration ``setup``, and the images it processes."""
    m, K = cfg["model"], len(NYU40_CLASSES)
    channels = MIT_VARIANTS[args.variant]["embed_dims"]
    batch = args.batch if task.startswith("train") else args.eval_batch
    rgb, hha, labels = synthetic_batch(batch, args.height, args.width, K, device, setup.channels_last)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if setup.autocast else contextlib.nullcontext
    attention = contextlib.nullcontext if setup.fused_attention else (lambda: sdpa_kernel(SDPBackend.MATH))

    def teacher() -> nn.Module:
        return build_teacher(args.variant, K, m["decoder_embed_dim"], m["drop_path_rate"], m["teacher_decoder_bn_eps"])

    def student() -> nn.Module:
        return build_student(args.variant, K, m["decoder_embed_dim"], m["drop_path_rate"], m["decoder_bn_eps"])

    if task in ("train_teacher", "train_cmx"):
        net = prepare((teacher() if task == "train_teacher" else student()).train(), setup, device)
        inputs = [rgb] if task == "train_teacher" else [rgb, hha]
        criterion = PrimKDLoss(channels=channels, use_pred=False, use_feat=False).to(device)
        opt = build_optimizer([net], TrainConfig.of(cfg))

        def forward() -> torch.Tensor:
            return criterion(net(*inputs)["logits"], labels)["loss"]
    elif task == "train_student":
        criterion = PrimKDLoss(channels=channels, kl_direction=cfg["kd"]["kl_direction"],
                               temperature=cfg["kd"]["temperature"], **OFFICIAL_KD).to(device)
        frozen = teacher().eval().requires_grad_(False)
        net, frozen = prepare(student().train(), setup, device), prepare(frozen, setup, device)
        opt = build_optimizer([net, criterion], TrainConfig.of(cfg))
        teacher_mode = torch.no_grad if setup.teacher_no_grad else contextlib.nullcontext

        def forward() -> torch.Tensor:
            out = net(rgb, hha)
            with teacher_mode():
                t_out = frozen(rgb)
            return criterion(out["logits"], labels, out["fused"], t_out["logits"], t_out["features"])["loss"]
    else:
        net = prepare(student().eval(), setup, device)
        scales, flip = (cfg["eval"]["scales"], cfg["eval"]["flip"]) if task == "eval_multi" else ([1.0], False)

        def step() -> None:
            with torch.no_grad(), amp(), attention():
                predict_probs(net, [rgb, hha], scales, flip)
        return step, batch

    def step() -> None:
        with amp(), attention():
            loss = forward()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, batch


@contextlib.contextmanager
def official_checkout(folder: Path, name: str) -> Iterator[None]:
    """Import from an official checkout, unmodified: its folder first on sys.path, and its top-level packages
    (models, engine, utils, ...) removed from sys.modules afterwards, since the CMX and PrimKD checkouts use the same
    package names. The networks must be built inside (their constructors import their encoders and decoders)."""
    if not (folder / "models" / "builder.py").is_file():
        sys.exit(f"{folder}: not a checkout of {name} (models/builder.py missing); README, 'Development'")
    tops = {p.stem for p in folder.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    saved = {key: sys.modules.pop(key) for key in list(sys.modules) if key.split(".")[0] in tops}
    sys.path.insert(0, str(folder.resolve()))
    try:
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # the builders print and log
            yield
    finally:
        sys.path.remove(str(folder.resolve()))
        for key in [key for key in sys.modules if key.split(".")[0] in tops]:
            del sys.modules[key]
        sys.modules.update(saved)


def official_config(args: argparse.Namespace, cfg: dict, backbone: str) -> SimpleNamespace:
    """The fields of the official config object that the builders read."""
    return SimpleNamespace(backbone=backbone, decoder="MLPDecoder", decoder_embed_dim=cfg["model"]["decoder_embed_dim"],
                           num_classes=len(NYU40_CLASSES), pretrained_model=None, pretrained_model1=None,
                           bn_eps=cfg["model"]["decoder_bn_eps"], bn_momentum=0.1)


def official_optimizer(module: nn.Module, group_weight: Callable, cfg: dict) -> torch.optim.AdamW:
    """AdamW over the official ``group_weight`` parameter groups, as the official train.py builds it."""
    t = cfg["train"]
    groups = group_weight([], module, nn.BatchNorm2d, t["lr"])
    return torch.optim.AdamW(groups, lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"])


def official_step(task: str, args: argparse.Namespace, cfg: dict,
                  device: torch.device) -> tuple[Callable[[], None], int]:
    """One training step of the official code for ``task`` (train_cmx: CMX, train_student: PrimKD)."""
    if args.variant not in {f"mit_b{i}" for i in range(6)}:
        raise ValueError(f"the official code has no {args.variant}; use mit_b0 ... mit_b5")
    rgb, hha, labels = synthetic_batch(args.batch, args.height, args.width, len(NYU40_CLASSES), device)
    ce = nn.CrossEntropyLoss(reduction="mean", ignore_index=IGNORE_INDEX)
    if task == "train_cmx":
        with official_checkout(args.official_cmx, "huaaaliu/RGBX_Semantic_Segmentation"):
            builder, init_func = importlib.import_module("models.builder"), importlib.import_module("utils.init_func")
            model = builder.EncoderDecoder(cfg=official_config(args, cfg, args.variant), criterion=ce,
                                           norm_layer=nn.BatchNorm2d)
        model = model.to(device).train()
        opt = official_optimizer(model, init_func.group_weight, cfg)

        def step() -> None:
            loss = model(rgb, hha, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step, args.batch

    with official_checkout(args.official_primkd, "xiaoshideta/PrimKD"):
        builder, init_func = importlib.import_module("models.builder"), importlib.import_module("utils.init_func")
        student = builder.EncoderDecoder3(cfg=official_config(args, cfg, args.variant), criterion=ce,
                                          norm_layer=nn.BatchNorm2d, load=True, decode_init=0,
                                          losses=OFFICIAL_STAGE_LOSSES, lambda_mask=0.75)
        # load=False: with load=True the teacher's decoder is loaded from the teacher checkpoint, which a speed
        # measurement has no use for (random weights cost the same)
        teacher = builder.EncoderDecoder2(cfg=official_config(args, cfg, f"single_{args.variant}"), criterion=ce,
                                          norm_layer=nn.BatchNorm2d, load=False)
    student, teacher = student.to(device).train(), teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad = False
    opt = official_optimizer(student, init_func.group_weight, cfg)
    alpha, beta = OFFICIAL_KD["alpha"], OFFICIAL_KD["beta"]

    def step() -> None:
        logits, student_features, loss = student(rgb, hha, labels)
        t_logits, t_features, _ = teacher(rgb, None, labels)  # train.py forwards the teacher with the labels too
        t_logits = t_logits.detach()
        kl = (F.softmax(logits, 1) * (F.log_softmax(logits, 1) - F.log_softmax(t_logits, 1))).sum(1).mean()
        stage = torch.stack([F.mse_loss(s, t_features[int(n[-1]) - 1].detach())
                             for s, n in zip(student_features, OFFICIAL_STAGE_LOSSES)])
        feature = torch.where(stage == stage.max(), stage * beta, stage * 0.0).sum()  # train.py's "max" selection
        loss = loss + alpha * kl + feature
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, args.batch


def build(args: argparse.Namespace, cfg: dict, device: torch.device) -> tuple[list[Measurement], dict[str, str]]:
    """Every (task, configuration) to measure, and why an official one is not."""
    measurements, skipped = [], {}
    for task in args.tasks:
        for config in args.configs:
            torch.manual_seed(0)
            if config == "official":
                option = OFFICIAL_TASKS.get(task)
                if option is None:
                    continue  # no official counterpart
                if getattr(args, option) is None:
                    skipped[task] = f"{NOT_MEASURED} (pass --{option.replace('_', '-')} DIR; README, 'Development')"
                    continue
                try:
                    step, images = official_step(task, args, cfg, device)
                except ValueError as e:
                    skipped[task] = f"{NOT_MEASURED} ({e})"
                    continue
            else:
                step, images = project_step(task, setups(device, args.compile)[config], cfg, args, device)
            measurements.append(Measurement(task, config, step, images))
    return measurements, skipped


def run_rounds(measurements: list[Measurement], args: argparse.Namespace, device: torch.device) -> None:
    """Warm every measurement up, then time ``--iters`` steps of each per round, the order rotating each round."""
    for m in measurements:
        for _ in range(args.warmup):
            m.step()
    synchronize(device)
    for r in range(args.rounds):
        shift = r % len(measurements)
        for m in measurements[shift:] + measurements[:shift]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                resident = torch.cuda.memory_allocated(device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.iters):
                m.step()
            synchronize(device)
            m.cpu_s.append(time.process_time() - start_cpu)
            m.wall_s.append(time.perf_counter() - start_wall)
            if device.type == "cuda":
                m.peak_mib.append((torch.cuda.max_memory_allocated(device) - resident) / 2**20)


def profile(measurements: list[Measurement], steps: int, rows: int = 15) -> dict[str, str]:
    """Operator tables (self CPU time) of ``steps`` steps of each project training measurement."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    tables = {}
    for m in measurements:
        if m.config == "official" or not m.task.startswith("train"):
            continue
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                m.step()
        tables[f"{m.task}/{m.config}"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return tables


def summarise(measurements: list[Measurement], skipped: dict[str, str], iters: int) -> dict:
    """Medians per (task, configuration) and the ratios of the project's configurations to the official one."""
    results: dict[str, dict] = {task: {} for task in dict.fromkeys(m.task for m in measurements)}
    for m in measurements:
        per_cpu = [m.images * iters / s for s in m.cpu_s]
        per_wall = [m.images * iters / s for s in m.wall_s]
        results[m.task][m.config] = {"images_per_cpu_s": statistics.median(per_cpu),
                                     "images_per_s": statistics.median(per_wall), "runs_images_per_cpu_s": per_cpu,
                                     "runs_images_per_s": per_wall}
        if m.peak_mib:
            results[m.task][m.config]["peak_mib"] = statistics.median(m.peak_mib)
    for task, reason in skipped.items():
        results.setdefault(task, {})["official"] = {"skipped": reason}
    ratios = {}
    for task, res in results.items():
        r = {}
        for a, b in (("fp32_eager", "official"), ("optimised", "official"), ("optimised", "fp32_eager")):
            if "images_per_cpu_s" in res.get(a, {}) and "images_per_cpu_s" in res.get(b, {}):
                r[f"{a}/{b}"] = {k: res[a][k] / res[b][k] for k in ("images_per_cpu_s", "images_per_s")}
                if "peak_mib" in res[a] and res[b].get("peak_mib"):
                    r[f"{a}/{b}"]["peak_mib"] = res[a]["peak_mib"] / res[b]["peak_mib"]
        ratios[task] = r
    return {"results": results, "ratios": ratios}


def table(report: dict) -> str:
    """Markdown tables of a report: rates per configuration, then the ratios."""
    def cell(res: dict, key: str, fmt: str = "{:.2f}") -> str:
        if "skipped" in res:
            return NOT_MEASURED
        return fmt.format(res[key]) if key in res else "–"

    lines = ["| task | configuration | img per CPU-s | img/s (wall) | peak MiB |", "|---|---|---:|---:|---:|"]
    for task, res in report["results"].items():
        for config in CONFIGS:
            if config in res:
                r = res[config]
                lines.append(f"| {task} | {config} | {cell(r, 'images_per_cpu_s')} | {cell(r, 'images_per_s')} | "
                             f"{cell(r, 'peak_mib', '{:.0f}')} |")
    lines += ["", "| task | ratio | CPU time | wall | peak memory |", "|---|---|---:|---:|---:|"]
    for task, ratios in report["ratios"].items():
        for name, r in ratios.items():
            mem = f"{r['peak_mib']:.2f}×" if "peak_mib" in r else "–"
            lines.append(f"| {task} | {name} | {r['images_per_cpu_s']:.2f}× | {r['images_per_s']:.2f}× | {mem} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_params(args.params, args.preset)
    load_before = os.getloadavg()
    measurements, skipped = build(args, cfg, device)
    run_rounds(measurements, args, device)
    report = {"device": device_name(device), "torch": torch.__version__, "threads": thread_report(),
              "command": " ".join(sys.argv), "load_average_before": load_before,
              "load_average_after": os.getloadavg(),
              "settings": {k: str(v) for k, v in vars(args).items()},
              "setups": {name: asdict(s) for name, s in setups(device, args.compile).items()},
              **summarise(measurements, skipped, args.iters)}
    if args.profile:
        report["profile"] = profile(measurements, args.profile)
    write_json(args.out, report)
    print(f"{report['device']}, torch {torch.__version__}; {report['threads']}\n"
          f"{args.variant}, {args.height}×{args.width}, batch {args.batch} (train), {args.eval_batch} (eval); "
          f"median of {args.rounds} alternating rounds of {args.iters} steps after {args.warmup} warm-up steps; "
          f"load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in report['load_average_after'])} after\n{table(report)}")
    for task, reason in skipped.items():
        print(f"{task}, official: {reason}")
    for name, text in report.get("profile", {}).items():
        print(f"\nprofile of {args.profile} steps, {name}:\n{text}")
    print(f"JSON: {args.out}")
    return report


if __name__ == "__main__":
    main(parse_args())
