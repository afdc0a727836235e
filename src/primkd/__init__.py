"""PrimKD: primary-modality guided knowledge distillation for RGB-D semantic segmentation."""

__version__ = "0.1.0"
