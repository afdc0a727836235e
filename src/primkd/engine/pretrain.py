"""The pretrain stage: the demo's ImageNet-1K.

The paper starts the RGB teacher and both CMX branches from ImageNet-1K MiT weights; the demo's small MiT has none.
This stage makes them: it trains the encoder (params.yaml ``pretrain.backbone``) with a global average pooling and a
linear classifier on a corpus of its own, and writes the encoder in the SegFormer release's format
(``mit_bX.pth``: ``patch_embed1.*``, ``block1.0.*``, ``norm1.*`` and the classifier ``head.*``), which
``model.pretrained`` loads as it loads ImageNet weights (:func:`primkd.weights.init_from_imagenet`).

The corpus: synthetic scenes (:mod:`primkd.data.synthetic`) of the generator seed ``pretrain.seed``, its training
split for training and its test split held out, each image cut into a grid of square patches. The task: the class
that covers most of a patch, among the generator's classes. Classification of object patches is to the demo's
segmentation what ImageNet classification is to NYU Depth V2's: the same kind of images, a task that asks what is
there but not where its boundaries run, and labels one per image. RGB only, as ImageNet is (CMX's depth branch
starts from the same weights).

Everything runs on the CPU with ``pretrain.threads`` threads and deterministic kernels, from ``pretrain.seed``: the
output is committed with the repository, and the same code and parameters must give it again bit for bit.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from primkd.config import ConfigError, PretrainConfig
from primkd.data.dataset import normalize
from primkd.data.synthetic import CLASS_ID, SYNTHETIC_CLASS_NAMES, render_scene, scene_seed
from primkd.engine.optim import param_groups, warmup_poly_factor
from primkd.engine.runtime import deterministic_algorithms, seed_everything
from primkd.io import csv_text, sha256_file, write_json, write_text
from primkd.models.io import save_torch_file
from primkd.models.mit import build_mit, mit_to_segformer

log = logging.getLogger(__name__)

ENCODER, SUMMARY, CURVE = "encoder.pt", "pretrain.json", "curve.csv"  # the stage's outputs, in --out-dir
HEAD = "head"  # the classifier's name in the file, as in the SegFormer release (init_from_imagenet leaves it out)


def corpus(p: PretrainConfig, split: str, count: int) -> tuple[Tensor, Tensor]:
    """The patches of images 0..count-1 of the generator's ``split`` for seed ``pretrain.seed``: normalised RGB
    ``N×3×patch×patch`` (row-major over each image's grid, image by image) and their labels, the index in
    :data:`~primkd.data.synthetic.SYNTHETIC_CLASS_NAMES` of the class covering most pixels of the patch (ties: the
    lower index)."""
    index = np.full(256, -1, dtype=np.int64)
    index[[CLASS_ID[name] for name in SYNTHETIC_CLASS_NAMES]] = np.arange(len(SYNTHETIC_CLASS_NAMES))
    k = p.patch
    images, labels = [], []
    for i in range(count):
        scene = render_scene(scene_seed(p.seed, split, i), p.height, p.width)
        x = normalize(scene["rgb"])  # the normalisation the segmentation stages feed the encoder
        tiles = x.unfold(1, k, k).unfold(2, k, k)  # 3 × rows × cols × k × k
        images.append(tiles.permute(1, 2, 0, 3, 4).reshape(-1, 3, k, k))
        classes = index[scene["label"]]
        grid = classes.reshape(p.height // k, k, p.width // k, k).transpose(0, 2, 1, 3).reshape(-1, k * k)
        counts = np.stack([(grid == c).sum(1) for c in range(len(SYNTHETIC_CLASS_NAMES))], axis=1)
        labels.append(torch.from_numpy(counts.argmax(1)))
    return torch.cat(images), torch.cat(labels)


class PatchClassifier(nn.Module):
    """The MiT encoder, a global average pooling of its last stage, a linear classifier (SegFormer's ImageNet
    model)."""

    def __init__(self, p: PretrainConfig, num_classes: int) -> None:
        super().__init__()
        self.encoder = build_mit(p.backbone, drop_path_rate=p.drop_path_rate)
        self.head = nn.Linear(self.encoder.embed_dims[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)[-1].mean(dim=(2, 3)))


def accuracy(model: PatchClassifier, x: Tensor, y: Tensor, num_classes: int, batch: int) -> dict[str, float]:
    """Held-out scores in %: accuracy, mean per-class accuracy (over the classes present), and the accuracy of always
    answering the most frequent class (what the first two must beat)."""
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train()
    present = [c for c in range(num_classes) if (y == c).any()]
    per_class = [(pred[y == c] == c).double().mean().item() for c in present]
    majority = torch.bincount(y, minlength=num_classes).max().item() / len(y)
    return {"accuracy_pct": round(100 * (pred == y).double().mean().item(), 2),
            "mean_class_accuracy_pct": round(100 * sum(per_class) / len(per_class), 2),
            "majority_class_pct": round(100 * majority, 2)}


def encoder_file(model: PatchClassifier) -> dict[str, Tensor]:
    """The encoder and classifier in the SegFormer release's names (what :func:`read_mit_pretrained` reads)."""
    sd = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    head = {f"{HEAD}.{k}": v.detach().clone() for k, v in model.head.state_dict().items()}
    return {**mit_to_segformer(sd), **head}


def pretrain(p: PretrainConfig, out_dir: str | os.PathLike, record: dict, progress: bool = True) -> dict:
    """Train the encoder and write ``out_dir``/encoder.pt, curve.csv (per epoch: mean training loss, held-out
    accuracy) and pretrain.json (the corpus, the held-out scores, times, ``record``: the code digests and parameter
    values the files were made from, and ``outputs``: the files' digests, which Snakemake compares with the current
    ones: :mod:`primkd.stages.shipped`).

    Returns:
        The summary written to pretrain.json.
    """
    out_dir = Path(out_dir)
    started, cpu_started = time.perf_counter(), time.process_time()
    torch.set_num_threads(p.threads)
    seed_everything(p.seed)
    num_classes = len(SYNTHETIC_CLASS_NAMES)
    train_x, train_y = corpus(p, "train", p.num_images)
    held_x, held_y = corpus(p, "test", p.num_heldout)
    log.info("corpus: %d training patches of %d images, %d held-out patches of %d images (%dx%d, patch %d, seed %d)",
             len(train_x), p.num_images, len(held_x), p.num_heldout, p.height, p.width, p.patch, p.seed)
    model = PatchClassifier(p, num_classes)
    optimizer = torch.optim.AdamW(param_groups([model], p.weight_decay), lr=p.lr, betas=p.betas)
    steps = len(train_x) // p.batch_size  # the last incomplete batch is dropped
    if steps == 0:
        raise ConfigError(f"params.yaml: pretrain.batch_size {p.batch_size} exceeds the corpus' {len(train_x)} "
                          "training patches; lower it or raise pretrain.num_images")
    total, warmup = p.epochs * steps, round(p.warmup_epochs * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: warmup_poly_factor(it, total, warmup, p.warmup_ratio, p.poly_power))
    order = torch.Generator().manual_seed(p.seed)
    curve = []
    with deterministic_algorithms(True):
        for epoch in range(1, p.epochs + 1):
            perm = torch.randperm(len(train_x), generator=order)
            flips = torch.rand(len(train_x), generator=order) < p.flip
            losses = []
            for step in range(steps):
                batch = perm[step * p.batch_size:(step + 1) * p.batch_size]
                x = train_x[batch]
                x = torch.where(flips[batch, None, None, None], x.flip(-1), x)
                loss = F.cross_entropy(model(x), train_y[batch])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"pretrain: non-finite loss at epoch {epoch}, step {step + 1}; lower "
                                             "pretrain.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            scores = accuracy(model, held_x, held_y, num_classes, p.batch_size)
            curve.append({"epoch": epoch, "loss": round(sum(losses) / len(losses), 6),
                          "heldout_accuracy_pct": scores["accuracy_pct"]})
            if progress or epoch == p.epochs:
                log.info("pretrain epoch %d/%d: loss %.4f, held-out accuracy %.2f%% (mean per class %.2f%%)", epoch,
                         p.epochs, curve[-1]["loss"], scores["accuracy_pct"], scores["mean_class_accuracy_pct"])
    weights = encoder_file(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_torch_file(out_dir / ENCODER, weights)
    write_text(out_dir / CURVE, csv_text(curve))
    summary = {"backbone": p.backbone, "task": "patch classification: the class covering most of the patch",
               "classes": list(SYNTHETIC_CLASS_NAMES),
               "corpus": {"seed": p.seed, "train_images": p.num_images, "heldout_images": p.num_heldout,
                          "train_patches": len(train_x), "heldout_patches": len(held_x), "patch": p.patch,
                          "height": p.height, "width": p.width},
               "heldout": scores, "epochs": p.epochs, "iterations": total, "final_loss": curve[-1]["loss"],
               "threads": p.threads, "train_seconds": round(time.perf_counter() - started, 1),
               "cpu_seconds": round(time.process_time() - cpu_started, 1),
               "tensors": len(weights), **record,
               "outputs": {name: sha256_file(out_dir / name) for name in (ENCODER, CURVE)}}
    write_json(out_dir / SUMMARY, summary)
    log.info("wrote %s (%d tensors, sha256 %s): held-out accuracy %.2f%% (majority class %.2f%%), %.0f s",
             out_dir / ENCODER, len(weights), summary["outputs"][ENCODER][:12], scores["accuracy_pct"],
             scores["majority_class_pct"], summary["train_seconds"])
    return summary
