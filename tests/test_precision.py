"""Speed switches resolved from the typed ``train`` settings per device (no GPU needed: only the device type counts)."""

import contextlib
from dataclasses import replace

import torch

from primkd.config import TrainConfig, load_params
from primkd.engine.precision import Precision

from fake_data import REPO

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _train(**changes) -> TrainConfig:
    return replace(TrainConfig.of(load_params(REPO / "params.yaml", "nyuv2_b4")), **changes)


def test_cuda_gets_the_settings_and_auto_means_bf16():
    t = _train(amp="auto", channels_last=True, compile=False, cudnn_benchmark=True, deterministic=False)
    assert Precision.of(t, CUDA) == Precision(amp="bf16", channels_last=True, compile=False, cudnn_benchmark=True)
    assert Precision.of(replace(t, amp="fp16", compile=True), CUDA).as_dict() == {
        "amp": "fp16", "channels_last": True, "compile": True, "cudnn_benchmark": True}


def test_deterministic_runs_turn_cudnn_autotuning_off():
    t = _train(amp="none", cudnn_benchmark=True, deterministic=True)
    assert Precision.of(t, CUDA) == Precision(amp="none", channels_last=t.channels_last, compile=t.compile,
                                              cudnn_benchmark=False)


def test_the_cpu_runs_plain_fp32_whatever_the_settings():
    t = _train(amp="bf16", channels_last=True, compile=True, cudnn_benchmark=True)
    plain = Precision.of(t, CPU)
    assert plain == Precision(amp="none", channels_last=False, compile=False, cudnn_benchmark=False)
    assert isinstance(plain.autocast(CPU), contextlib.nullcontext)
    x = torch.zeros(1, 3, 4, 4)
    assert plain.inputs(x) is x
