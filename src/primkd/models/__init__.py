"""Networks: the MiT encoder, CMX's fusion modules, the MLP decoder, whole models and weight conversion."""

from primkd.models.convert import (
    CheckpointMismatchError,
    cmx_from_official,
    cmx_to_official,
    load_mit_pretrained,
    load_state_dict_checked,
    mit_from_hf,
    mit_from_segformer,
    read_mit_pretrained,
    strip_prefix,
    teacher_from_official,
    teacher_to_official,
)
from primkd.models.decoder import MLPDecoder
from primkd.models.fusion import FeatureFusionModule, FeatureRectifyModule, FusionConfig
from primkd.models.mit import MIT_VARIANTS, MixVisionTransformer, build_mit, mit_config
from primkd.models.segmentors import CMX, SegFormer, build_student, build_teacher, count_parameters

__all__ = [
    "CMX",
    "MIT_VARIANTS",
    "CheckpointMismatchError",
    "FeatureFusionModule",
    "FeatureRectifyModule",
    "FusionConfig",
    "MLPDecoder",
    "MixVisionTransformer",
    "SegFormer",
    "build_mit",
    "build_student",
    "build_teacher",
    "cmx_from_official",
    "cmx_to_official",
    "count_parameters",
    "load_mit_pretrained",
    "load_state_dict_checked",
    "mit_config",
    "mit_from_hf",
    "mit_from_segformer",
    "read_mit_pretrained",
    "strip_prefix",
    "teacher_from_official",
    "teacher_to_official",
]
