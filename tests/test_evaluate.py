"""Multi-scale + flip scoring as the official evaluator: sums worked out by hand on tiny stand-in models."""

import math
import re

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from primkd.engine.evaluate import (
    MIN_INPUT_SIZE,
    evaluate,
    per_image_counts,
    predict_scores,
    scale_scores,
    sliding_windows,
)


class Echo(nn.Module):
    """logits = the first input (+ a ramp a·column/width over the network input): scores are easy to compute by hand.

    Records the size of every network input it sees."""

    def __init__(self, ramp: float = 0.0, classes: int | None = None):
        super().__init__()
        self.ramp, self.classes, self.seen = ramp, classes, []

    def forward(self, *xs):
        x = xs[0]
        self.seen.append((tuple(x.shape[-2:]), x.clone()))
        W = x.shape[-1]
        logits = x if self.classes is None else x.new_zeros((x.shape[0], self.classes, *x.shape[-2:]))
        return {"logits": logits + self.ramp * torch.arange(W, dtype=x.dtype) / W}


def test_flip_adds_logits_before_the_exponential():
    # z(x) = x + a·col/W; the flipped pass flipped back: x + a·(W-1-col)/W. Official: exp(z + z_flipped) =
    # exp(2x + a(W-1)/W) everywhere, a column-free value; exp(z) + exp(z_flipped) would depend on the column.
    x = torch.tensor([[[[0.1, -0.2, 0.3, 0.0], [0.5, 0.4, -0.1, 0.2]]]])  # (1, 1, 2, 4)
    got = predict_scores(Echo(ramp=1.0), [x], scales=[1.0], flip=True, crop=None)
    # The 2x4 input is padded to 32x32 (MIN_INPUT_SIZE) inside; the ramp runs over those 32 columns.
    W = MIN_INPUT_SIZE
    expected = torch.exp(2 * x.double() + (W - 1) / W)
    assert torch.allclose(got, expected, rtol=1e-6)


def test_small_scales_are_centred_and_padded_to_the_crop_then_summed():
    # Constant image c at scales 0.5 and 1 with a 48x64 crop: at 0.5 the 24x32 image sits in the middle of a 48x64
    # zero canvas (12 rows / 16 columns of padding each side), the padding is cut from the scores, each scale adds
    # exp(c) (bilinear resizing keeps constants), total 2·exp(c).
    c = 0.7
    x = torch.full((1, 1, 48, 64), c)
    model = Echo()
    got = predict_scores(model, [x], scales=[0.5, 1.0], flip=False, crop=(48, 64))
    assert torch.allclose(got, torch.full_like(got, 2 * math.exp(c)), rtol=1e-6)
    (size_half, seen_half), (size_one, _) = model.seen
    assert size_half == size_one == (48, 64)
    inside = torch.zeros(48, 64, dtype=torch.bool)
    inside[12:36, 16:48] = True
    assert torch.all(seen_half[0, 0][inside] == c) and torch.all(seen_half[0, 0][~inside] == 0)


def test_scale_half_on_a_48x64_image_runs_the_real_network():
    # The guard: 24x32 at scale 0.5 used to reach MiT's stage-1 reduction conv with a 6x8 map and crash.
    from primkd.models import build_student

    net = build_student("mit_tiny", num_classes=3, decoder_embed_dim=16).eval()
    x = torch.randn(1, 3, 48, 64)
    for crop in (None, (48, 64)):
        scores = predict_scores(net, [x, x], scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True, crop=crop)
        assert scores.shape == (1, 3, 48, 64) and torch.isfinite(scores).all() and (scores > 0).all()


def test_sliding_windows_by_hand():
    # 6x8 image, crop 4x6, stride 2/3 -> (ceil(8/3), ceil(4)) = (3, 4); 2 x 2 windows.
    corrected = sliding_windows((6, 8), (4, 6), 2 / 3, "corrected")
    assert [(r.start, r.stop, c.start, c.stop) for r, c in corrected] == [(0, 4, 0, 6), (0, 4, 2, 8), (2, 6, 0, 6),
                                                                           (2, 6, 2, 8)]
    # The released arithmetic swaps the axes: 6-row x 4-column windows; rows step by 4, columns by 3.
    official = sliding_windows((6, 8), (4, 6), 2 / 3, "official")
    assert [(r.start, r.stop, c.start, c.stop) for r, c in official] == [(0, 6, 0, 4), (0, 6, 3, 7), (0, 6, 0, 4),
                                                                         (0, 6, 3, 7)]
    # NYU at scale 1.25 (600x800, crop 480x640): the row start falls before 0 and Python reads rows 560:600.
    rows = {(r.start, r.stop) for r, _ in sliding_windows((600, 800), (480, 640), 2 / 3, "official")}
    assert rows == {(-40, 600)} and len(range(600)[slice(-40, 600)]) == 40
    with pytest.raises(ValueError, match=r"eval\.windows"):
        sliding_windows((6, 8), (4, 6), 2 / 3, "other")


