"""A short PrimKD training on synthetic 480×640 scenes in the optimised setup; fails unless the loss falls.

Usage::

    PYTHONPATH=src python bench/gpu_train_check.py                          # CUDA: MiT-B2, 480×640, 300 iterations
    PYTHONPATH=src python bench/gpu_train_check.py --device cpu --variant mit_tiny --height 64 --width 96 --iters 40

Steps: (1) render ``--scenes`` synthetic scenes (primkd.data.synthetic) and their HHA in parallel processes, normalise
them as the datasets do and keep them on the device; (2) train the RGB teacher for ``--teacher-iters`` iterations
(cross-entropy) and freeze it; (3) train the CMX student with the PrimKD loss of the preset for ``--iters`` iterations
on random batches with random horizontal flips, in train_throughput.py's optimised setup (bf16 autocast on CUDA,
channels_last, teacher under no_grad, fused attention); (4) pass when the mean loss of the last ``--window``
iterations is below ``--max-ratio`` times that of the first window. Writes the loss curve and the verdict as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from train_throughput import device_name, prepare, setups, synchronize

from primkd.config import TrainConfig, load_params
from primkd.data.dataset import normalize
from primkd.data.hha import compute_hha
from primkd.data.layout import NYU40_CLASSES
from primkd.data.synthetic import render_scene, scene_seed
from primkd.distill.losses import PrimKDLoss
from primkd.engine.optim import build_optimizer
from primkd.io import write_json
from primkd.models.mit import MIT_VARIANTS
from primkd.models.segmentors import build_student, build_teacher

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="Device to train on; default cuda when available.")
    parser.add_argument("--variant", default="mit_b2", help="MiT variant of teacher and student.")
    parser.add_argument("--height", type=int, default=480, help="Scene height in pixels.")
    parser.add_argument("--width", type=int, default=640, help="Scene width in pixels.")
    parser.add_argument("--scenes", type=int, default=32, help="Synthetic scenes to train on.")
    parser.add_argument("--workers", type=int, default=16, help="Processes rendering scenes and HHA.")
    parser.add_argument("--iters", type=int, default=300, help="PrimKD student iterations.")
    parser.add_argument("--teacher-iters", type=int, default=100, help="Teacher iterations before distillation.")
    parser.add_argument("--batch", type=int, help="Images per iteration (default: the preset's train.batch_size).")
    parser.add_argument("--lr", type=float, help="Constant AdamW learning rate (default: the preset's train.lr).")
    parser.add_argument("--window", type=int, default=20, help="Iterations averaged at the start and at the end.")
    parser.add_argument("--max-ratio", type=float, default=0.8,
                        help="Pass when mean(last window) < max-ratio × mean(first window).")
    parser.add_argument("--preset", default="nyuv2_b2", help="params.yaml preset giving model, optimiser and kd.")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="The parameter file.")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "gpu_train_check.json",
                        help="JSON output: loss curve, window means, verdict.")
    return parser.parse_args(argv)


def scene_tensors(seed: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised RGB ``3×H×W``, normalised HHA ``3×H×W`` and labels ``H×W`` (int64) of one synthetic scene."""
    scene = render_scene(seed, height, width)
    depth_mm = scene["depth_mm"]
    hha = compute_hha(depth_mm / 1000.0, scene["intrinsics"], missing=depth_mm == 0)
    return normalize(scene["rgb"]), normalize(hha), torch.from_numpy(scene["label"].astype(np.int64))


def synthetic_set(args: argparse.Namespace, device: torch.device) -> list[torch.Tensor]:
    """RGB ``N×3×H×W``, HHA ``N×3×H×W`` and labels ``N×H×W`` of ``args.scenes`` training scenes, on ``device``."""
    seeds = [scene_seed(0, "train", i) for i in range(args.scenes)]
    with ProcessPoolExecutor(max(1, min(args.workers, args.scenes))) as pool:
        scenes = list(pool.map(scene_tensors, seeds, [args.height] * len(seeds), [args.width] * len(seeds)))
    return [torch.stack(parts).to(device) for parts in zip(*scenes)]


def batches(data: list[torch.Tensor], batch: int, gen: torch.Generator):
    """Endless random batches (RGB, HHA, labels), each image flipped horizontally with probability 0.5."""
    n = data[0].shape[0]
    while True:
        idx = torch.randint(0, n, (batch,), generator=gen)
        flip = (torch.rand(batch, generator=gen) < 0.5).to(data[0].device)
        out = []
        for x in data:
            x = x[idx.to(x.device)]
            mask = flip.view(-1, *[1] * (x.ndim - 1))  # (B, 1, ...) broadcast over the other axes
            out.append(torch.where(mask, x.flip(-1), x))
        yield out


