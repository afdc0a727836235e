"""Training engine: schedule, optimiser groups and a tiny end-to-end train/evaluate run (the dataset and its
augmentation: test_dataset.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from primkd.config import ConfigError, KDConfig, TrainConfig, load_params
from primkd.data.dataset import EpochSampler
from primkd.distill.losses import PrimKDLoss, build_aligners
from primkd.engine.checkpoint import latest_checkpoint
from primkd.engine.optim import build_optimizer, build_scheduler, param_groups, warmup_poly_factor
from primkd.engine.train import (
    Run,
    best_evaluation,
    build_loss,
    epoch_samples,
    evaluation_due,
    official_stage2_drop_path,
    train,
)
from primkd.io import DataError
from primkd.models.io import load_model

from fake_data import REPO, make_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_warmup_then_poly_schedule():
    # 10 iterations, 4 of warm-up, ratio 0.1: 0.1 (floor), 0.25, 0.5, 0.75, then (1 - it/10) ** 1.
    factors = [warmup_poly_factor(it, 10, 4, 0.1, 1.0) for it in range(10)]
    assert factors[:4] == [0.1, 0.25, 0.5, 0.75]
    assert factors[4:] == pytest.approx([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert warmup_poly_factor(5, 10, 0, 0.0, 0.9) == pytest.approx(0.5**0.9)


def test_no_weight_decay_on_biases_and_norms():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    decay, no_decay = param_groups([net], 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias


def test_train_teacher_and_distilled_student_end_to_end(tmp_path):
    root = make_dataset(tmp_path / "data")
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["train"].update(epochs=2, batch_size=2, crop=[32, 48])
    teacher = train(cfg, Run("teacher_rgb", "teacher", ["rgb"]), root, root / "hha", tmp_path / "t", progress=False)
    assert teacher["epochs"] == 2 and 0 <= teacher["test_miou_single_scale"] <= 1
    assert teacher["step_seconds"]["steps"] == teacher["iterations"] == 4  # 4 images, batch 2, 2 epochs
    assert teacher["peak_memory"]["rss_mib"] > 0 and teacher["peak_memory"]["cuda_allocated_mib"] is None
    kd = KDConfig(**dict(cfg["kd"], beta=0.5), teacher_modality="rgb")
    run = Run("primkd", "student", ["rgb", "modal"], kd=kd, teacher_path=tmp_path / "t" / "model.pt")
    student = train(cfg, run, root, root / "hha", tmp_path / "s", progress=False)
    curves = (tmp_path / "s" / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("epoch,lr,loss,seg,pred,feat,stage1_mse") and len(curves) == 3
    last = dict(zip(curves[0].split(","), map(float, curves[-1].split(","))))
    assert last["pred"] > 0 and last["feat"] > 0 and max(last[f"stage{i}_mse"] for i in range(1, 5)) > 0
    model, meta = load_model(tmp_path / "s" / "model.pt")
    assert meta["inputs"] == ["rgb", "modal"] and meta["info"]["kd"]["beta"] == 0.5
    assert student["parameters"] == sum(p.numel() for p in model.parameters())
    # Both checkpoints are kept: the last epoch's and the best test-split evaluation's (epochs 1 and 2 evaluated).
    points = [(int(r.split(",")[0]), float(r.split(",")[1]))
              for r in (tmp_path / "s" / "eval_curve.csv").read_text().splitlines()[1:]]
    assert [e for e, _ in points] == [1, 2]
    best_epoch = 1 if points[0][1] >= points[1][1] else 2
    assert student["best_test_epoch"] == best_epoch and student["test_miou_best_epoch"] == points[best_epoch - 1][1]
    best, best_meta = load_model(tmp_path / "s" / "model_best.pt")
    assert best_meta["info"]["epoch"] == best_epoch and best_meta["info"]["checkpoint"] == "best_test_epoch"
    assert best_meta["info"]["kd"]["beta"] == 0.5 and meta["info"]["epoch"] == 2
    if best_epoch == 2:
        assert all(torch.equal(a, b) for a, b in zip(best.state_dict().values(), model.state_dict().values()))
    # Same seed, same data: a second run gives the same weights (CPU determinism).
    again = train(cfg, run, root, root / "hha", tmp_path / "s2", progress=False)
    assert again["final_loss"] == student["final_loss"]


def test_best_evaluation_on_a_scripted_curve():
    # The official loop keeps its best on a strict improvement: the first of tied maxima wins; last != best.
    curve = [{"epoch": e, "miou": m} for e, m in [(1, 0.20), (2, 0.41), (3, 0.38), (4, 0.41), (5, 0.40)]]
    assert best_evaluation(curve) == {"epoch": 2, "miou": 0.41}
    assert curve[-1]["miou"] == 0.40  # the honest last-epoch figure stays the default in the tables
    assert best_evaluation([]) is None
    assert best_evaluation([{"epoch": 1, "miou": None}, {"epoch": 2, "miou": 0.1}])["epoch"] == 2
    # NYU official: every epoch; SUN-RGBD official: every 10 epochs from epoch 100, and always the last one.
    assert [e for e in range(1, 6) if evaluation_due(e, 5, 1)] == [1, 2, 3, 4, 5]
    sun = [e for e in range(1, 301) if evaluation_due(e, 300, 10, 100)]
    assert sun[:3] == [100, 110, 120] and sun[-1] == 300 and len(sun) == 21
    assert [e for e in range(1, 8) if evaluation_due(e, 7, 0)] == [7]


def test_student_refuses_a_teacher_of_the_wrong_modality(tmp_path):
    root = make_dataset(tmp_path / "data")
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["train"].update(epochs=1, batch_size=2, crop=[32, 48])
    train(cfg, Run("teacher_rgb", "teacher", ["rgb"]), root, root / "hha", tmp_path / "t", progress=False)
    run = Run("x", "student", ["rgb", "modal"], kd=KDConfig(**cfg["kd"], teacher_modality="depth"),
              teacher_path=tmp_path / "t" / "model.pt")
    with pytest.raises(DataError, match=r"model\.pt: a rgb teacher, but this experiment names teacher 'depth'"):
        train(cfg, run, root, root / "hha", tmp_path / "s", progress=False)


def test_batch_larger_than_the_training_split_is_refused(tmp_path):
    root = make_dataset(tmp_path / "data", n_train=3)
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["train"].update(epochs=1, batch_size=4, crop=[32, 48])
    with pytest.raises(ConfigError, match=r"train\.batch_size = 4 exceeds the 3 images that .*train\.txt lists"):
        train(cfg, Run("teacher_rgb", "teacher", ["rgb"]), root, root / "hha", tmp_path / "t", progress=False)


def test_official_epoch_fills_the_last_batch_with_random_repeats():
    # 10 images, batch 4: official epochs hold 4 x (10 // 4 + 1) = 12 samples, every image once plus 2 distinct ones.
    t = replace(TrainConfig.of(load_params(REPO / "params.yaml", "smoke")), batch_size=4, fill_last_batch=True)
    assert epoch_samples(t, 10) == 12 and epoch_samples(replace(t, fill_last_batch=False), 10) == 10
    assert epoch_samples(t, 8) == 12  # a whole extra batch when the split divides evenly, as the official loader
    s = EpochSampler(10, seed=1, total=12)
    s.set_epoch(3)
    order = [i for i, _ in s]
    assert len(s) == 12 and order == [i for i, _ in s]
    assert sorted(order[:10]) == list(range(10)) and len(set(order[10:])) == 2
    plain = EpochSampler(10, seed=1)
    plain.set_epoch(3)
    assert [i for i, _ in plain] == order[:10]  # the same permutation first
    two = EpochSampler(3, seed=0, total=8)  # two more passes, then 2 distinct images
    counts = np.bincount([i for i, _ in two], minlength=3)
    assert counts.sum() == 8 and sorted(counts.tolist()) == [2, 3, 3]


def test_first_step_at_the_full_rate_then_the_schedule_one_step_late():
    net = torch.nn.Linear(2, 2)
    t = replace(TrainConfig.of(load_params(REPO / "params.yaml", "smoke")), lr=1.0, weight_decay=0.0,
                betas=(0.9, 0.999), epochs=1, warmup_epochs=0.5, warmup_ratio=0.0, poly_power=1.0,
                first_step_full_lr=True)
    opt = build_optimizer([net], t)
    sched = build_scheduler(opt, t, 8)  # 8 iterations, 4 of warm-up from 0
    rates = []
    for _ in range(6):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([1.0, 0.0, 0.25, 0.5, 0.75, 0.5])  # official: full, then get_lr(0), get_lr(1), ...
    opt = build_optimizer([net], replace(t, first_step_full_lr=False))
    sched = build_scheduler(opt, replace(t, first_step_full_lr=False), 8)
    assert opt.param_groups[0]["lr"] == 0.0


def test_official_quirks_decoder_biases_and_constant_stage2_drop_path():
    from primkd.models import build_student
    from primkd.models.decoder import reset_conv_biases

    torch.manual_seed(0)
    net = build_student("mit_b0", num_classes=5, decoder_embed_dim=16)
    assert net.decoder.fuse.bias.abs().max() == 0 and net.decoder.classifier.bias.abs().max() == 0
    reset_conv_biases(net.decoder)
    for conv in (net.decoder.fuse, net.decoder.classifier):
        bound = conv.weight[0].numel() ** -0.5
        assert 0 < conv.bias.abs().max() <= bound and conv.bias.abs().max() > bound / 4
    # mit_b0: depths 2, 2, 2, 2; 8 blocks, rates 0.1 * k / 7. Stage 2 holds blocks 2 and 3 (0.1 * 2/7, 0.1 * 3/7).
    rates = lambda enc: [b.drop_path.drop_prob for b in enc.stages[1].blocks]  # noqa: E731
    assert rates(net.encoder_rgb) == pytest.approx([0.2 / 7, 0.3 / 7])
    official_stage2_drop_path(net, 0.1)
    assert rates(net.encoder_rgb) == pytest.approx([0.2 / 7, 0.2 / 7])  # RGB: the stage's first rate
    assert rates(net.encoder_modal) == pytest.approx([0.3 / 7, 0.3 / 7])  # depth: its second
    assert net.encoder_rgb.stages[2].blocks[0].drop_path.drop_prob == pytest.approx(0.4 / 7)  # other stages linear


def _trained(folder) -> tuple[dict, list[str], dict]:
    """model.pt's weights, curves.csv + eval_curve.csv and the last training checkpoint's criterion state."""
    _, blob = latest_checkpoint(folder / "checkpoints")
    model, _ = load_model(folder / "model.pt")
    return (model.state_dict(), [(folder / f).read_text() for f in ("curves.csv", "eval_curve.csv")],
            blob["states"]["criterion"])


@pytest.mark.parametrize("name, kind, inputs, beta", [("teacher_depth", "teacher", ["modal"], None),
                                                       ("cmx", "student", ["rgb", "modal"], None),
                                                       ("primkd", "student", ["rgb", "modal"], 0.0)])
def test_runs_without_the_feature_term_train_no_aligners_and_keep_their_weights(tmp_path, monkeypatch, name, kind,
                                                                                 inputs, beta):
    root = make_dataset(tmp_path / "data")
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["train"].update(epochs=1, batch_size=2, crop=[32, 48])
    kd, teacher = None, None
    if beta is not None:  # a distilled student without the feature term (prediction KL only)
        train(cfg, Run("teacher_rgb", "teacher", ["rgb"]), root, root / "hha", tmp_path / "t", progress=False)
        kd = KDConfig(**dict(cfg["kd"], beta=beta), teacher_modality="rgb")
        teacher = tmp_path / "t" / "model.pt"
    run = Run(name, kind, inputs, kd=kd, teacher_path=teacher)
    train(cfg, run, root, root / "hha", tmp_path / "new", progress=False)
    # The code before: the loss kept the aligners whose initial weights build_loss now draws and drops (the loss's
    # constructor draws nothing else), so they entered the optimiser and the checkpoints.
    drawn = []
    monkeypatch.setattr("primkd.engine.train.build_aligners", lambda *args: drawn.append(build_aligners(*args)))

    def old_build_loss(*args, **kwargs) -> PrimKDLoss:
        loss = build_loss(*args, **kwargs)
        loss.aligners = drawn.pop()
        return loss

    monkeypatch.setattr("primkd.engine.train.build_loss", old_build_loss)
    train(cfg, run, root, root / "hha", tmp_path / "old", progress=False)
    (new, new_curves, new_loss), (old, old_curves, old_loss) = _trained(tmp_path / "new"), _trained(tmp_path / "old")
    # The only change: the untrained aligners are gone from the loss (so from the optimiser and every checkpoint).
    assert new_loss == {} and sorted({k.split(".")[1] for k in old_loss}) == ["0", "1", "2", "3"]
    assert new_curves == old_curves and new.keys() == old.keys()
    assert all(torch.equal(new[k], old[k]) for k in new)
    # Without drawing the dropped aligners' initial weights the random stream, and so the weights, would differ.
    monkeypatch.setattr("primkd.engine.train.build_aligners", lambda *args: None)
    monkeypatch.setattr("primkd.engine.train.build_loss", build_loss)
    train(cfg, run, root, root / "hha", tmp_path / "undrawn", progress=False)
    undrawn, _, _ = _trained(tmp_path / "undrawn")
    assert not all(torch.equal(undrawn[k], old[k]) for k in old)
