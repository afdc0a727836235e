"""PrimKD distillation losses: prediction-level KL, feature aligners, stage selection and the combined loss.

``L = L_seg + α·L_pred + β·L_feat`` (docs/design.md §3):

- ``L_seg``: cross-entropy, mean over labelled pixels (label != ``ignore_index``), or with ``ce_reduction:
  per_image`` the mean over images of each image's mean (the released one-image-per-GPU weighting).
- ``L_pred``: per-pixel KL divergence between the teacher's and the student's class distributions, summed over
  classes and averaged over **all** B·H·W pixels, ignored pixels included (as the official code does).
- ``L_feat``: per stage, MSE between an aligner applied to the student's fused feature and the teacher's stage
  feature; a selection rule (fixed stage, average, min or max) picks which stage losses count.

The teacher is frozen: every teacher tensor is detached here, so gradients reach only the student and the aligners.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

KL_DIRECTIONS = ("teacher_student", "student_teacher")
ALIGNER_KINDS = ("single", "multi")
OFFICIAL_ALIGNER_PREFIX = "decode_head.align_loss"


def kl_map(student_logits: Tensor, teacher_logits: Tensor, direction: str = "teacher_student",
           temperature: float = 1.0) -> Tensor:
    """Per-pixel KL divergence between the class distributions of two B×K×H×W logit maps.

    Args:
        student_logits: B×K×H×W student logits.
        teacher_logits: B×K×H×W teacher logits (same shape; resize beforehand if needed). Detached here.
        direction: ``"teacher_student"`` = KL(p_t ‖ p_s) = Σ_c p_t (log p_t − log p_s), the released PrimKD setting
            (``distillation_flag=1``); ``"student_teacher"`` = KL(p_s ‖ p_t), the official argument's default.
        temperature: softmax temperature T; both distributions use ``softmax(logits / T)`` and the map is scaled by
            T² so that gradient magnitudes stay comparable across temperatures (Hinton et al. 2015). T = 1 is the
            paper's setting and applies no scaling.

    Returns:
        B×H×W float32 map of KL values (nats), summed over classes.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"KL direction {direction!r} is not one of {KL_DIRECTIONS}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; upsample both to the label resolution first")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)  # (B, K, H, W)
    log_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)  # (B, K, H, W)
    log_p, log_q = (log_t, log_s) if direction == "teacher_student" else (log_s, log_t)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1) * temperature**2  # (B, H, W)


def prediction_kl(student_logits: Tensor, teacher_logits: Tensor, direction: str = "teacher_student",
                  temperature: float = 1.0) -> Tensor:
    """Prediction-level distillation loss: :func:`kl_map` averaged over all B·H·W pixels (ignored ones included).

    Args:
        student_logits: B×K×H×W student logits.
        teacher_logits: B×K×H×W teacher logits (detached here).
        direction: see :func:`kl_map`.
        temperature: see :func:`kl_map` (the result carries the T² factor).

    Returns:
        Scalar tensor.
    """
    return kl_map(student_logits, teacher_logits, direction, temperature).mean()