def train_loop(step, data_iter, iters: int, device: torch.device) -> tuple[list[float], float]:
    """Run ``iters`` steps; the loss of each step and the seconds they took."""
    losses = []
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        losses.append(step(*next(data_iter)))
    synchronize(device)
    return [float(v) for v in losses], time.perf_counter() - start


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast context on ``device`` (a no-op when disabled)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def optimiser_step(loss: torch.Tensor, opt: torch.optim.Optimizer) -> torch.Tensor:
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def train_teacher(args: argparse.Namespace, cfg: dict, train_cfg: TrainConfig, data_iter, device: torch.device):
    """The RGB teacher trained with cross-entropy for ``args.teacher_iters`` iterations, frozen; its losses, seconds."""
    setup, m = setups(device, compile_=False)["optimised"], cfg["model"]
    teacher = prepare(build_teacher(args.variant, len(NYU40_CLASSES), m["decoder_embed_dim"], m["drop_path_rate"],
                                    m["teacher_decoder_bn_eps"]).train(), setup, device)
    ce = PrimKDLoss(channels=MIT_VARIANTS[args.variant]["embed_dims"]).to(device)
    opt = build_optimizer([teacher], train_cfg)

    def step(rgb, hha, labels) -> torch.Tensor:
        with autocast(device, setup.autocast):
            loss = ce(teacher(rgb.contiguous(memory_format=torch.channels_last))["logits"], labels)["loss"]
        return optimiser_step(loss, opt)

    losses, seconds = train_loop(step, data_iter, args.teacher_iters, device)
    return teacher.eval().requires_grad_(False), losses, seconds


def train_student(args: argparse.Namespace, cfg: dict, train_cfg: TrainConfig, data_iter, teacher: torch.nn.Module,
                  device: torch.device) -> tuple[list[float], float]:
    """PrimKD training of the CMX student for ``args.iters`` iterations; its losses and seconds."""
    setup, m, kd = setups(device, compile_=False)["optimised"], cfg["model"], cfg["kd"]
    student = prepare(build_student(args.variant, len(NYU40_CLASSES), m["decoder_embed_dim"], m["drop_path_rate"],
                                    m["decoder_bn_eps"]).train(), setup, device)
    criterion = PrimKDLoss(channels=MIT_VARIANTS[args.variant]["embed_dims"], alpha=kd["alpha"], beta=kd["beta"],
                           rule=kd["rule"], aligner=kd["aligner"], per_sample=kd["per_sample"],
                           kl_direction=kd["kl_direction"], temperature=kd["temperature"]).to(device)
    opt = build_optimizer([student, criterion], train_cfg)

    def step(rgb, hha, labels) -> torch.Tensor:
        rgb, hha = rgb.contiguous(memory_format=torch.channels_last), hha.contiguous(memory_format=torch.channels_last)
        with autocast(device, setup.autocast):
            out = student(rgb, hha)
            with torch.no_grad():
                t_out = teacher(rgb)
            loss = criterion(out["logits"], labels, out["fused"], t_out["logits"], t_out["features"])["loss"]
        return optimiser_step(loss, opt)

    return train_loop(step, data_iter, args.iters, device)


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    cfg = load_params(args.params, args.preset)
    train_cfg = TrainConfig.of(cfg)
    train_cfg = dataclasses.replace(train_cfg, lr=args.lr) if args.lr else train_cfg
    batch = args.batch or train_cfg.batch_size
    torch.manual_seed(0)

    # 1. data; 2. teacher; 3. PrimKD student (peak memory of this phase only)
    start = time.perf_counter()
    data_iter = batches(synthetic_set(args, device), batch, torch.Generator().manual_seed(0))
    data_s = time.perf_counter() - start
    teacher, teacher_losses, teacher_s = train_teacher(args, cfg, train_cfg, data_iter, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, student_s = train_student(args, cfg, train_cfg, data_iter, teacher, device)

    # 4. verdict: finite losses, and the last window's mean well below the first's
    w = min(args.window, max(1, args.iters // 2))
    first, last = float(np.mean(losses[:w])), float(np.mean(losses[-w:]))
    passed = bool(np.isfinite(losses).all() and last < args.max_ratio * first)
    report = {"device": device_name(device), "variant": args.variant, "size": [args.height, args.width],
              "batch": batch, "lr": train_cfg.lr, "scenes": args.scenes, "data_seconds": data_s,
              "teacher_iters": args.teacher_iters, "teacher_seconds": teacher_s,
              "teacher_loss_first_last": [teacher_losses[0], teacher_losses[-1]] if teacher_losses else [],
              "iters": args.iters, "student_seconds": student_s, "images_per_s": batch * args.iters / student_s,
              "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
              "window": w, "loss_first_window": first, "loss_last_window": last, "ratio": last / first,
              "max_ratio": args.max_ratio, "passed": passed, "losses": losses}
    write_json(args.out, report)
    print(f"{report['device']}: PrimKD {args.variant} {args.height}×{args.width} batch {batch}, {args.iters} "
          f"iterations in {student_s:.0f} s ({report['images_per_s']:.1f} img/s): loss {first:.3f} (first {w}) → "
          f"{last:.3f} (last {w}), ratio {last / first:.2f} → {'PASS' if passed else 'FAIL'}; JSON: {args.out}")
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    main(parse_args())
