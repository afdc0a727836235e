"""bench/rehearse.py: what the rehearsal may change (the schedule and where the data comes from, nothing else), its
arithmetic (log timings, FLOPs of grouped convolutions, the projection), and the reduced real-size form end to end
(marked `rehearsal`: MiT-B0 at NYU's 480×640, one iteration, two test images, one scale, through DVC)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from fake_data import REPO
from test_bench import _load

rehearse = _load("rehearse")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("preset", ["nyuv2_b2", "nyuv2_b4_official", "sunrgbd_b4"])
def test_rehearsal_changes_only_the_schedule_and_the_data_location(preset):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    urls = {"nyuv2_labeled": "http://127.0.0.1:1/nyuv2_labeled"}
    checksums = {"nyuv2_labeled": "sha256:" + "0" * 64}
    before = _flatten(rehearse.effective({**raw, "preset": preset}))
    after = _flatten(rehearse.effective(rehearse.rehearsal_params(raw, preset, urls, checksums)))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert {k for k in changed if not k.startswith("experiments.")} == {
        "train.epochs", "seeds", "data.urls.nyuv2_labeled", "data.checksums.nyuv2_labeled"}
    assert after["train.epochs"] == 1 and after["seeds"] == [0] and after["experiments.primkd.teacher"] == "rgb"
    assert not any(k.startswith("experiments.") and not k.startswith("experiments.primkd.") for k in after)
    for key in ("train.crop", "train.batch_size", "model.backbone", "eval.scales", "eval.windows", "train.amp"):
        assert after[key] == before[key]


def test_further_overrides_are_the_ci_forms_own():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = rehearse.effective(rehearse.rehearsal_params(raw, "nyuv2_b2", {}, {}, {"train.batch_size": 2,
                                                                                   "model.backbone": "mit_b0"}))
    assert cfg["train"]["batch_size"] == 2 and cfg["model"]["backbone"] == "mit_b0" and cfg["train"]["crop"] == [480,
                                                                                                                  640]
    with pytest.raises(SystemExit, match="no preset 'nyuv2_b9'"):
        rehearse.rehearsal_params(raw, "nyuv2_b9", {}, {})


def test_grouped_convolution_backward_counts_twice_the_forward():
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64)
    x = torch.randn(1, 64, 20, 30, requires_grad=True)
    custom = {torch.ops.aten.convolution_backward: rehearse._conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        conv(x).sum().backward()
    forward = 2 * 64 * 9 * 20 * 30  # one multiply-add per weight and output pixel: 1 input channel per group
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts == {"aten.convolution": forward, "aten.convolution_backward": 2 * forward}
    x.requires_grad_(False)  # the first layer: no gradient of the input, only of the weight
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        conv(x).sum().backward()
    assert counter.get_flop_counts()["Global"][torch.ops.aten.convolution_backward] == forward


def test_log_timings_of_the_last_run(tmp_path):
    log = tmp_path / "evaluate_cmx.log"
    log.write_text("===== 2026-12-07T10:00:00+00:00 pid 1: primkd evaluate --old\n"
                   "2026-12-07 10:00:05,000 INFO x: (last, single, test split): mIoU 0.1\n"
                   "===== 2026-12-07T11:00:00+00:00 pid 2: primkd evaluate --params params.yaml\n"
                   "2026-12-07 11:00:02,500 INFO primkd: loaded\n"
                   "2026-12-07 11:00:12,000 INFO e: single mode: 2 test images in 9.00 s (4.500 s per image)\n"
                   "2026-12-07 11:01:12,000 INFO e: multi_scale_flip mode: 2 test images in 60.00 s (30.000 s per "
                   "image)\n"
                   "2026-12-07 11:01:12,500 INFO x: m.pt (last, single, test split): mIoU 0.1, mean acc 0.2\n"
                   "2026-12-07 11:01:12,500 INFO x: m.pt (last, multi_scale_flip, test split): mIoU 0.1, mean acc 0.2\n"
                   "2026-12-07 11:01:17,000 INFO e: single mode: 2 test images in 4.00 s (2.000 s per image)\n"
                   "2026-12-07 11:01:17,750 INFO x: m_best.pt (best, single, test split): mIoU 0.1, mean acc 0.2\n"
                   # the train split's pass (evaluate --train-out) is not a test-image time
                   "2026-12-07 11:01:18,000 INFO e: single mode: 8 train images in 8.00 s (1.000 s per image)\n"
                   "2026-12-07 11:01:18,000 INFO x: m.pt (last, single, train split): mIoU 0.3, mean acc 0.2\n")
    assert rehearse.log_timings(log) == {"wall_s": 78.0, "modes": {"last/single": 4.5, "last/multi_scale_flip": 30.0,
                                                                   "best/single": 2.0}}


def test_projection_by_hand():
    cfg = rehearse.effective({**yaml.safe_load((REPO / "params.yaml").read_text()), "preset": "nyuv2_b4_official"})
    # 795 NYU training images, batch 4, the official epoch: 198 + 1 steps; 500 epochs; evaluated every epoch
    run = {"step_s": 2.0, "eval_single_s_per_image": 0.5, "eval_s_per_image": {"last/single": 0.5}}
    measured = {"runs": {r: run for r in ("teacher_rgb", "teacher_depth", "cmx", "primkd")}, "hha_s_per_image": 0.1}
    flops = {"teacher_train": 30, "teacher_forward": 10, "cmx_train": 60, "primkd_train": 70, "student_forward": 20}
    p = rehearse.project(cfg, measured, flops, share=0.5)
    assert p["steps_per_run"] == 199 * 500 and p["evaluations_during_training"] == 500
    per_run = 199 * 500 * 2.0 + 500 * 654 * 0.5 + 654 * 0.5
    assert p["per_run_projected_s"]["cmx"] == round(per_run)
    seeds = len(cfg["seeds"])
    assert p["main"]["runs"] == 2 + 2 * seeds and p["main"]["projected_wall_s"] == round(
        1449 * 0.1 + 2 * per_run + seeds * 2 * per_run)
    images = 199 * 500 * 4
    main_flops = 2 * (images * 30 + 501 * 654 * 10) + seeds * (images * 60 + 501 * 654 * 20 + images * 70
                                                              + 501 * 654 * 20)
    assert p["main"]["flops"] == main_flops
    assert p["main"]["h100_floor_s"] == round(main_flops / (0.5 * 989e12), 1)
    assert p["grid"]["runs"] == 2 + seeds * (1 + len(cfg["experiments"]))


def test_stage_memory_polls_only_its_own_stages(tmp_path):
    """Another pipeline's stage of the same name (a shared machine) is not this rehearsal's: only descendants count."""
    stage = tmp_path / "primkd"  # a stand-in stage command: argv[1] ends in primkd and it has a --log
    stage.write_text("import sys, time\nheld = b'x' * (64 << 20)\ntime.sleep(float(sys.argv[1]))\n")
    other = subprocess.run(["sh", "-c", f'"{sys.executable}" "{stage}" 30 --log "{tmp_path}/train_cmx_seed0.log" '
                            ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    try:  # the shell has exited: that stage is nobody's child here
        with rehearse.StageMemory(interval=0.1) as memory:
            subprocess.run([sys.executable, str(stage), "2", "--log", str(tmp_path / "train_primkd_seed0.log")],
                           check=True)
    finally:
        os.kill(int(other.stdout), signal.SIGTERM)
    assert set(memory.peaks) == {"train_primkd_seed0"}
    assert memory.peaks["train_primkd_seed0"]["main_mib"] > 64


def test_count_only_gives_the_floor_without_running(tmp_path, monkeypatch, capsys):
    flops = {"teacher_train": 30, "teacher_forward": 10, "cmx_train": 60, "primkd_train": 70, "student_forward": 20}
    monkeypatch.setattr(rehearse, "training_flops", lambda cfg, num_classes: dict(flops, crop=cfg["train"]["crop"],
                                                                                 classes=num_classes))
    summary, = rehearse.main(["--preset", "sunrgbd_b4_official", "--count-only", "--scratch", str(tmp_path / "s"),
                              "--out", str(tmp_path / "floor.json")])
    assert not (tmp_path / "s").exists()  # nothing generated, served or run
    assert summary["flops"]["crop"] == [530, 730] and summary["flops"]["classes"] == 37
    p = summary["projection"]
    # 5285 SUN-RGBD training images, batch 16, the official epoch: 330 + 1 steps; 300 epochs; every 10th from 100
    assert p["steps_per_run"] == 331 * 300 and p["evaluations_during_training"] == 21
    images, tests = 331 * 300 * 16, 22 * 5050
    seeds = p["seeds"]
    main_flops = 2 * (images * 30 + tests * 10) + seeds * (images * 60 + tests * 20 + images * 70 + tests * 20)
    assert p["main"] == {"runs": 2 + 2 * seeds, "flops": main_flops,
                         "h100_floor_s": round(main_flops / (0.4 * 989e12), 1)}
    assert json.loads((tmp_path / "floor.json").read_text())["projection"]["main"] == p["main"]
    out = capsys.readouterr().out
    assert "PROJECTION" not in out and f"({main_flops / 1e15:.1f} PFLOP)" in out


@pytest.mark.rehearsal
def test_reduced_rehearsal_at_real_size_end_to_end(tmp_path, capsys):
    """The smallest configuration at NYU's real sizes (480×640 raw images and crop) through every stage in DVC; what
    is checked: the raw files' size, one iteration per training, the report's Δ columns and warning, the numbers."""
    summary, = rehearse.main(["--preset", "nyuv2_b2", "--tool", "dvc", "--iterations", "1", "--test-images", "2",
                              "--scratch", str(tmp_path), "--set", "train.batch_size=2", "--set",
                              "model.backbone=mit_b0", "--set", "eval.scales=[1.0]", "--set", "eval.flip=false"])
    root = tmp_path / "nyuv2_b2" / "dvc"
    from primkd.io import read_image

    prepared = root / "data" / "nyuv2_b2" / "prepared"
    names = (prepared / "test.txt").read_text().split()
    assert len(names) == 2 and read_image(prepared / "RGB" / f"{names[0]}.png").shape == (480, 640, 3)
    runs = summary["measured"]["runs"]
    assert set(runs) == {"teacher_rgb", "teacher_depth", "cmx", "primkd"}
    for r in runs.values():
        assert r["iterations"] == 1 and r["step_first_s"] > 0 and r["peak_memory_train_json"]["rss_mib"] > 100
        assert set(r["eval_s_per_image"]) >= {"last/single"}
    eval_json = json.loads((root / "results" / "nyuv2_b2" / "eval" / "primkd.json").read_text())
    assert eval_json["num_test_images"] == 2
    report = (root / "results" / "nyuv2_b2" / "REPORT.md").read_text()
    assert "Short schedule: these runs trained 1 epochs, the paper 500" in report
    assert "| Δ |" in report or "Δ" in report.split("## Table 2")[1]
    f = summary["flops"]
    assert 2.5 < f["teacher_train"] / f["teacher_forward"] < 3.0  # forward + 2× backward, less the input's gradient
    assert summary["projection"]["main"]["projected_wall_s"] > 0 and summary["projection"]["main"]["h100_floor_s"] > 0
    assert "PROJECTION" in capsys.readouterr().out
