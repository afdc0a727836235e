"""Whole networks: the single-stream SegFormer (teacher, single-modality model) and the dual-stream CMX student.

Only the builders know concrete sizes; the model classes take their parts. Both models return dicts of named
tensors so that distillation and analysis read stage features without hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from primkd.models import decoder, fusion, mit
from primkd.models.convert import NameTable, StateDict, convert_names
from primkd.models.decoder import MLPDecoder
from primkd.models.fusion import FeatureFusionModule, FeatureRectifyModule, FusionConfig
from primkd.models.mit import MixVisionTransformer, build_mit, init_weights_segformer


def _upsample_to(logits: Tensor, like: Tensor) -> Tensor:
    """Bilinear (align_corners False) resize of ``B×K×h×w`` logits to the input's ``H×W``."""
    return F.interpolate(logits, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SegFormer(nn.Module):
    """MiT encoder + all-MLP decoder on one modality."""

    def __init__(self, encoder: MixVisionTransformer, decoder: MLPDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: Tensor, return_intermediates: bool = False) -> dict[str, Tensor | list[Tensor]]:
        """Segment ``B×C_in×H×W`` images.

        Returns:
            ``logits`` ``B×K×H×W`` and ``features``, the four stage outputs ``B×C_s×H_s×W_s`` (after each stage's
            LayerNorm: the feature-distillation targets); with ``return_intermediates`` also ``logits_quarter``,
            the decoder output at stride 4.
        """
        features = self.encoder(x)
        logits_quarter = self.decoder(features)
        out: dict[str, Tensor | list[Tensor]] = {"logits": _upsample_to(logits_quarter, x), "features": features}
        if return_intermediates:
            out["logits_quarter"] = logits_quarter
        return out


class CMX(nn.Module):
    """Two MiT encoders (separate weights) joined stage by stage by FRMs and FFMs, and an all-MLP decoder.

    At stage ``i`` both branches run their stage, ``FRM_i`` rectifies the pair, the rectified maps feed the next
    stage of their own branch, and ``FFM_i`` fuses them into the decoder's ``i``-th input.
    """

    def __init__(self, encoder_rgb: MixVisionTransformer, encoder_modal: MixVisionTransformer,
                 frms: Sequence[FeatureRectifyModule], ffms: Sequence[FeatureFusionModule],
                 decoder: MLPDecoder) -> None:
        super().__init__()
        self.encoder_rgb = encoder_rgb
        self.encoder_modal = encoder_modal
        self.frms = nn.ModuleList(frms)
        self.ffms = nn.ModuleList(ffms)
        self.decoder = decoder

    def forward(self, rgb: Tensor, modal: Tensor,
                return_intermediates: bool = False) -> dict[str, Tensor | list[Tensor]]:
        """Segment an RGB image ``B×3×H×W`` with its other modality ``B×C_m×H×W`` (HHA or depth).

        Returns:
            ``logits`` ``B×K×H×W`` and ``fused``, the four FFM outputs ``B×C_s×H_s×W_s``; with
            ``return_intermediates`` also ``stage_rgb``/``stage_modal`` (each branch's stage output before the FRM),
            ``rectified_rgb``/``rectified_modal`` (FRM outputs) and ``logits_quarter`` (decoder output, stride 4).
        """
        names = ("stage_rgb", "stage_modal", "rectified_rgb", "rectified_modal", "fused")
        kept: dict[str, list[Tensor]] = {name: [] for name in names}
        x_rgb, x_modal = rgb, modal
        for stage_rgb, stage_modal, frm, ffm in zip(self.encoder_rgb.stages, self.encoder_modal.stages, self.frms,
                                                    self.ffms):
            s_rgb, s_modal = stage_rgb(x_rgb), stage_modal(x_modal)
            x_rgb, x_modal = frm(s_rgb, s_modal)
            for name, value in zip(names, (s_rgb, s_modal, x_rgb, x_modal, ffm(x_rgb, x_modal))):
                kept[name].append(value)
        logits_quarter = self.decoder(kept["fused"])
        out: dict[str, Tensor | list[Tensor]] = {"logits": _upsample_to(logits_quarter, rgb), "fused": kept["fused"]}
        if return_intermediates:
            out.update(kept, logits_quarter=logits_quarter)
        return out


def build_teacher(variant: str | Mapping[str, Any], num_classes: int, decoder_embed_dim: int = 512,
                  drop_path_rate: float = 0.1, decoder_bn_eps: float = 1e-5, in_chans: int = 3,
                  decoder_dropout: float = 0.1) -> SegFormer:
    """Build the single-stream model (teacher or single-modality baseline).

    Args:
        variant: name in ``MIT_VARIANTS`` or a mapping of MiT settings (see ``mit.mit_config``).
        num_classes: output classes.
        decoder_embed_dim: decoder width E (CMX and PrimKD use 512 for every variant).
        drop_path_rate: stochastic depth of the encoder's last block.
        decoder_bn_eps: eps of the decoder BatchNorm; PrimKD's teacher keeps PyTorch's 1e-5.
        in_chans: input channels (3 for RGB or HHA).
        decoder_dropout: Dropout2d probability before the classifier.
    """
    encoder = build_mit(variant, drop_path_rate=drop_path_rate, in_chans=in_chans)
    decoder = MLPDecoder(encoder.embed_dims, decoder_embed_dim, num_classes, dropout=decoder_dropout,
                         bn_eps=decoder_bn_eps)
    return SegFormer(encoder, decoder)


def build_student(variant: str | Mapping[str, Any], num_classes: int, decoder_embed_dim: int = 512,
                  drop_path_rate: float = 0.1, decoder_bn_eps: float = 1e-3, modal_chans: int = 3,
                  decoder_dropout: float = 0.1, fusion: FusionConfig | None = None) -> CMX:
    """Build the CMX student.

    Args:
        variant: name in ``MIT_VARIANTS`` or a mapping of MiT settings; both encoders use it.
        num_classes: output classes.
        decoder_embed_dim: decoder width E (512 in CMX for every variant).
        drop_path_rate: stochastic depth of each encoder's last block.
        decoder_bn_eps: eps of the decoder BatchNorm; CMX's training builder sets 1e-3.
        modal_chans: channels of the second modality (3 for HHA).
        decoder_dropout: Dropout2d probability before the classifier.
        fusion: FRM/FFM settings; ``None`` takes the official ones.
    """
    fusion = fusion or FusionConfig()
    encoder_rgb = build_mit(variant, drop_path_rate=drop_path_rate)
    encoder_modal = build_mit(variant, drop_path_rate=drop_path_rate, in_chans=modal_chans)
    dims = encoder_rgb.embed_dims
    heads = fusion.ffm_num_heads or encoder_rgb.num_heads
    frms = [FeatureRectifyModule(d, fusion.frm_reduction, fusion.lambda_c, fusion.lambda_s) for d in dims]
    ffms = [FeatureFusionModule(d, h, fusion.ffm_reduction, fusion.ln_eps, fusion.bn_eps) for d, h in zip(dims, heads)]
    for module in (*frms, *ffms):
        module.apply(init_weights_segformer)
    decoder = MLPDecoder(dims, decoder_embed_dim, num_classes, dropout=decoder_dropout, bn_eps=decoder_bn_eps)
    return CMX(encoder_rgb, encoder_modal, frms, ffms, decoder)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, *inputs: Tensor) -> int:
    """Multiply-accumulates of one forward pass (torch's FlopCounterMode counts two FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() // 2


def measure_complexity(variant: str, num_classes: int, height: int, width: int,
                       decoder_embed_dim: int = 512) -> dict[str, int]:
    """Parameters and multiply-accumulates of the CMX inference network on one ``height×width`` RGB-HHA pair.

    The network is built on the meta device (no memory, no weights), so MiT-B4 at 530×730 takes about a second.
    There, attention runs its math path (two batched matmuls), which the counter sees; the CPU's fused attention
    kernel has no FLOP formula in ``FlopCounterMode`` and would be missed.

    Returns:
        ``{"params": parameter elements, "macs": multiply-accumulates}``.
    """
    with torch.device("meta"):
        model = build_student(variant, num_classes, decoder_embed_dim=decoder_embed_dim).eval()
        x = torch.empty(1, 3, height, width)  # (B, 3, H, W), RGB and HHA alike
    return {"params": count_parameters(model), "macs": count_macs(model, x, x)}


# --- Names of the official CMX / PrimKD checkpoints ---------------------------------------------------------

_CMX: NameTable = [
    *[("backbone.extra_" + o, "encoder_modal." + u) for o, u in mit.OFFICIAL_NAMES],
    *[("backbone." + o, "encoder_rgb." + u) for o, u in mit.OFFICIAL_NAMES],
    *fusion.OFFICIAL_NAMES,
    *decoder.OFFICIAL_NAMES,
]
_TEACHER: NameTable = [*[("backbone." + o, "encoder." + u) for o, u in mit.OFFICIAL_NAMES], *decoder.OFFICIAL_NAMES]


def cmx_from_official(sd: Mapping[str, Tensor], drop: Iterable[str] = ()) -> StateDict:
    """Official CMX state dict (``backbone.*``, ``decode_head.*``) → ``CMX`` names.

    Args:
        sd: the official state dict (unwrapped, without ``module.``).
        drop: key prefixes to leave out, e.g. ``("decode_head.align_loss",)`` for PrimKD's training-only aligners.
    """
    return convert_names(sd, _CMX, True, "CMX checkpoint", drop)


def cmx_to_official(sd: Mapping[str, Tensor]) -> StateDict:
    """``CMX`` state dict → official CMX names (inverse of ``cmx_from_official``)."""
    return convert_names(sd, _CMX, False, "CMX model state")


def teacher_from_official(sd: Mapping[str, Tensor], drop: Iterable[str] = ()) -> StateDict:
    """Official single-stream state dict (PrimKD's ``RGBXTransformer2`` + ``DecoderHead``) → ``SegFormer`` names."""
    return convert_names(sd, _TEACHER, True, "teacher checkpoint", drop)


def teacher_to_official(sd: Mapping[str, Tensor]) -> StateDict:
    """``SegFormer`` state dict → official names (inverse of ``teacher_from_official``)."""
    return convert_names(sd, _TEACHER, False, "teacher model state")


