"""Networks: the MiT encoder, CMX's fusion modules, the MLP decoder, whole models, weight-name conversion and
loading (:mod:`primkd.models.io`)."""

from primkd.models.convert import strip_prefix
from primkd.models.decoder import MLPDecoder
from primkd.models.fusion import FeatureFusionModule, FeatureRectifyModule, FusionConfig
from primkd.models.io import CheckpointMismatchError, load_state_dict_checked, read_mit_pretrained
from primkd.models.mit import MIT_VARIANTS, MixVisionTransformer, build_mit, mit_config, mit_from_hf, mit_from_segformer
from primkd.models.segmentors import (
    CMX,
    SegFormer,
    build_student,
    build_teacher,
    cmx_from_official,
    cmx_to_official,
    count_macs,
    count_parameters,
    measure_complexity,
    teacher_from_official,
    teacher_to_official,
)

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
    "count_macs",
    "count_parameters",
    "load_state_dict_checked",
    "measure_complexity",
    "mit_config",
    "mit_from_hf",
    "mit_from_segformer",
    "read_mit_pretrained",
    "strip_prefix",
    "teacher_from_official",
    "teacher_to_official",
]
