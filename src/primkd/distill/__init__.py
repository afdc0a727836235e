"""Knowledge distillation from a frozen single-modality teacher into the CMX student (PrimKD losses)."""

from primkd.distill.losses import (
    PrimKDLoss,
    aligners_from_official,
    build_aligners,
    kl_map,
    prediction_kl,
    select_feature_loss,
    stage_feature_losses,
)

__all__ = [
    "PrimKDLoss",
    "aligners_from_official",
    "build_aligners",
    "kl_map",
    "prediction_kl",
    "select_feature_loss",
    "stage_feature_losses",
]
