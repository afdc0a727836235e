"""Data-parallel training on the CPU (gloo): 2 ranks × batch b end a step where 1 rank × batch 2b does."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from primkd.config import ConfigError, KDConfig, load_params
from primkd.engine.distributed import GlooSyncBatchNorm, convert_sync_batchnorm, split_batch
from primkd.engine.train import Run, train
from primkd.models import build_student
from primkd.models.fusion import PerImageBatchNorm2d, per_image_batchnorm

from fake_data import REPO, make_dataset

GRAD_PROBE = """
import torch
def record_first_gradients(path):
    # Save the gradients the optimiser sees at its first step (AdamW's first update is nearly sign(g), blind to a
    # wrongly scaled gradient: the gradients themselves are compared).
    original = torch.optim.AdamW.step
    def step(self, *args, **kwargs):
        if not getattr(record_first_gradients, "done", False):
            record_first_gradients.done = True
            if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
                grads = [p.grad.clone() for g in self.param_groups for p in g["params"] if p.grad is not None]
                torch.save(grads, path)
        return original(self, *args, **kwargs)
    torch.optim.AdamW.step = step
"""

DRIVER = GRAD_PROBE + """
import json, sys
from pathlib import Path
from primkd.config import KDConfig
from primkd.engine.train import Run, train
torch.set_num_threads(1)
spec = json.loads(Path(sys.argv[1]).read_text())
record_first_gradients(spec["grads"])
run = Run(**{**spec["run"], "kd": spec["run"]["kd"] and KDConfig(**spec["run"]["kd"]),
             "teacher_path": spec["run"]["teacher_path"] and Path(spec["run"]["teacher_path"])})
train(spec["cfg"], run, Path(spec["data"]), Path(spec["data"]) / "hha", Path(spec["out"]), progress=False,
      checkpoint_dir=Path(spec["out"]) / "ckpt")
"""


def test_split_batch_keeps_the_global_batch():
    assert split_batch(8, 1, 0) == (8, 1)
    assert split_batch(8, 2, 0) == (4, 1)
    assert split_batch(8, 2, 2) == (2, 2)
    with pytest.raises(ConfigError) as info:
        split_batch(8, 3, 0)
    assert str(info.value) == ("train.batch_size = 8 is not a multiple of 3 ranks x train.micro_batch = 2; in "
                               "params.yaml make train.batch_size a multiple of ranks x train.micro_batch "
                               "(train.micro_batch: 0 = batch size / ranks, no accumulation)")


def test_only_plain_batchnorms_are_synchronised():
    """Under torchrun the per-image FFM BatchNorms (train.fusion_bn: per_image) keep their own statistics and only
    the decoder's spans the ranks; with the default every BatchNorm does."""
    student = build_student("mit_tiny", 3, decoder_embed_dim=16)
    released = convert_sync_batchnorm(per_image_batchnorm(copy.deepcopy(student).ffms), torch.device("cpu"))
    assert {type(m) for m in released.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {PerImageBatchNorm2d}
    types = {name: type(m) for name, m in convert_sync_batchnorm(student, torch.device("cpu")).named_modules()
             if isinstance(m, torch.nn.BatchNorm2d)}
    assert len(types) == 9 and set(types.values()) == {GlooSyncBatchNorm}
    synced = convert_sync_batchnorm(torch.nn.Sequential(per_image_batchnorm(torch.nn.BatchNorm2d(2)),
                                                        torch.nn.BatchNorm2d(2)), torch.device("cpu"))
    assert [type(m) for m in synced] == [PerImageBatchNorm2d, GlooSyncBatchNorm]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = make_dataset(root / "data", n_train=4, n_test=2)
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["model"].update(drop_path_rate=0.0, decoder_dropout=0.0)  # no randomness that differs between the layouts
    cfg["train"].update(epochs=1, batch_size=4, crop=[32, 48], scales=[1.0], flip=0.0, eval_every=0,
                        warmup_epochs=0, checkpoint_every=0, num_workers=0)
    torch.set_num_threads(1)
    train(cfg, Run("teacher_rgb", "teacher", ["rgb"]), data, data / "hha", root / "teacher", progress=False)
    return root, data, cfg


def run_torchrun(spec: dict, root: Path, nproc: int) -> None:
    (root / "driver.py").write_text(DRIVER)
    (root / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(root / "driver.py"), str(root / "spec.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(("kd", "released"), [(False, False), (True, False), (True, True)],
                         ids=["cmx", "primkd", "released"])
def test_two_ranks_match_one_rank_with_the_whole_batch(setup, tmp_path, kd, released):
    root, data, cfg = setup
    if released:  # 2 ranks x 1 image, as the released 4 x 1: FFM BatchNorms per image, CE per image
        cfg = copy.deepcopy(cfg)
        cfg["train"].update(batch_size=2, fusion_bn="per_image", ce_reduction="per_image")
    # No aligner mask: its random draws differ between one process and two (the rest is deterministic).
    kd_cfg = dict(cfg["kd"], teacher_modality="rgb", beta=0.5, mask_lambda=1.0) if kd else None
    teacher = str(root / "teacher" / "model.pt") if kd else None
    run = {"name": "primkd" if kd else "cmx", "kind": "student", "inputs": ["rgb", "modal"], "kd": kd_cfg,
           "teacher_path": teacher}
    single = Run(**{**run, "kd": kd_cfg and KDConfig(**kd_cfg), "teacher_path": teacher and Path(teacher)})
    probe: dict = {}
    exec(GRAD_PROBE, probe)
    original = torch.optim.AdamW.step
    try:
        probe["record_first_gradients"](tmp_path / "grads_one.pt")
        train(cfg, single, data, data / "hha", tmp_path / "one", progress=False, checkpoint_dir=tmp_path / "one" / "c")
    finally:
        torch.optim.AdamW.step = original
    spec = {"cfg": cfg, "run": run, "data": str(data), "out": str(tmp_path / "two"),
            "grads": str(tmp_path / "grads_two.pt")}
    run_torchrun(spec, tmp_path, nproc=2)
    grads_one, grads_two = (torch.load(tmp_path / f"grads_{n}.pt", weights_only=True) for n in ("one", "two"))
    assert len(grads_one) == len(grads_two) > 0
    overall = max(float(a.abs().max()) for a in grads_one)
    for i, (a, b) in enumerate(zip(grads_one, grads_two)):
        # relative to the tensor's scale, plus 1e-6 of the largest gradient for gradients that are zero up to
        # rounding (a bias right before a BatchNorm)
        tolerance = 1e-4 * float(a.abs().max()) + 1e-6 * overall
        assert float((a - b).abs().max()) <= tolerance, f"gradient {i} differs"
    one = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    summary = json.loads((tmp_path / "two" / "train.json").read_text())
    assert summary["world_size"] == 2
    assert one["state_dict"].keys() == two["state_dict"].keys()
    moved = 0
    for key, a in one["state_dict"].items():
        b = two["state_dict"][key]
        if a.is_floating_point():
            # AdamW moves a parameter by at most about lr per step: one whose gradient is ~0 (a bias before a
            # BatchNorm) may go either way on float noise alone, up to 2 lr apart per step
            atol = 2.01 * cfg["train"]["lr"] * summary["iterations"]
            torch.testing.assert_close(b, a, rtol=0, atol=atol, msg=lambda m, key=key: f"{key}: {m}")
            moved += int(not torch.equal(a, b) or "running" in key)
    assert moved > 0  # the comparison covers trained weights and BatchNorm statistics
