"""The training loop shared by the teacher, the CMX baseline and the PrimKD students."""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from primkd.data.dataset import Augment, EpochSampler, RGBDDataset
from primkd.distill.losses import PrimKDLoss
from primkd.engine.checkpoint import architecture, build_model, load_model, save_model
from primkd.engine.evaluate import evaluate, model_inputs
from primkd.engine.optim import build_optimizer, build_scheduler
from primkd.io import write_json, write_text
from primkd.models.mit import MIT_VARIANTS

log = logging.getLogger(__name__)

LOSS_TERMS = ("loss", "seg", "pred", "feat")


@dataclass
class Run:
    """What to train.

    Attributes:
        name: run name (``teacher_rgb``, ``cmx``, an experiment name).
        kind: ``"teacher"`` (single-stream SegFormer) or ``"student"`` (CMX).
        inputs: batch keys fed to the network: ``["rgb"]``, ``["modal"]`` (depth/HHA teacher) or both.
        kd: distillation settings (a resolved ``kd`` section) or None for plain cross-entropy.
        teacher_path: model file of the frozen teacher, required with ``kd``.
    """

    name: str
    kind: str
    inputs: list[str]
    kd: dict | None = None
    teacher_path: Path | None = None
    info: dict = field(default_factory=dict)


def select_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible; set train.device: auto or cpu")
    return torch.device(name)


def build_loaders(cfg: dict, run: Run, data_root: Path, hha_root: Path | None) -> tuple[DataLoader, DataLoader]:
    """Training loader (augmented, shuffled by :class:`EpochSampler`) and test loader (full images)."""
    t = cfg["train"]
    needs_hha = "modal" in run.inputs or (run.kd is not None and run.kd["teacher_modality"] == "depth")
    hha = hha_root if needs_hha else None
    aug = Augment(crop=tuple(t["crop"]), scales=t["scales"], flip=t["flip"])
    train_set = RGBDDataset(data_root, "train", hha, augmentation=aug, seed=t["seed"], bgr=t["bgr"])
    test_set = RGBDDataset(data_root, "test", hha, bgr=t["bgr"])
    common = {"num_workers": t["num_workers"], "pin_memory": torch.cuda.is_available(),
              "persistent_workers": t["num_workers"] > 0}
    train_loader = DataLoader(train_set, batch_size=t["batch_size"], drop_last=True,
                              sampler=EpochSampler(len(train_set), t["seed"]), **common)
    if len(train_loader) == 0:
        raise ValueError(f"{data_root}/train.txt lists {len(train_set)} images, fewer than train.batch_size = "
                         f"{t['batch_size']}; lower the batch size or add training images")
    test_loader = DataLoader(test_set, batch_size=cfg["eval"]["batch_size"], shuffle=False, **common)
    return train_loader, test_loader


def load_teacher(run: Run, device: torch.device) -> tuple[nn.Module, list[str]]:
    """The frozen teacher: eval mode, no gradients; returns it with the batch keys it takes."""
    teacher, meta = load_model(run.teacher_path, device)
    teacher.requires_grad_(False)
    return teacher, meta["inputs"]


def build_loss(run: Run, variant: str) -> PrimKDLoss:
    """PrimKD loss for a distilled student, plain cross-entropy (no teacher terms) otherwise."""
    channels = MIT_VARIANTS[variant]["embed_dims"]
    if run.kd is None:
        return PrimKDLoss(channels=channels, use_pred=False, use_feat=False)
    kd = run.kd
    return PrimKDLoss(channels=channels, alpha=kd["alpha"], beta=kd["beta"], rule=kd["rule"], aligner=kd["aligner"],
                      per_sample=kd["per_sample"], kl_direction=kd["kl_direction"], temperature=kd["temperature"],
                      use_pred=kd["alpha"] > 0, use_feat=kd["beta"] > 0)