def _official_init(module: nn.Module) -> nn.Module:
    """Kaiming-normal (fan in, ReLU gain) weights on every conv, as the official training builder initialises the
    decoder head that holds the aligners; biases keep PyTorch's default (the official init leaves them alone)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return module


def spatial_keep_mask(shape: tuple[int, int, int, int], keep: float, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> Tensor:
    """B×1×H×W float mask: 1 where a uniform draw is ≤ ``keep`` (λ), else 0; one draw per sample and position, shared
    by the channels. λ = 0.75 zeroes about 25% of the positions; the kept values are not rescaled."""
    B, _, H, W = shape
    draws = torch.rand((B, 1, H, W), device=device, generator=generator)  # (B, 1, H, W)
    return (draws <= keep).float()


class MaskedAligner(nn.Module):
    """The multi-layer aligner: Conv1×1, a random spatial mask, then Conv3×3 → ReLU → Conv3×3.

    The official multi-layer path (``DecoderHead_mask``) masks between the 1×1 and the 3×3 convolutions, in the
    manner of masked generative distillation: the 3×3 pair must reconstruct the teacher's feature at the masked
    positions from their neighbours. ``keep`` = λ; 1 disables the mask.
    """

    def __init__(self, channels: int, keep: float = 0.75) -> None:
        super().__init__()
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"mask keep ratio (kd.mask_lambda) must lie in (0, 1], got {keep}")
        self.keep = keep
        self.align = nn.Conv2d(channels, channels, kernel_size=1)
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """B×C×H×W → B×C×H×W. The official code draws the mask at every call (aligners run only in training)."""
        y = self.align(x)
        if self.keep < 1.0:
            y = y * spatial_keep_mask(tuple(y.shape), self.keep, y.device).to(y.dtype)
        return self.refine(y)


def build_aligners(channels: Sequence[int], kind: str = "single", mask_keep: float = 0.75) -> nn.ModuleList:
    """One aligner per stage, mapping the student's fused feature onto the teacher's (same C, same H×W).

    Every conv gets the official initialisation (:func:`_official_init`).

    Args:
        channels: C_k per stage (student and teacher share them).
        kind: ``"single"`` = Conv1×1 C→C with bias (the released command's ``hint`` path); ``"multi"`` = Conv1×1,
            random spatial mask, Conv3×3, ReLU, Conv3×3 (:class:`MaskedAligner`, the official ``DecoderHead_mask``;
            paper Table 5; 3×3 convs padded by 1 so H×W is kept).
        mask_keep: λ of the multi-layer aligner's mask (``kd.mask_lambda``; official 0.75).

    Returns:
        ModuleList of ``len(channels)`` aligners; module k maps B×C_k×H×W to B×C_k×H×W.
    """
    if kind not in ALIGNER_KINDS:
        raise ValueError(f"aligner kind {kind!r} is not one of {ALIGNER_KINDS}")
    if kind == "single":
        return nn.ModuleList(_official_init(nn.Conv2d(c, c, kernel_size=1, bias=True)) for c in channels)
    return nn.ModuleList(_official_init(MaskedAligner(c, mask_keep)) for c in channels)


def aligners_from_official(state_dict: Mapping[str, Tensor], num_stages: int = 4,
                           prefix: str = OFFICIAL_ALIGNER_PREFIX) -> dict[str, Tensor]:
    """Rename the official PrimKD aligner weights to the keys of a *single* :func:`build_aligners` ModuleList.

    ``decode_head.align_loss{k}.weight`` / ``.bias`` (k = 1..num_stages) become ``{k-1}.weight`` / ``{k-1}.bias``;
    other keys (the rest of a full checkpoint) are ignored.

    Args:
        state_dict: official checkpoint state dict (or just its aligner entries).
        num_stages: number of stages to collect.
        prefix: the official name stem before the 1-based stage number.

    Returns:
        Dict to pass to ``aligners.load_state_dict``.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(weight|bias)")
    renamed = {}
    for key, value in state_dict.items():
        match = pattern.fullmatch(key)
        if match and 1 <= int(match.group(1)) <= num_stages:
            renamed[f"{int(match.group(1)) - 1}.{match.group(2)}"] = value
    expected = {f"{k}.{p}" for k in range(num_stages) for p in ("weight", "bias")}
    missing = sorted(expected - renamed.keys())
    if missing:
        names = [f"{prefix}{int(m.split('.')[0]) + 1}.{m.split('.')[1]}" for m in missing]
        raise KeyError(f"official aligner weights missing from the state dict: {names}; pass a PrimKD student "
                       f"checkpoint trained with the single (Conv1×1) aligner")
    return renamed


def stage_feature_losses(aligned: Sequence[Tensor], targets: Sequence[Tensor], per_sample: bool = False) -> Tensor:
    """Mean squared error per stage between aligned student features and teacher features.

    Args:
        aligned: S tensors B×C_k×H_k×W_k (aligner outputs).
        targets: S teacher features of the same shapes (detached here).
        per_sample: if True, average over C·H·W of each sample instead of over B·C·H·W.

    Returns:
        (S,) per-batch losses, or (B, S) per-sample losses; float32.
    """
    if len(aligned) != len(targets):
        raise ValueError(f"{len(aligned)} aligned student features but {len(targets)} teacher features")
    losses = []
    for k, (a, t) in enumerate(zip(aligned, targets)):
        if a.shape != t.shape:
            raise ValueError(f"stage {k + 1}: aligned student feature {tuple(a.shape)} and teacher feature "
                             f"{tuple(t.shape)} differ; student and teacher must share backbone widths and strides")
        sq = (a.float() - t.detach().float()).square()  # (B, C, H, W)
        losses.append(sq.flatten(1).mean(dim=1) if per_sample else sq.mean())  # (B,) or ()
    return torch.stack(losses, dim=-1)  # (B, S) or (S,)


def _synced_scores(stage_losses: Tensor, sync: bool) -> Tensor:
    """Detached stage losses, averaged over ranks when ``sync`` and torch.distributed is initialised."""
    scores = stage_losses.detach()
    if sync and dist.is_available() and dist.is_initialized():
        scores = scores.clone()
        dist.all_reduce(scores, op=dist.ReduceOp.SUM)
        scores /= dist.get_world_size()
    return scores


def check_rule(rule: str, num_stages: int) -> None:
    """Raise ValueError unless ``rule`` is ``"stage1"`` … ``"stage{S}"``, ``"average"``, ``"min"`` or ``"max"``.

    Args:
        rule: selection rule name.
        num_stages: S, the number of stage losses.
    """
    valid = [f"stage{k}" for k in range(1, num_stages + 1)] + ["average", "min", "max"]
    if rule not in valid:
        raise ValueError(f"feature selection rule {rule!r} is not one of {valid}")


def _selection_weights(scores: Tensor, rule: str) -> Tensor:
    """Weights (same shape as ``scores``, last axis = stages) of each stage loss in the selected loss."""
    num_stages = scores.shape[-1]
    check_rule(rule, num_stages)
    if rule == "average":
        return torch.full_like(scores, 1.0 / num_stages)
    if rule in ("max", "min"):
        extreme = scores.amax(dim=-1, keepdim=True) if rule == "max" else scores.amin(dim=-1, keepdim=True)
        return (scores == extreme).to(scores.dtype)  # ties: every stage equal to the extreme counts
    stage = int(rule.removeprefix("stage")) - 1
    return F.one_hot(torch.tensor(stage), num_stages).to(scores).expand_as(scores)


def select_feature_loss(stage_losses: Tensor, rule: str = "max", sync: bool = False) -> Tensor:
    """Combine stage losses by a selection rule.

    Rules: ``"stage1"`` … ``"stageS"`` (a fixed stage), ``"average"`` (mean of the stages), ``"max"`` / ``"min"``
    (the **sum** of all stage losses equal to the extreme, so tied stages all count, as in the official code).
    Which stages count is decided on detached values; gradients flow only through the selected losses.

    Args:
        stage_losses: (S,) per-batch stage losses (the official behaviour) or (B, S) per-sample losses (the
            paper's text): the rule is applied to each sample and the results are averaged over samples.
        rule: selection rule.
        sync: per-batch mode only: when torch.distributed is initialised, all-reduce (mean) the detached stage
            losses before choosing so that every rank selects the same stage(s) (the loss itself stays local and
            DDP averages its gradients). Per-sample choices depend only on each sample, so no sync is needed there.

    Returns:
        Scalar tensor.
    """
    if stage_losses.dim() not in (1, 2):
        raise ValueError(f"stage losses must be (S,) or (B, S), got shape {tuple(stage_losses.shape)}")
    scores = _synced_scores(stage_losses, sync) if stage_losses.dim() == 1 else stage_losses.detach()
    weights = _selection_weights(scores, rule)  # same shape as stage_losses
    selected = torch.where(weights > 0, stage_losses * weights, torch.zeros_like(stage_losses)).sum(dim=-1)
    return selected.mean()  # per-sample: mean over samples; per-batch: already a scalar


CE_REDUCTIONS = ("per_pixel", "per_image")


def _masked_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int, reduction: str = "per_pixel") -> Tensor:
    """Cross-entropy over the labelled pixels (label != ``ignore_index``).

    ``per_pixel``: one mean over every labelled pixel of the batch. ``per_image``: the mean over each image's labelled
    pixels, then the mean over the B images, so that each image weighs the same whatever its labelled-pixel count:
    what the released code computes with one image per GPU (``CrossEntropyLoss(reduction='mean')`` per rank, ranks
    averaged by DDP). An image (or, per pixel, a batch) without labelled pixels contributes 0, still attached to the
    graph.
    """
    if reduction == "per_pixel":
        total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
        count = (labels != ignore_index).sum().clamp_min(1)
        return total / count
    pixels = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")  # (B, H, W)
    counts = (labels != ignore_index).flatten(1).sum(dim=1).clamp_min(1)  # (B,)
    return (pixels.flatten(1).sum(dim=1) / counts).mean()


