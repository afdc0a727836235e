"""Speed switches of a run (``train.amp``, ``train.channels_last``, ``train.compile``, ``train.cudnn_benchmark``).

On the CPU every switch falls back to the plain fp32 eager path (bf16 matmuls are slow there and the tests compare
fp32 numbers), so one parameter file serves both a laptop and a GPU node; the switches actually in force are
recorded in each run's ``train.json``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from primkd.config import TrainConfig

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The switches in force for one run on one device."""

    amp: str  # none | bf16 | fp16
    channels_last: bool
    compile: bool
    cudnn_benchmark: bool

    @classmethod
    def of(cls, train: TrainConfig, device: torch.device) -> Precision:
        """Resolve the ``train`` settings for ``device``: ``amp: auto`` is bf16 on CUDA; on the CPU all are off."""
        cuda = device.type == "cuda"
        amp = ("bf16" if train.amp == "auto" else train.amp) if cuda else "none"
        return cls(amp=amp, channels_last=cuda and train.channels_last, compile=cuda and train.compile,
                   cudnn_benchmark=cuda and train.cudnn_benchmark and not train.deterministic)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op without AMP)."""
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[self.amp])

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """Loss scaling, needed by fp16 only (bf16 has fp32's exponent range); disabled otherwise."""
        return torch.amp.GradScaler(device.type, enabled=self.amp == "fp16")

    def prepare(self, model: nn.Module) -> nn.Module:
        """Apply the memory format to ``model`` in place (convolutions run faster in NHWC on tensor cores)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in the memory format of the network."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def as_dict(self) -> dict:
        return asdict(self)