def train_step(model: nn.Module, criterion: PrimKDLoss, batch: dict, run: Run, device: torch.device,
               teacher: nn.Module | None, teacher_inputs: list[str]) -> dict[str, torch.Tensor]:
    """Forward the student (and the frozen teacher) on one batch; returns the named loss terms."""
    labels = batch["label"].to(device, non_blocking=True)
    out = model(*model_inputs(batch, run.inputs, device))
    if teacher is None:
        return criterion(out["logits"], labels)
    with torch.no_grad():
        t_out = teacher(*model_inputs(batch, teacher_inputs, device))
    return criterion(out["logits"], labels, student_fused=out["fused"], teacher_logits=t_out["logits"],
                     teacher_features=t_out["features"])


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def train(cfg: dict, run: Run, data_root: Path, hha_root: Path | None, out_dir: Path, progress: bool = True) -> dict:
    """Train one network and write ``model.pt``, ``curves.csv``, ``eval_curve.csv`` and ``train.json``.

    Args:
        cfg: resolved parameters (:func:`primkd.config.load_params`).
        run: what to train.
        data_root: prepared dataset folder.
        hha_root: HHA folder (needed when the network or its teacher reads depth).
        out_dir: output folder.
        progress: show progress bars.

    Returns:
        The summary written to ``train.json``.
    """
    t = cfg["train"]
    # 1. Seeds and device.
    torch.manual_seed(t["seed"])
    device = select_device(t["device"])
    # 2. Data.
    train_loader, test_loader = build_loaders(cfg, run, data_root, hha_root)
    num_classes = train_loader.dataset.num_classes
    # 3. Networks and loss (the aligners inside the loss are trained with the student).
    arch = architecture(cfg, run.kind, num_classes)
    model = build_model(arch).to(device)
    criterion = build_loss(run, arch["variant"]).to(device)
    teacher, teacher_inputs = load_teacher(run, device) if run.kd is not None else (None, [])
    # 4. Optimiser and per-iteration schedule.
    optimizer = build_optimizer([model, criterion], t)
    scheduler = build_scheduler(optimizer, t, len(train_loader))
    log.info("training %s (%s, %s) on %s: %d images, %d iterations/epoch, %d epochs", run.name, run.kind,
             arch["variant"], device, len(train_loader.dataset), len(train_loader), t["epochs"])
    # 5. Epochs.
    curves, eval_curve, start, seen = [], [], time.perf_counter(), 0
    for epoch in range(t["epochs"]):
        model.train()
        criterion.train()
        train_loader.sampler.set_epoch(epoch)
        sums = {k: 0.0 for k in LOSS_TERMS}
        stage_sum = torch.zeros(4)
        bar = tqdm(train_loader, desc=f"{run.name} epoch {epoch + 1}/{t['epochs']}", unit="it", disable=not progress,
                   leave=False)
        for batch in bar:
            terms = train_step(model, criterion, batch, run, device, teacher, teacher_inputs)
            if not torch.isfinite(terms["loss"]):
                bad = [k for k in LOSS_TERMS if not torch.isfinite(terms[k])]
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, iteration {scheduler.last_epoch}: "
                                         f"terms {bad}; lower train.lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            for k in LOSS_TERMS:
                sums[k] += float(terms[k].detach())
            stage_sum += terms["stage_mse"].detach().cpu()
            seen += batch["label"].shape[0]
            bar.set_postfix(loss=f"{float(terms['loss'].detach()):.3f}")
        n = len(train_loader)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **{k: v / n for k, v in sums.items()}}
        row.update({f"stage{i + 1}_mse": float(v) / n for i, v in enumerate(stage_sum)})
        curves.append(row)
        last = epoch + 1 == t["epochs"]
        if last or (t["eval_every"] and (epoch + 1) % t["eval_every"] == 0):
            m = evaluate(model, test_loader, num_classes, run.inputs, device, progress=progress)
            eval_curve.append({"epoch": epoch + 1, "miou": m["miou"], "macc": m["macc"], "pacc": m["pacc"]})
            log.info("%s epoch %d: loss %.4f, test mIoU %.4f", run.name, epoch + 1, row["loss"], m["miou"])
        else:
            log.info("%s epoch %d: loss %.4f", run.name, epoch + 1, row["loss"])
    elapsed = time.perf_counter() - start
    # 6. Outputs.
    info = {"run": run.name, "preset": cfg["preset"], "seed": t["seed"], "classes": train_loader.dataset.classes,
            "kd": run.kd, **run.info}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "curves.csv", _csv(curves))
    write_text(out_dir / "eval_curve.csv", _csv(eval_curve))
    summary = {"run": run.name, "kind": run.kind, "inputs": run.inputs, "backbone": arch["variant"],
               "seed": t["seed"], "device": str(device), "epochs": t["epochs"], "train_seconds": round(elapsed, 2),
               "images_per_second": round(seen / elapsed, 2),
               "parameters": sum(p.numel() for p in model.parameters()),
               "final_loss": curves[-1]["loss"], "test_miou_single_scale": eval_curve[-1]["miou"]}
    write_json(out_dir / "train.json", summary)
    save_model(out_dir / "model.pt", model, arch, run.inputs, info)
    return summary