class PrimKDLoss(nn.Module):
    """The PrimKD training objective ``L = L_seg + α·L_pred + β·L_feat`` with its feature aligners.

    The aligners are trainable parameters of this module: give ``PrimKDLoss.parameters()`` to the optimiser along
    with the student's. They are used only in training; inference cost equals the CMX student.

    Args:
        channels: C_k of the four stages (student fused features and teacher features share them).
        alpha: weight α of the prediction KL term.
        beta: weight β of the selected feature loss (paper: 0.05, Table 7; the official code: 0.1).
        rule: stage selection rule, see :func:`select_feature_loss` (paper's best: ``"max"``).
        aligner: ``"single"`` (Conv1×1, official default path) or ``"multi"`` (masked, paper Table 5).
        mask_keep: λ of the multi-layer aligner's spatial mask (official 0.75; 1 = no mask).
        per_sample: select the stage per sample (paper's text) instead of per mini-batch (official code).
        kl_direction: ``"teacher_student"`` (KL(p_t‖p_s), released setting) or ``"student_teacher"``.
        temperature: KL softmax temperature (the term is scaled by T²).
        use_pred: include the prediction KL term when teacher logits are given.
        use_feat: include the feature term when teacher features are given; without it no aligners are built, so
            none enters the optimiser or a checkpoint untrained.
        ignore_index: label value excluded from the cross-entropy (not from the KL, as in the official code).
        sync_selection: all-reduce the detached stage losses across ranks before choosing (per-batch mode).
        ce_reduction: ``"per_pixel"`` (one mean over the batch's labelled pixels) or ``"per_image"`` (the mean of the
            images' means, as the released one-image-per-GPU training): see :func:`_masked_cross_entropy`.
    """

    def __init__(self, *, channels: Sequence[int], alpha: float = 1.0, beta: float = 0.05, rule: str = "max",
                 aligner: str = "single", mask_keep: float = 0.75, per_sample: bool = False,
                 kl_direction: str = "teacher_student", temperature: float = 1.0, use_pred: bool = True,
                 use_feat: bool = True, ignore_index: int = 255, sync_selection: bool = False,
                 ce_reduction: str = "per_pixel") -> None:
        super().__init__()
        if kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"kl_direction {kl_direction!r} is not one of {KL_DIRECTIONS}")
        if ce_reduction not in CE_REDUCTIONS:
            raise ValueError(f"ce_reduction {ce_reduction!r} is not one of {CE_REDUCTIONS}")
        check_rule(rule, len(channels))
        self.channels = list(channels)
        self.alpha, self.beta, self.rule = alpha, beta, rule
        self.per_sample, self.kl_direction, self.temperature = per_sample, kl_direction, temperature
        self.use_pred, self.use_feat = use_pred, use_feat
        self.ignore_index, self.sync_selection, self.ce_reduction = ignore_index, sync_selection, ce_reduction
        self.aligners = build_aligners(self.channels, aligner, mask_keep) if use_feat else nn.ModuleList()

    def forward(self, student_logits: Tensor, labels: Tensor, student_fused: Sequence[Tensor] | None = None,
                teacher_logits: Tensor | None = None,
                teacher_features: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """Compute every loss term.

        Args:
            student_logits: B×K×H×W student logits at label resolution.
            labels: B×H×W int64 labels in 0..K-1, ``ignore_index`` elsewhere.
            student_fused: four B×C_k×H_k×W_k fused student features (needed with ``teacher_features``).
            teacher_logits: B×K×H×W teacher logits; None disables the KL term.
            teacher_features: four teacher stage features (shapes as ``student_fused``); None disables the feature
                term. Teacher tensors are detached.

        Returns:
            ``loss`` = seg + α·pred + β·feat (scalar, to backpropagate); ``seg`` CE; ``pred`` unweighted KL (0 when
            off); ``feat`` unweighted selected feature loss (0 when off); ``stage_mse`` detached (S,) per-stage MSE
            (batch means; zeros when the feature term is off).
        """
        zero = student_logits.new_zeros((), dtype=torch.float32)
        seg = _masked_cross_entropy(student_logits, labels, self.ignore_index, self.ce_reduction)
        pred = zero
        if self.use_pred and teacher_logits is not None:
            pred = prediction_kl(student_logits, teacher_logits, self.kl_direction, self.temperature)
        feat, stage_mse = zero, student_logits.new_zeros(len(self.channels), dtype=torch.float32)
        if self.use_feat and teacher_features is not None:
            feat, stage_mse = self._feature_term(student_fused, teacher_features)
        loss = seg + self.alpha * pred + self.beta * feat
        return {"loss": loss, "seg": seg, "pred": pred, "feat": feat, "stage_mse": stage_mse}

    def _feature_term(self, student_fused: Sequence[Tensor] | None,
                      teacher_features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Selected feature loss (scalar) and detached per-stage batch MSE (S,)."""
        if student_fused is None or len(student_fused) != len(self.aligners):
            got = "none" if student_fused is None else len(student_fused)
            raise ValueError(f"the feature term needs {len(self.aligners)} student fused features, got {got}")
        aligned = [align(f) for align, f in zip(self.aligners, student_fused)]
        losses = stage_feature_losses(aligned, teacher_features, per_sample=self.per_sample)  # (S,) or (B, S)
        feat = select_feature_loss(losses, self.rule, sync=self.sync_selection)
        stage_mse = losses.detach().mean(dim=0) if self.per_sample else losses.detach()  # (S,)
        return feat, stage_mse