@pytest.mark.parametrize("mode, rows, cols", [
    # corrected: coverage counts rows (1, 1, 2, 2, 1, 1) x columns (1, 1, 2, 2, 2, 2, 1, 1)
    ("corrected", [1, 1, 2, 2, 1, 1], [1, 1, 2, 2, 2, 2, 1, 1]),
    # official: both row windows are rows 0:6 (count 2); columns 0:4 and 3:7, column 7 never scored
    ("official", [2, 2, 2, 2, 2, 2], [1, 1, 1, 2, 1, 1, 1, 0]),
])
def test_overlapping_windows_are_summed_without_normalisation(mode, rows, cols):
    # Zero logits: every window scores exp(0) = 1 per pixel, so the scale's score is the number of windows covering
    # each pixel.
    x = torch.zeros(1, 1, 6, 8)
    got = scale_scores(Echo(classes=2), [x], crop=(4, 6), flip=False, windows=mode)
    expected = torch.tensor(rows, dtype=torch.float32)[:, None] * torch.tensor(cols, dtype=torch.float32)[None, :]
    assert torch.equal(got[0, 0], expected) and torch.equal(got[0, 1], expected)


def test_multi_scale_total_by_hand_with_sliding_above_the_crop():
    # 4x6 image of zeros, crop 4x6 (corrected windows), scales 1 and 1.5: at 1 one pass (score 1 everywhere); at
    # 1.5 (6x9, stride (3, 4)) windows rows {0:4, 2:6} x columns {0:6, 3:9}; the 6x9 coverage map resized back to 4x6.
    x = torch.zeros(1, 1, 4, 6)
    got = predict_scores(Echo(classes=1), [x], scales=[1.0, 1.5], crop=(4, 6), windows="corrected")
    cover = (torch.tensor([1, 1, 2, 2, 1, 1.0])[:, None] * torch.tensor([1, 1, 1, 2, 2, 2, 1, 1, 1.0])[None, :])
    resized = torch.nn.functional.interpolate(cover[None, None], size=(4, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(got, 1 + resized.double(), atol=1e-6)


def test_per_image_counts_by_hand():
    # image 0: labels [0 0 1 255], prediction [0 1 1 0]: class 0 hits 1, union 2 (one missed); class 1 hits 1, union
    # 2 (one false alarm); the ignored pixel counts nowhere. image 1: all class 2 predicted 0: IoU 0 for both.
    label = torch.tensor([[[0, 0], [1, 255]], [[2, 2], [2, 2]]])
    pred = torch.tensor([[[0, 1], [1, 0]], [[0, 0], [0, 0]]])
    inter, union = per_image_counts(pred, label, 3)
    assert inter.tolist() == [[1, 1, 0], [0, 0, 0]]
    assert union.tolist() == [[2, 2, 0], [4, 0, 4]]


class _Named(torch.utils.data.Dataset):
    """Four 2×2 'images' whose value is the class the Echo model predicts; labels of class 0 everywhere."""

    names = ("w", "x", "y", "z")

    def __len__(self):
        return 4

    def __getitem__(self, i):
        x = torch.zeros(2, 2, 2)
        x[i % 2] = 1.0  # two channels = two classes: w, y predict class 0, x, z class 1
        return {"rgb": x, "label": torch.zeros(2, 2, dtype=torch.int64), "name": self.names[i]}


def test_evaluate_per_image_rows_follow_the_dataset_names_and_sum_to_the_confusion():
    # Images in the order z, x, w and y never seen (as a rank's shard): rows land at the images' own positions.
    loader = torch.utils.data.DataLoader(_Named(), batch_size=1, sampler=[3, 1, 0])
    m = evaluate(Echo(), loader, 2, ["rgb"], torch.device("cpu"), progress=False, per_image=True)
    got = m["per_image"]
    assert got["images"] == ["w", "x", "y", "z"]
    assert got["intersection"].tolist() == [[4, 0], [0, 0], [0, 0], [0, 0]]  # y was not evaluated: zero row
    assert got["union"].tolist() == [[4, 0], [4, 4], [0, 0], [4, 4]]
    assert got["intersection"].sum(0).tolist() == m["confusion"].diagonal().tolist()


def test_evaluate_command_writes_both_modes_and_both_checkpoints(tmp_path):
    from primkd.cli import main
    from primkd.config import load_params
    from primkd.engine.train import Run, train
    from primkd.io import read_json

    from fake_data import REPO, make_dataset

    torch.set_num_threads(1)
    root = make_dataset(tmp_path / "data")
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["train"].update(epochs=2, batch_size=2, crop=[32, 48])
    summary = train(cfg, Run("teacher_rgb", "teacher", ["rgb"]), root, root / "hha", tmp_path / "t", progress=False)
    out = tmp_path / "eval.json"
    main(["evaluate", "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--model",
          str(tmp_path / "t" / "model.pt"), "--data", str(root), "--hha", str(root / "hha"), "--out", str(out),
          "--no-progress"])
    m = read_json(out)
    assert set(m) == {"model", "split", "num_test_images", "last", "best", "per_image"} and m["model"] == "teacher_rgb"
    assert m["split"] == "test"
    assert m["last"]["single"]["scales"] == [1.0] and m["last"]["single"]["flip"] is False
    # Per-image counts of the last epoch, both modes: summed over images they give the JSON's mIoU (in %).
    import numpy as np

    from primkd.data.layout import read_split
    from primkd.engine.counts import counts_checkpoint, read_counts
    from primkd.report.significance import seed_mious

    assert m["per_image"] == {"file": "eval_per_image.npz", "checkpoint": "last",
                              "modes": ["single", "multi_scale_flip"]}
    counts_file = tmp_path / "eval_per_image.npz"
    for mode, block in m["last"].items():
        counts = read_counts(counts_file, mode)
        assert counts.seeds == (-1,) and counts.images == tuple(read_split(root, "test"))
        assert len(counts.images) == m["num_test_images"]
        assert 100 * seed_mious(counts)[0] == pytest.approx(block["miou_pct"], abs=1e-10)
    assert counts_checkpoint(counts_file) == "last"
    assert np.load(counts_file)["single_union"].dtype == np.uint32
    multi = m["last"]["multi_scale_flip"]
    assert multi["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and multi["flip"] is True
    assert 0 <= multi["miou_pct"] <= 100 and multi["per_seed"][0]["epoch"] == 2
    best = m["best"]
    assert best["single"]["per_seed"][0]["epoch"] == summary["best_test_epoch"]
    assert list(best) == ["single"]  # eval.checkpoint: last
    # With eval.checkpoint: best the best epoch is also tested multi-scale (what the tables then show).
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["presets"]["smoke"]["eval"]["checkpoint"] = "best"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    main(["evaluate", "--params", str(tmp_path / "params.yaml"), "--preset", "smoke", "--model",
          str(tmp_path / "t" / "model.pt"), "--data", str(root), "--hha", str(root / "hha"), "--out", str(out),
          "--no-progress"])
    best = read_json(out)["best"]
    assert best["multi_scale_flip"]["flip"] is True
    # ... and the per-image counts are the best epoch's, the model the tables then report.
    assert read_json(out)["per_image"]["checkpoint"] == "best" and counts_checkpoint(counts_file) == "best"
    assert 100 * seed_mious(read_counts(counts_file))[0] == pytest.approx(best["single"]["miou_pct"], abs=1e-10)
    if summary["best_test_epoch"] == 2:  # the same weights: the same numbers
        assert best["single"]["miou_pct"] == m["last"]["single"]["miou_pct"]
        assert best["multi_scale_flip"]["miou_pct"] == multi["miou_pct"]


def _numbers(tree, prefix: str = "") -> dict:
    """Every number of a JSON tree by its dotted path (as ``dvc metrics show`` names them)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}{i}.").items()}
    return {prefix[:-1]: tree}


def test_evaluation_json_of_hand_made_confusions_in_both_modes_and_back(tmp_path):
    from primkd.config import EvalConfig
    from primkd.engine.evaluate import evaluation_report
    from primkd.engine.metrics import metrics_from_confusion
    from primkd.engine.results import Evaluation
    from primkd.io import DataError, read_json

    # Two seeds, classes a and b (rows ground truth). Single scale: seed 0 [[3, 1], [0, 4]]: IoU 3/4, 4/5, accuracy
    # 3/4, 1, pixels 7/8; seed 1 [[4, 0], [2, 2]]: IoU 4/6, 2/4, accuracy 1, 1/2, pixels 6/8. Multi-scale + flip:
    # seed 0 all right (100%), seed 1 [[3, 1], [1, 3]]: IoU 3/5 both, accuracy 3/4 both, pixels 6/8.
    conf = {"single": ([[3, 1], [0, 4]], [[4, 0], [2, 2]]), "multi_scale_flip": ([[4, 0], [0, 4]], [[3, 1], [1, 3]])}
    last = {seed: ({mode: metrics_from_confusion(np.array(c[seed])) for mode, c in conf.items()}, 10)
            for seed in (0, 1)}
    best = {0: ({"single": metrics_from_confusion(np.array([[4, 0], [0, 4]]))}, 7),
            1: ({"single": metrics_from_confusion(np.array([[3, 1], [1, 3]]))}, 9)}
    ev = EvalConfig(scales=(0.5, 1.0), flip=True, windows="official", checkpoint="last", batch_size=1, released={})
    evaluation = Evaluation("primkd", 8, evaluation_report({"last": last, "best": best}, ["a", "b"], ev),
                            {"file": "primkd_per_image.npz", "checkpoint": "last", "modes": ["single"]})
    evaluation.write(tmp_path / "primkd.json")
    raw = read_json(tmp_path / "primkd.json")
    single, multi = raw["last"]["single"], raw["last"]["multi_scale_flip"]
    miou = (31 / 40, 7 / 12)  # (3/4 + 4/5) / 2, (4/6 + 2/4) / 2
    assert single["miou_pct"] == pytest.approx(50 * (miou[0] + miou[1]))
    assert single["miou_pct_std"] == pytest.approx(100 * abs(miou[0] - miou[1]) / math.sqrt(2))  # ddof 1
    assert single["macc_pct"] == pytest.approx(81.25) and single["pacc_pct"] == pytest.approx(81.25)
    assert single["iou_pct"] == {"a": pytest.approx(50 * (3 / 4 + 4 / 6)), "b": pytest.approx(65.0)}
    assert single["per_seed"] == [{"seed": 0, "epoch": 10, "miou_pct": pytest.approx(77.5), "macc_pct": 87.5,
                                   "pacc_pct": 87.5},
                                  {"seed": 1, "epoch": 10, "miou_pct": pytest.approx(700 / 12), "macc_pct": 75.0,
                                   "pacc_pct": 75.0}]
    assert (single["scales"], single["flip"], multi["scales"], multi["flip"]) == ([1.0], False, [0.5, 1.0], True)
    assert multi["miou_pct"] == pytest.approx(80.0) and multi["macc_pct"] == pytest.approx(87.5)
    assert multi["miou_pct_std"] == pytest.approx(40 / math.sqrt(2)) and multi["iou_pct"]["b"] == pytest.approx(80)
    assert list(raw["best"]) == ["single"] and raw["best"]["single"]["miou_pct"] == pytest.approx(80.0)
    assert [e["epoch"] for e in raw["best"]["single"]["per_seed"]] == [7, 9]
    # Read back: the same results (fractions again), and written again: the same file.
    back = Evaluation.read(tmp_path / "primkd.json")
    assert back.model == "primkd" and back.num_images == 8 and back.per_image == raw["per_image"]
    assert back.split == raw["split"] == "test" and raw["num_test_images"] == 8
    spread = back.get("last", "multi_scale_flip").spread("miou")
    assert spread == (pytest.approx(0.8), pytest.approx(0.4 / math.sqrt(2)), 2)
    assert back.get("best", "multi_scale_flip") is None and back.get("best").seeds == [0, 1]
    assert back.get("last").per_seed[1].miou == pytest.approx(7 / 12) and back.get("last").per_seed[1].epoch == 10
    again, written = _numbers(back.to_json()), _numbers(raw)
    floats = {k for k, v in written.items() if isinstance(v, float)}
    assert {k: again[k] for k in floats} == pytest.approx({k: written[k] for k in floats}, rel=1e-14)
    assert again.keys() == written.keys() and all(again[k] == v for k, v in written.items() if k not in floats)
    raw["last"]["single"]["per_seed"][0]["macc_pct"] = "87.5"
    with pytest.raises(DataError, match=r"x\.json: macc_pct is '87\.5', not a number; re-run its evaluate stage"):
        Evaluation.from_json(raw, "x.json")


def test_dvc_metrics_show_names_the_headline_by_checkpoint_mode_and_unit(tmp_path):
    import os
    import subprocess
    import sys

    from fake_data import fake_mode, write_evaluation

    write_evaluation(tmp_path / "primkd.json", {"single": fake_mode({0: 0.50, 1: 0.52}),
                                                "multi_scale_flip": fake_mode({0: 0.5}, scales=(0.5, 1.0), flip=True)})
    (tmp_path / "dvc.yaml").write_text("metrics:\n- primkd.json\n")
    dvc = [os.path.join(os.path.dirname(sys.executable), "dvc")]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shown = subprocess.run([*dvc, "metrics", "show"], cwd=tmp_path, check=True, capture_output=True, text=True)
    header, row = (line.split() for line in shown.stdout.splitlines()[:2])
    values = dict(zip(header, row))
    assert values["last.single.miou_pct"] == "51.0" and values["last.single.miou_pct_std"] == "1.41421"
    assert values["last.multi_scale_flip.miou_pct"] == "50.0" and values["model"] == "x"


def test_evaluate_modes_logs_each_modes_time_per_image_and_reuses_an_equal_mode(caplog):
    """The rehearsal's evaluation time per image (bench/rehearse.py) is read from these lines: one per mode run, none
    for a multi-scale mode equal to the single one (not rerun)."""
    from primkd.config import EvalConfig
    from primkd.engine.evaluate import evaluate_modes

    loader = torch.utils.data.DataLoader(_Named(), batch_size=2)
    base = {"scales": [1.0], "flip": False, "windows": "official", "checkpoint": "last", "batch_size": 2,
            "released": {}}
    for scales, flip, logged in (([1.0], False, ["single"]), ([1.0, 1.5], True, ["single", "multi_scale_flip"])):
        caplog.clear()
        with caplog.at_level("INFO", logger="primkd.engine.evaluate"):
            modes = evaluate_modes(Echo(), loader, 2, ["rgb"], torch.device("cpu"), EvalConfig(**dict(
                base, scales=scales, flip=flip)), None, progress=False)
        lines = [r.getMessage() for r in caplog.records]
        assert [line.split(" mode:")[0] for line in lines] == logged
        assert all(re.fullmatch(r"\w+ mode: 4 test images in [\d.]+ s \([\d.]+ s per image\)", x) for x in lines)
        assert (modes["multi_scale_flip"] is modes["single"]) is (len(logged) == 1)


def _constant_student(path, predicted: int) -> None:
    """A CMX model file whose every pixel is class ``predicted``: zero classifier weights, bias 5 for that class."""
    from primkd.models.io import save_model
    from primkd.models.segmentors import build_student

    net = build_student("mit_tiny", 3, decoder_embed_dim=16)
    with torch.no_grad():
        net.decoder.classifier.weight.zero_()
        net.decoder.classifier.bias.copy_(torch.tensor([5.0 if c == predicted else 0.0 for c in range(3)]))
    arch = {"kind": "student", "variant": "mit_tiny", "num_classes": 3, "decoder_embed_dim": 16,
            "drop_path_rate": 0.1, "decoder_bn_eps": 1e-3}
    save_model(path, net, arch, ["rgb", "modal"], {"run": "cmx", "epoch": 3})


def _split_dataset(root):
    """4×4 images, classes 0-2. Train: tr0 all class 1; tr1 rows 0-1 class 1 (pixel (0, 0) ignored), rows 2-3 class
    0: 23 pixels of class 1, 8 of class 0. Test: te0 row 0 class 1, rows 1-3 class 2: 4 of class 1, 12 of class 2."""
    from primkd.data.layout import IGNORE_INDEX, write_split
    from primkd.io import write_json, write_png

    tr1 = np.array([[IGNORE_INDEX, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    labels = {"tr0": np.ones((4, 4), np.uint8), "tr1": tr1, "te0": np.array([[1] * 4] + [[2] * 4] * 3, np.uint8)}
    rng = np.random.default_rng(0)
    for name, label in labels.items():
        write_png(root / "RGB" / f"{name}.png", rng.integers(0, 255, (4, 4, 3), dtype=np.uint8))
        write_png(root / "Depth" / f"{name}.png", rng.integers(500, 4000, (4, 4)).astype(np.uint16))
        write_png(root / "hha" / f"{name}.png", rng.integers(0, 255, (4, 4, 3), dtype=np.uint8))
        write_png(root / "Label" / f"{name}.png", label)
    write_split(root, "train", ["tr0", "tr1"])
    write_split(root, "test", ["te0"])
    write_json(root / "meta.json", {"name": "by hand", "classes": ["c0", "c1", "c2"],
                                    "intrinsics": {"fx": 5.0, "fy": 5.0, "cx": 2.5, "cy": 2.5}})
    return root


def test_train_split_evaluation_by_hand(tmp_path):
    """Seed 0 predicts class 1 everywhere, seed 1 class 0. Train split: seed 0 IoU(1) 23/31, IoU(0) 0 (class 2 is
    neither present nor predicted: left out), mIoU 23/62; seed 1 IoU(0) 8/31, IoU(1) 0, mIoU 8/62; mean 25 %. Test
    split: seed 0 IoU(1) 4/16, IoU(2) 0, mIoU 1/8; seed 1 predicts an absent class: 0; mean 6.25 %."""
    from primkd.cli import main
    from primkd.engine.results import Evaluation
    from primkd.io import read_json

    from fake_data import REPO

    torch.set_num_threads(1)
    root = _split_dataset(tmp_path / "data")
    for seed, predicted in ((0, 1), (1, 0)):
        _constant_student(tmp_path / "cmx" / f"seed{seed}" / "model.pt", predicted)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["evaluate", "--params", str(tmp_path / "params.yaml"), "--preset", "smoke", "--model",
              str(tmp_path / "cmx"), "--data", str(root), "--hha", str(root / "hha"), "--no-progress"]
    # The pipeline's evaluate stage: the test split in both modes, the train split single-scale beside it.
    main([*common, "--out", str(tmp_path / "cmx.json"), "--train-out", str(tmp_path / "cmx.train.json")])
    test, train = read_json(tmp_path / "cmx.json"), read_json(tmp_path / "cmx.train.json")
    assert (test["split"], test["num_test_images"], train["split"], train["num_train_images"]) == ("test", 1, "train",
                                                                                                   2)
    assert [e["miou_pct"] for e in test["last"]["single"]["per_seed"]] == pytest.approx([12.5, 0.0])
    assert test["last"]["single"]["miou_pct"] == pytest.approx(6.25)
    assert set(train) == {"model", "split", "num_train_images", "last", "per_image"} and list(train["last"]) == [
        "single"] and train["per_image"] is None
    block = train["last"]["single"]
    assert [e["miou_pct"] for e in block["per_seed"]] == pytest.approx([2300 / 62, 800 / 62])
    assert [(e["seed"], e["epoch"]) for e in block["per_seed"]] == [(0, 3), (1, 3)]
    assert block["miou_pct"] == pytest.approx(25.0) and block["miou_pct_std"] == pytest.approx(1500 / 62 / 2 ** 0.5)
    # pixel accuracy (23/31 + 8/31) / 2; per class, mean over seeds: c0 (0 + 8/31) / 2, c1 (23/31 + 0) / 2
    assert block["pacc_pct"] == pytest.approx(50.0) and block["iou_pct"] == {
        "c0": pytest.approx(400 / 31), "c1": pytest.approx(1150 / 31), "c2": None}
    back = Evaluation.read(tmp_path / "cmx.train.json")
    assert back.split == "train" and back.num_images == 2 and back.get().spread("miou")[0] == pytest.approx(0.25)
    # `--split train` alone: that split in both modes, with its per-image counts (constant predictions: the same).
    main([*common, "--split", "train", "--out", str(tmp_path / "on_train.json")])
    alone = read_json(tmp_path / "on_train.json")
    assert alone["split"] == "train" and alone["num_train_images"] == 2
    for mode in ("single", "multi_scale_flip"):
        assert alone["last"][mode]["miou_pct"] == pytest.approx(25.0), mode
    from primkd.engine.counts import read_counts

    assert read_counts(tmp_path / "on_train_per_image.npz", "single").images == ("tr0", "tr1")
