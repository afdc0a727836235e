"""The training loop shared by the teacher, the CMX baseline and the PrimKD students.

Reliability (a run may be preempted, killed or fed bad data at any point):

- **Resume**: a training-state checkpoint (network, aligners, optimiser, scheduler, every RNG, position in the data
  order, curves so far) is written atomically every ``train.checkpoint_every`` iterations, on SIGTERM and at the end;
  the newest ``train.keep_checkpoints`` are kept. Started again, a run continues from its newest checkpoint and, on
  the CPU with a fixed seed, ends with exactly the weights and metrics of an uninterrupted run.
- **SIGTERM** (what SLURM sends before preempting a job) and SIGINT (Ctrl-C) make the loop save a checkpoint at the
  next iteration boundary and exit with status 128 + 15 or 128 + 2 (:class:`TrainingInterrupted`); DataLoader workers
  ignore both so that the batch in flight completes; a second Ctrl-C stops at once. A signal during the last
  iteration or the final evaluation lets the run finish.
- **Determinism**: ``train.deterministic`` selects deterministic kernels (bit-identical runs on the CPU).
- **One trainer per run**: the checkpoint folder is locked (:func:`~primkd.engine.runtime.checkpoint_lock`), so a
  trainer orphaned by a killed orchestrator cannot train beside a new one.
- **Non-finite losses** stop the run with an error naming the iteration, the loss terms and the images, leaving the
  last good checkpoint in place, unless ``train.max_bad_batches`` allows skipping that many bad batches.

Scale (:mod:`primkd.engine.precision`, :mod:`primkd.engine.distributed`):

- **One GPU**: bf16 autocast (or fp16 with loss scaling), channels-last tensors, optional ``torch.compile``, cuDNN
  autotuning, pinned memory and non-blocking copies; the frozen teacher runs in eval mode without autograd.
- **Several GPUs** (``torchrun --nproc_per_node=N -m primkd train ...``): DistributedDataParallel over the student and
  the PrimKD aligners, SyncBatchNorm in the student (not in its fusion modules with ``train.fusion_bn: per_image``,
  whose statistics are each image's own), each rank a shard of the shared data order, gradient
  accumulation so that ranks × ``train.micro_batch`` × steps = ``train.batch_size`` whatever N is, the feature-loss
  stage chosen from losses averaged over ranks (every rank picks the same stage, as one process with the whole batch
  would), the test set sharded and its confusion matrices summed; rank 0 alone logs, checkpoints and writes outputs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from primkd.config import ConfigError, EvalConfig, KDConfig, ModelConfig, TrainConfig
from primkd.data.dataset import Augment, EpochSampler, RGBDDataset, hha_input, reads_depth
from primkd.distill.losses import PrimKDLoss, build_aligners
from primkd.engine.checkpoint import (
    fingerprint_differences,
    latest_checkpoint,
    list_checkpoints,
    move_aside,
    remove_partial_checkpoints,
    restore_checkpoint,
    run_fingerprint,
    save_checkpoint,
)
from primkd.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    convert_sync_batchnorm,
    init_distributed,
    split_batch,
)
from primkd.engine.evaluate import ShardSampler, evaluate, model_inputs
from primkd.engine.optim import build_optimizer, build_scheduler
from primkd.engine.precision import Precision
from primkd.engine.runtime import (
    StopRequest,
    TrainingInterrupted,
    checkpoint_lock,
    deterministic_algorithms,
    ignore_stop_signals,
    seed_everything,
    select_device,
    stop_on_signal,
)
from primkd.engine.usage import StepClock, peak_memory
from primkd.io import DataError, csv_text, write_json, write_text
from primkd.models.decoder import reset_conv_biases
from primkd.models.fusion import per_image_batchnorm
from primkd.models.io import (
    MODEL_FORMAT,
    architecture,
    build_model,
    model_blob,
    read_torch_file,
    save_model,
    save_torch_file,
)
from primkd.models.mit import MIT_VARIANTS
from primkd.resources import ThreadPlan

log = logging.getLogger(__name__)

LOSS_TERMS = ("loss", "seg", "pred", "feat")


@dataclass
class Run:
    """What to train.

    Attributes:
        name: run name (``teacher_rgb``, ``cmx``, an experiment name).
        kind: ``"teacher"`` (single-stream SegFormer) or ``"student"`` (CMX).
        inputs: batch keys fed to the network (:data:`~primkd.data.dataset.MODALITY_INPUTS` of a teacher,
            :data:`~primkd.data.dataset.STUDENT_INPUTS`).
        kd: distillation settings (:func:`primkd.config.experiment_kd`) or None for plain cross-entropy.
        teacher_path: model file of the frozen teacher, required with ``kd``.
        code: SHA-256 of each source file the training command may run, by repository path (``primkd train`` fills
            it from the stage's code closure); part of the checkpoint fingerprint, so other code never resumes a run.
    """

    name: str
    kind: str
    inputs: list[str]
    kd: KDConfig | None = None
    teacher_path: Path | None = None
    info: dict = field(default_factory=dict)
    code: dict = field(default_factory=dict)

    @property
    def reads_depth(self) -> bool:
        """Whether the network or its teacher reads depth (the HHA images)."""
        return reads_depth(self.inputs) or (self.kd is not None and self.kd.teacher_modality == "depth")


@dataclass
class Progress:
    """The loop's bookkeeping, saved in every checkpoint (plain Python values only)."""

    epoch: int = 0  # current epoch, 0-based
    position: int = 0  # batches of the current epoch already processed
    iteration: int = 0  # batches processed over the whole run (optimiser steps + skipped batches)
    sums: dict = field(default_factory=lambda: dict.fromkeys(LOSS_TERMS, 0.0))  # loss sums of the current epoch
    stage_sums: list = field(default_factory=lambda: [0.0] * 4)  # feature-MSE sums per stage, current epoch
    good: int = 0  # finite batches of the current epoch (the denominator of its averages)
    seen: int = 0  # images trained on over the run
    bad_batches: int = 0  # skipped non-finite batches over the run
    seconds: float = 0.0  # training time spent by earlier processes of this run
    curves: list = field(default_factory=list)
    eval_curve: list = field(default_factory=list)
    best: dict = field(default_factory=dict)  # the best test-split evaluation so far ({epoch, miou, macc, pacc})
    resumed_at: list = field(default_factory=list)  # iterations at which the run was resumed

    def start_epoch(self) -> None:
        self.epoch, self.position, self.good = self.epoch + 1, 0, 0
        self.sums, self.stage_sums = dict.fromkeys(LOSS_TERMS, 0.0), [0.0] * 4


def build_loaders(t: TrainConfig, test_batch_size: int, run: Run, data_root: Path, hha_root: Path | None,
                  dist: DistInfo | None = None, micro_batch: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Training loader (augmented, shuffled by :class:`EpochSampler`) and test loader (full images, ``eval.batch_size``
    at a time), both sharded over the ranks of ``dist``; the training loader yields ``micro_batch`` images (default
    ``train.batch_size``).

    Both loaders draw their worker seeds from a generator of their own, so creating one (at each epoch, and when a
    run resumes mid-epoch) leaves the global torch RNG, which dropout and drop-path use, untouched. The data order
    and the augmentation depend only on (seed, epoch, index).
    """
    dist = dist or DistInfo()
    hha = hha_input(hha_root, run.reads_depth, f"run {run.name!r}")
    aug = Augment(crop=t.crop, scales=t.scales, flip=t.flip)
    train_set = RGBDDataset(data_root, "train", hha, augmentation=aug, seed=t.seed, bgr=t.bgr)
    test_set = RGBDDataset(data_root, "test", hha, bgr=t.bgr)
    workers = t.num_workers
    common = {"num_workers": workers, "pin_memory": torch.cuda.is_available(), "persistent_workers": workers > 0,
              "worker_init_fn": ignore_stop_signals if workers > 0 else None}
    train_loader = DataLoader(train_set, batch_size=micro_batch or t.batch_size, drop_last=True,
                              sampler=EpochSampler(len(train_set), t.seed, rank=dist.rank,
                                                   world_size=dist.world_size, total=epoch_samples(t, len(train_set))),
                              generator=torch.Generator().manual_seed(t.seed), **common)
    test_loader = DataLoader(test_set, batch_size=test_batch_size,
                             sampler=ShardSampler(len(test_set), dist.rank, dist.world_size),
                             generator=torch.Generator().manual_seed(t.seed), **common)
    return train_loader, test_loader


def epoch_samples(t: TrainConfig, length: int) -> int:
    """Images per epoch: the training split (the last incomplete batch dropped), or with ``train.fill_last_batch``
    batch × (N // batch + 1), as the official loader (its epoch always ends with a batch of random repeats)."""
    return t.batch_size * (length // t.batch_size + 1) if t.fill_last_batch else length


def official_stage2_drop_path(model: nn.Module, drop_path_rate: float) -> None:
    """Make stage 2's stochastic depth constant, as the official dual encoder builds it: every RGB block at the rate
    of the stage's first block, every depth block at the rate of its second (the linear rule elsewhere)."""
    encoders = [model.encoder_rgb, model.encoder_modal] if hasattr(model, "encoder_rgb") else [model.encoder]
    for offset, encoder in enumerate(encoders):
        depths = [len(stage.blocks) for stage in encoder.stages]
        total, start = sum(depths), depths[0]
        rate = drop_path_rate * (start + offset) / max(total - 1, 1)
        for block in encoder.stages[1].blocks:
            if hasattr(block.drop_path, "drop_prob"):
                block.drop_path.drop_prob = rate


def load_teacher(run: Run, arch: dict, device: torch.device, bgr: bool = False) -> tuple[nn.Module, list[str]]:
    """The frozen teacher (eval mode, no gradients), checked against the student; returns it with its batch keys.

    Raises:
        DataError: the file is not a teacher, reads another modality than the experiment's ``teacher``, predicts
            another number of classes, or (with feature distillation) has other stage widths than the student.
    """
    from primkd.weights import read_teacher

    path = run.teacher_path
    teacher, meta = read_teacher(path, device)  # a model file, or an official checkpoint named by kd.teachers
    t_arch, fix = meta["arch"], "pass the model.pt of `primkd train --role teacher` trained with the same params"
    if t_arch["kind"] != "teacher":
        raise DataError(f"{path}: is a {t_arch['kind']} model, not a teacher; {fix}")
    modality = "depth" if reads_depth(meta["inputs"]) else "rgb"
    wanted = run.kd.teacher_modality
    if modality != wanted:
        raise DataError(f"{path}: a {modality} teacher, but this experiment names teacher {wanted!r} in params.yaml; "
                        f"pass results/<preset>/models/teacher_{wanted}/model.pt")
    if t_arch["num_classes"] != arch["num_classes"]:
        raise DataError(f"{path}: the teacher predicts {t_arch['num_classes']} classes, the dataset has "
                        f"{arch['num_classes']}; {fix}")
    widths = [MIT_VARIANTS[a["variant"]]["embed_dims"] for a in (t_arch, arch)]
    if run.kd.beta > 0 and tuple(widths[0]) != tuple(widths[1]):
        raise DataError(f"{path}: the teacher's backbone {t_arch['variant']} has stage widths {widths[0]}, the "
                        f"student's {arch['variant']} has {widths[1]}; feature distillation needs equal widths: {fix}")
    if bool(meta["info"].get("bgr", False)) != bgr:  # teacher and student read the same batch
        order = "BGR" if meta["info"].get("bgr") else "RGB"
        raise DataError(f"{path}: the teacher takes {order} input, but train.bgr is {str(bgr).lower()}; set train.bgr: "
                        f"{str(not bgr).lower()} in params.yaml (official checkpoints take BGR) or use another teacher")
    teacher.requires_grad_(False)
    return teacher, meta["inputs"]


def build_loss(run: Run, variant: str, sync_selection: bool = False, ce_reduction: str = "per_pixel") -> PrimKDLoss:
    """PrimKD loss for a distilled student, plain cross-entropy (no teacher terms) otherwise.

    With ``sync_selection`` (several ranks) the stage losses are averaged over ranks before the stage is chosen;
    ``ce_reduction`` is ``train.ce_reduction``.
    """
    channels, kd = MIT_VARIANTS[variant]["embed_dims"], run.kd
    if kd is None or kd.beta == 0:
        # No feature term, so no aligners in the loss; their initial weights are still drawn (and dropped) so that
        # the random stream after this point, and with it every trained weight, stays that of the runs that built
        # them (tests/test_engine.py compares the two).
        build_aligners(channels, *((kd.aligner, kd.mask_lambda) if kd is not None else ()))
    if kd is None:
        return PrimKDLoss(channels=channels, use_pred=False, use_feat=False, ce_reduction=ce_reduction)
    return PrimKDLoss(channels=channels, alpha=kd.alpha, beta=kd.beta, rule=kd.rule, aligner=kd.aligner,
                      mask_keep=kd.mask_lambda, per_sample=kd.per_sample, kl_direction=kd.kl_direction,
                      temperature=kd.temperature, use_pred=kd.alpha > 0, use_feat=kd.beta > 0,
                      sync_selection=sync_selection, ce_reduction=ce_reduction)


class Objective(nn.Module):
    """The trained network and its loss module (with the PrimKD aligners) as one module, so that one
    DistributedDataParallel wrapper synchronises every trained parameter."""

    def __init__(self, model: nn.Module, criterion: PrimKDLoss):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, inputs: list[torch.Tensor], labels: torch.Tensor,
                teacher_out: dict | None = None) -> dict[str, torch.Tensor]:
        out = self.model(*inputs)
        if teacher_out is None:
            return self.criterion(out["logits"], labels)
        return self.criterion(out["logits"], labels, student_fused=out["fused"], teacher_logits=teacher_out["logits"],
                              teacher_features=teacher_out["features"])


def train_step(objective: nn.Module, batch: dict, run: Run, device: torch.device, teacher: nn.Module | None,
               teacher_inputs: list[str], precision: Precision) -> dict[str, torch.Tensor]:
    """Forward the student (and the frozen teacher, without autograd) on one batch; returns the named loss terms."""
    labels = batch["label"].to(device, non_blocking=True)
    inputs = [precision.inputs(x) for x in model_inputs(batch, run.inputs, device)]
    with precision.autocast(device):
        t_out = None
        if teacher is not None:
            with torch.no_grad():
                t_out = teacher(*[precision.inputs(x) for x in model_inputs(batch, teacher_inputs, device)])
        return objective(inputs, labels, t_out)


BEST_FILE = "best.pt"  # in the checkpoint folder: the weights of the best test-split evaluation so far


def evaluation_due(epoch: int, epochs: int, every: int, start: int = 0) -> bool:
    """Whether the test split is evaluated after (1-based) ``epoch``: every ``every`` epochs from epoch ``start`` on,
    and always after the last (official: NYU every epoch; SUN-RGBD every 10 from epoch 100)."""
    return epoch == epochs or bool(every and epoch % every == 0 and epoch >= start)


def best_evaluation(curve: list[dict]) -> dict | None:
    """The point of a test-split curve with the highest mIoU; the earliest on ties (the official code replaces its
    best only on a strict improvement). Selecting on the test split is the official practice, not a clean estimate."""
    best = None
    for point in curve:
        if point.get("miou") is not None and (best is None or point["miou"] > best["miou"]):
            best = point
    return best


class Trainer:
    """One run: built in five numbered steps (``__init__``), trained by :meth:`fit`, which writes the outputs (see
    the module docstring for the reliability rules)."""

    def __init__(self, cfg: dict, t: TrainConfig, run: Run, data_root: Path, hha_root: Path | None, out_dir: Path,
                 checkpoint_dir: Path, progress: bool, threads: ThreadPlan | None = None):
        # `cfg` (the resolved parameters) feeds the checkpoint fingerprint and train.json's preset; the loop reads the
        # typed settings.
        self.cfg, self.t, self.run, self.epochs, self.show = cfg, t, run, t.epochs, progress
        self.model_cfg, self.eval_cfg = ModelConfig.of(cfg), EvalConfig.of(cfg)
        self.out_dir, self.checkpoint_dir, self.threads = out_dir, checkpoint_dir, threads
        # 1. Ranks, seeds, device and speed switches.
        self.dist = init_distributed(t.device)
        seed_everything(t.seed)
        self.device = select_device(t.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.precision = Precision.of(t, self.device)
        # 2. Data: each rank takes micro-batches of its shard; `accum` of them make one optimiser step.
        self.micro, self.accum = split_batch(t.batch_size, self.dist.world_size, t.micro_batch)
        self.train_loader, self.test_loader = build_loaders(t, self.eval_cfg.batch_size, run, data_root, hha_root,
                                                            self.dist, self.micro)
        self.dataset = self.train_loader.dataset
        self.iters_per_epoch = len(self.train_loader) // self.accum
        if self.iters_per_epoch == 0:
            raise ConfigError(f"train.batch_size = {t.batch_size} exceeds the {len(self.dataset)} images that "
                              f"{self.dataset.layout.split_path('train')} lists; lower train.batch_size in params.yaml "
                              f"or add training images")
        # 3. Networks and loss (the aligners inside the loss are trained with the student).
        m = self.model_cfg
        self.arch = architecture(m, run.kind, self.dataset.num_classes)
        self.model = build_model(self.arch)
        if m.decoder_bias_init == "default":
            reset_conv_biases(self.model.decoder)
        if m.drop_path_stage2 == "constant":
            official_stage2_drop_path(self.model, m.drop_path_rate)
        self.pretrained = self._init_pretrained(m)
        if t.fusion_bn == "per_image" and run.kind == "student":
            per_image_batchnorm(self.model.ffms)  # left out of the synchronisation below
        if self.dist.enabled and run.kind == "student":
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.model = self.precision.prepare(self.model.to(self.device))
        self.criterion = build_loss(run, self.arch["variant"], sync_selection=self.dist.enabled,
                                    ce_reduction=t.ce_reduction).to(self.device)
        self.objective = self._wrap(Objective(self.model, self.criterion))
        self.teacher, self.teacher_inputs = (load_teacher(run, self.arch, self.device, t.bgr) if run.kd is not None
                                             else (None, []))
        if self.teacher is not None:
            self.precision.prepare(self.teacher)
        # 4. Optimiser, per-iteration schedule, loss scaling (fp16 only).
        self.optimizer = build_optimizer([self.model, self.criterion], t)
        self.scheduler = build_scheduler(self.optimizer, t, self.iters_per_epoch)
        self.scaler = self.precision.grad_scaler(self.device)
        self.stateful = {"model": self.model, "criterion": self.criterion, "optimizer": self.optimizer,
                         "scheduler": self.scheduler}
        if self.scaler.is_enabled():
            self.stateful["scaler"] = self.scaler
        # 5. Continue from this run's newest checkpoint, if any.
        self.fingerprint = run_fingerprint(cfg, run, self.arch, self.dataset, self.test_loader.dataset,
                                           self.pretrained, run.code)
        self.last_checkpoint: Path | None = None
        self.best_model: dict | None = None  # the contents of best.pt, kept for model_best.pt
        self.state = self._resume()
        self.started = time.perf_counter()

    def _init_pretrained(self, m: ModelConfig) -> str | None:
        """Load ImageNet MiT weights into the encoder(s) when ``model.pretrained`` asks for them."""
        from primkd.pretrained import resolve_pretrained
        from primkd.weights import init_from_imagenet

        path = resolve_pretrained(m.pretrained, self.arch["variant"], m.pretrained_dir)
        if path is None:
            return None
        init_from_imagenet(self.model, path)
        log.info("%s: encoder initialised from %s", self.run.name, path)
        return str(path)

    def _wrap(self, objective: Objective) -> nn.Module:
        """DistributedDataParallel over ranks (unused parameters allowed: a fixed-stage rule trains one aligner),
        ``torch.compile`` when asked; the objective itself otherwise."""
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            objective = DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)
        return torch.compile(objective) if self.precision.compile else objective

    def _resume(self) -> Progress:
        """Progress restored from the newest matching checkpoint (states and RNGs loaded), or a fresh one; the files
        of a run that cannot be resumed are moved aside (:func:`move_aside`), never deleted."""
        remove_partial_checkpoints(self.checkpoint_dir)
        found = latest_checkpoint(self.checkpoint_dir)
        best = self.checkpoint_dir / BEST_FILE
        if found is None:
            if best.exists():  # the best model of an earlier run whose checkpoints are gone
                aside = move_aside(self.checkpoint_dir, [best], f"{BEST_FILE} without a training checkpoint")
                log.warning("%s: %s has no training checkpoint beside it; moved it to %s", self.run.name, best, aside)
            return Progress()
        path, blob = found
        changed = fingerprint_differences(blob["fingerprint"], self.fingerprint)
        if changed:  # finished or not: its weights were computed from other inputs
            state = "finished" if blob["complete"] else "unfinished"
            why = f"the {state} checkpoint {path} was computed from other inputs or settings ({'; '.join(changed[:8])})"
            aside = move_aside(self.checkpoint_dir, [*list_checkpoints(self.checkpoint_dir), best],
                               f"{why}.\nAll differences:\n" + "\n".join(changed))
            log.warning("%s: training from scratch: %s; moved its files to %s", self.run.name, why, aside)
            return Progress()
        self.best_model, problem = self._read_best(best, blob)
        best_epoch = blob["progress"]["best"].get("epoch")
        last_is_best = blob["complete"] and best_epoch == self.epochs
        if problem and not last_is_best:  # the best evaluation's weights are in no checkpoint: only retraining helps
            why = f"{best} {problem}, and the weights of the best evaluation (epoch {best_epoch}) are in no checkpoint"
            aside = move_aside(self.checkpoint_dir, [*list_checkpoints(self.checkpoint_dir), best], why)
            log.warning("%s: training from scratch: %s; moved its files to %s", self.run.name, why, aside)
            return Progress()
        state = Progress(**restore_checkpoint(blob, self.stateful, path))
        state.resumed_at.append(state.iteration)
        self.last_checkpoint = path
        log.info("%s: resuming at epoch %d, iteration %d (batch %d of the epoch) from %s", self.run.name,
                 state.epoch + 1, state.iteration, state.position, path)
        if problem:  # finished, and its best evaluation is the last epoch: the final weights are the best ones
            if best.exists():
                move_aside(self.checkpoint_dir, [best], f"{best} {problem}")
            self._keep_best(state.best)
            log.warning("%s: %s; rebuilt it from the final weights (the best evaluation is the last epoch's)",
                        self.run.name, f"{best} {problem}")
        return state

    @staticmethod
    def _read_best(best: Path, blob: dict) -> tuple[dict | None, str | None]:
        """The best model file of a checkpoint that has a best evaluation, and what is wrong with it (or None)."""
        if not blob["progress"]["best"]:
            return None, None
        if not best.is_file():
            return None, "is missing"
        try:
            return read_torch_file(best, MODEL_FORMAT, "best model", ""), None
        except DataError as e:  # "<path>: cannot read the best model (<torch's words>); delete it and "
            return None, f"is unreadable ({str(e).split(': ', 1)[-1].split('; delete it')[0].splitlines()[0][:200]})"

    def _keep_best(self, point: dict) -> None:
        """Keep the current weights as the best evaluation's (``point``): in memory and as best.pt beside the
        checkpoints, which a resumed run reads back."""
        if self.dist.is_main:
            self.best_model = model_blob(self.model, self.arch, self.run.inputs, dict(point))
            save_torch_file(self.checkpoint_dir / BEST_FILE, self.best_model)
        barrier()

    def save(self, complete: bool = False) -> Path:
        """Write a checkpoint of the current state (rank 0; the others wait), refusing non-finite weights."""
        for name, p in [*self.model.named_parameters(), *self.criterion.named_parameters()]:
            if not torch.isfinite(p).all():
                raise FloatingPointError(f"parameter {name} became non-finite by iteration {self.state.iteration}; "
                                         f"the last good checkpoint is {self.last_checkpoint}; lower train.lr")
        progress = asdict(self.state)
        progress["seconds"] += time.perf_counter() - self.started
        if self.dist.is_main:
            self.last_checkpoint = save_checkpoint(self.checkpoint_dir, self.state.iteration, self.stateful,
                                                   progress, self.fingerprint, complete, self.t.keep_checkpoints)
        barrier()
        return self.last_checkpoint

    def checkpoint(self, stop: StopRequest) -> None:
        """The one checkpoint decision, after every iteration (and the evaluation that ends its epoch): the run's
        last iteration writes the final checkpoint (a signal then lets the run finish); a SIGTERM or SIGINT writes one
        and stops the run; otherwise one is written every ``train.checkpoint_every`` iterations."""
        s, every = self.state, self.t.checkpoint_every
        if s.epoch == self.epochs:
            self.save(complete=True)
        elif stop.signum is not None:
            path = self.save()
            message = (f"{self.run.name}: stopped by {signal.Signals(stop.signum).name} at iteration "
                       f"{s.iteration}; saved {path}; run the same command again to resume")
            log.error("%s", message)
            raise TrainingInterrupted(message, stop.signum)
        elif every and s.iteration % every == 0:
            self.save()

    def _non_finite(self, terms: dict[str, torch.Tensor], batch: dict) -> None:
        """Skip a batch whose loss is not finite (within ``max_bad_batches``) or stop with an error naming it."""
        s = self.state
        bad = [k for k in LOSS_TERMS[1:] if not torch.isfinite(terms[k])] or ["loss"]
        where = (f"iteration {s.iteration + 1} (epoch {s.epoch + 1}): non-finite loss terms {bad} on images "
                 f"{list(batch['name'])}")
        s.bad_batches += 1
        if s.bad_batches > self.t.max_bad_batches:
            kept = (f"the last good checkpoint is {self.last_checkpoint} (started again, the run resumes from it)"
                    if self.last_checkpoint else "no checkpoint was written yet")
            raise FloatingPointError(f"{self.run.name}: {where}; {kept}. Lower train.lr, check the images with "
                                     f"`primkd check-data`, or let train.max_bad_batches (now "
                                     f"{self.t.max_bad_batches}) skip such batches")
        log.warning("%s: %s; skipping the batch (%d of at most %d)", self.run.name, where, s.bad_batches,
                    self.t.max_bad_batches)

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (all ranks must skip a bad batch together, or DDP hangs)."""
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=self.device)
        return float(all_reduce_sum(bad)) == 0.0

    def step(self, micro_batches: list[dict]) -> None:
        """One iteration: for each micro-batch forward, non-finite guard and backward (gradients synchronised
        across ranks on the last one only), then the optimiser and scheduler steps and the bookkeeping."""
        s = self.state
        self.optimizer.zero_grad(set_to_none=True)
        totals = {k: 0.0 for k in LOSS_TERMS}
        stages, finite = torch.zeros(len(s.stage_sums)), True
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.objective.no_sync()
            with sync:
                terms = train_step(self.objective, batch, self.run, self.device, self.teacher, self.teacher_inputs,
                                   self.precision)
                if not self._all_finite(terms["loss"]):
                    self._non_finite(terms, batch)
                    finite = False
                    break
                self.scaler.scale(terms["loss"] / len(micro_batches)).backward()
            for k in LOSS_TERMS:
                totals[k] += float(terms[k].detach()) / len(micro_batches)
            stages += terms["stage_mse"].detach().float().cpu() / len(micro_batches)
        if finite:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for k in LOSS_TERMS:
                s.sums[k] += totals[k]
            s.stage_sums = [a + float(b) for a, b in zip(s.stage_sums, stages)]
            s.good += 1
            s.seen += sum(b["label"].shape[0] for b in micro_batches) * self.dist.world_size
        self.scheduler.step()  # a skipped batch still advances the schedule, which counts batches
        s.position += 1
        s.iteration += 1

    def end_epoch(self) -> None:
        """Record the epoch's averages (and the test mIoU when due), then move to the next epoch."""
        s, n = self.state, max(self.state.good, 1)
        row = {"epoch": s.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update({k: v / n for k, v in s.sums.items()})
        row.update({f"stage{i + 1}_mse": v / n for i, v in enumerate(s.stage_sums)})
        s.curves.append(row)
        t = self.t
        if evaluation_due(s.epoch + 1, self.epochs, t.eval_every, t.eval_from):
            m = evaluate(self.model, self.test_loader, self.dataset.num_classes, self.run.inputs, self.device,
                         progress=self.show, crop=t.crop, windows=self.eval_cfg.windows)
            point = {"epoch": s.epoch + 1, "miou": m["miou"], "macc": m["macc"], "pacc": m["pacc"]}
            s.eval_curve.append(point)
            if best_evaluation(s.eval_curve) is point:
                s.best = dict(point)
                self._keep_best(point)
            log.info("%s epoch %d: loss %.4f, test mIoU %.4f (best %.4f at epoch %d)", self.run.name, s.epoch + 1,
                     row["loss"], m["miou"], s.best["miou"], s.best["epoch"])
        else:
            log.info("%s epoch %d: loss %.4f", self.run.name, s.epoch + 1, row["loss"])
        s.start_epoch()

    def fit(self, stop: StopRequest) -> dict:
        """Train until the last epoch, then write the outputs (:meth:`write_outputs`); returns the summary written to
        train.json (empty on ranks other than 0)."""
        s, self.started = self.state, time.perf_counter()
        self.clock = StepClock()
        log.info("training %s (%s, %s) on %s: %d images, %d iterations/epoch, %d epochs", self.run.name,
                 self.run.kind, self.arch["variant"], self.device, len(self.dataset), self.iters_per_epoch,
                 self.epochs)
        while s.epoch < self.epochs:
            self.model.train()
            self.criterion.train()
            self.train_loader.sampler.set_epoch(s.epoch, s.position * self.accum * self.micro)
            batches = iter(self.train_loader)
            bar = tqdm(range(s.position, self.iters_per_epoch), desc=f"{self.run.name} epoch {s.epoch + 1}/"
                       f"{self.epochs}", unit="it", disable=not (self.show and self.dist.is_main), leave=False)
            for _ in bar:
                with self.clock.step(self.device):
                    self.step([next(batches) for _ in range(self.accum)])
                if s.position == self.iters_per_epoch:
                    self.end_epoch()
                self.checkpoint(stop)
        elapsed = s.seconds + time.perf_counter() - self.started
        return self.write_outputs(elapsed) if self.dist.is_main else {}

    def write_outputs(self, elapsed: float) -> dict:
        """Write ``curves.csv``, ``eval_curve.csv``, ``train.json``, ``model_best.pt`` and ``model.pt`` (last), each
        atomically, into the output folder; returns the summary of train.json."""
        s, t, run, out_dir = self.state, self.t, self.run, self.out_dir
        write_text(out_dir / "curves.csv", csv_text(s.curves))
        write_text(out_dir / "eval_curve.csv", csv_text(s.eval_curve))
        summary = {"run": run.name, "kind": run.kind, "inputs": run.inputs, "backbone": self.arch["variant"],
                   "seed": t.seed, "deterministic": t.deterministic, "device": str(self.device),
                   "epochs": t.epochs, "iterations": s.iteration, "skipped_batches": s.bad_batches,
                   "resumed_at_iterations": s.resumed_at, "train_seconds": round(elapsed, 2),
                   "images_per_second": round(s.seen / max(elapsed, 1e-9), 2),
                   "parameters": sum(p.numel() for p in self.model.parameters()),
                   "world_size": self.dist.world_size, "micro_batch": self.micro, "accumulation_steps": self.accum,
                   "precision": self.precision.as_dict(), "pretrained": self.pretrained,
                   "pretrained_sha256": self.fingerprint["pretrained_sha256"],  # = inputs.pretrained (None: scratch)
                   "threads": self.threads.as_dict() if self.threads is not None else None,
                   "final_loss": s.curves[-1]["loss"], "test_miou_single_scale": s.eval_curve[-1]["miou"],
                   "best_test_epoch": s.best.get("epoch"), "test_miou_best_epoch": s.best.get("miou"),
                   "step_seconds": self.clock.summary(), "peak_memory": peak_memory(self.device),
                   **({"teacher_source": run.info["teacher_source"]} if "teacher_source" in run.info else {})}
        write_json(out_dir / "train.json", summary)
        info = {"run": run.name, "preset": self.cfg["preset"], "seed": t.seed, "deterministic": t.deterministic,
                "classes": self.dataset.classes, "kd": run.kd.as_dict() if run.kd is not None else None,
                "bgr": t.bgr, "pretrained": self.pretrained, **run.info}
        _write_best_model(out_dir / "model_best.pt", self.best_model, s.best, info)
        save_model(out_dir / "model.pt", self.model, self.arch, run.inputs, {**info, "epoch": t.epochs})
        return summary


def train(cfg: dict, run: Run, data_root: Path, hha_root: Path | None, out_dir: Path, progress: bool = True,
          checkpoint_dir: Path | None = None, threads: ThreadPlan | None = None) -> dict:
    """Train one network and write ``model.pt``, ``model_best.pt``, ``curves.csv``, ``eval_curve.csv`` and
    ``train.json`` (:meth:`Trainer.write_outputs`).

    Started again after an interruption, the run continues from its newest checkpoint in ``checkpoint_dir``. The
    outputs are written only once training has finished, ``model.pt`` last, each atomically.

    Args:
        cfg: resolved parameters (:func:`primkd.config.load_params`).
        run: what to train.
        data_root: prepared dataset folder.
        hha_root: HHA folder (needed when the network or its teacher reads depth).
        out_dir: output folder.
        progress: show progress bars.
        checkpoint_dir: training-state checkpoints of this run (default ``<out_dir>/checkpoints``); must survive
            the orchestrator's clean-up of declared outputs.
        threads: the stage's thread plan, recorded in ``train.json`` (``cfg`` holds the worker count it allows).

    Returns:
        The summary written to ``train.json`` (empty on ranks other than 0).

    Raises:
        TrainingInterrupted: SIGTERM or SIGINT arrived; a checkpoint was saved (a ``SystemExit`` with status 143 or
            130).
        FloatingPointError: a non-finite loss beyond ``train.max_bad_batches``.
        DataError: bad input files, or HHA needed (:attr:`Run.reads_depth`) but ``hha_root`` None.
        ConfigError: settings that cannot run (``train.device``, ``train.batch_size``, ``train.micro_batch``).
    """
    t, out_dir = TrainConfig.of(cfg), Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out_dir / "checkpoints"
    with deterministic_algorithms(t.deterministic), stop_on_signal(signal.SIGTERM, signal.SIGINT) as stop, \
            checkpoint_lock(checkpoint_dir, run.name):
        trainer = Trainer(cfg, t, run, Path(data_root), hha_root, out_dir, checkpoint_dir, progress, threads)
        if not trainer.dist.is_main:  # one log per run: rank 0's
            logging.getLogger("primkd").setLevel(logging.WARNING)
        return trainer.fit(stop)


def _write_best_model(dest: Path, blob: dict, best: dict, info: dict) -> None:
    """Write the best evaluation's model (the contents of best.pt) to ``dest`` with the run's metadata and the epoch
    its weights come from."""
    if blob["info"].get("epoch") != best.get("epoch"):  # a crash between a new best and the next checkpoint
        log.warning("the kept best model holds epoch %s, the resumed curve's best is epoch %s; keeping its weights "
                    "and epoch", blob["info"].get("epoch"), best.get("epoch"))
    save_torch_file(dest, {**blob, "info": {**info, **blob["info"], "checkpoint": "best_test_epoch"}})
