"""Confusion matrix and segmentation metrics: a hand-computed example, sklearn parity, ignore rules, absent classes."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from primkd.engine.evaluate import mode_result
from primkd.engine.metrics import confusion_matrix, metrics_from_confusion, seed_spread


def test_three_class_example_by_hand():
    label = torch.tensor([[0, 0, 0], [1, 1, 2], [2, 255, 5]])
    pred = torch.tensor([[0, 0, 1], [1, 2, 2], [0, 2, 1]])
    # counted pairs (gt, pred): (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,0); 255 and 5 (>= K) are skipped
    # conf = [[2, 1, 0],      rows (gt)   = [3, 2, 2]
    #         [0, 1, 1],      cols (pred) = [3, 2, 2]
    #         [1, 0, 1]]      diag        = [2, 1, 1]
    conf = confusion_matrix(pred, label, num_classes=3)
    assert conf.dtype == torch.int64
    assert conf.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    m = metrics_from_confusion(conf)
    # IoU = diag / (row + col - diag) = [2/4, 1/3, 1/3]; mIoU = (1/2 + 2/3) / 3 = 7/18
    assert m["iou"] == pytest.approx([0.5, 1 / 3, 1 / 3])
    assert m["miou"] == pytest.approx(7 / 18)
    # acc = diag / row = [2/3, 1/2, 1/2]; mAcc = (2/3 + 1) / 3 = 5/9; pixel accuracy = 4 / 7
    assert m["acc"] == pytest.approx([2 / 3, 0.5, 0.5])
    assert m["macc"] == pytest.approx(5 / 9)
    assert m["pacc"] == pytest.approx(4 / 7)


def test_matches_sklearn_on_random_data_with_ignored_pixels():
    gen = torch.Generator().manual_seed(0)
    num_classes = 6
    label = torch.randint(0, num_classes, (3, 17, 23), generator=gen)
    pred = torch.randint(0, num_classes, (3, 17, 23), generator=gen)
    label[torch.rand(label.shape, generator=gen) < 0.2] = 255
    label[torch.rand(label.shape, generator=gen) < 0.05] = num_classes + 2  # out of range: ignored too
    valid = label < num_classes
    expected = sk_confusion_matrix(label[valid].numpy(), pred[valid].numpy(), labels=list(range(num_classes)))
    np.testing.assert_array_equal(confusion_matrix(pred, label, num_classes).numpy(), expected)


def test_labels_at_or_above_k_and_custom_ignore_index():
    label = torch.tensor([0, 1, 2, 3, 7])
    pred = torch.tensor([0, 1, 1, 0, 1])
    # K = 2: labels 2, 3, 7 are outside 0..1 and are not counted
    assert confusion_matrix(pred, label, num_classes=2).tolist() == [[1, 0], [0, 1]]
    # ignore_index inside the class range (0 here) is skipped as well
    assert confusion_matrix(pred, label, num_classes=4, ignore_index=0).tolist() == [
        [0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]


def test_absent_classes_are_nan_and_excluded():
    # K = 4; ground truth holds classes 0 and 1 only; class 2 is predicted once (a false positive); class 3 never
    label = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    m = metrics_from_confusion(confusion_matrix(pred, label, num_classes=4))
    # IoU: class 0 = 1 / (2 + 1 - 1) = 1/2, class 1 = 2/2 = 1, class 2 = 0 / (0 + 1 - 0) = 0, class 3 undefined
    assert m["iou"] == [0.5, 1.0, 0.0, None]
    assert m["miou"] == pytest.approx(0.5)  # (1/2 + 1 + 0) / 3
    # accuracy is undefined for both classes absent from the ground truth
    assert m["acc"] == [0.5, 1.0, None, None]
    assert m["macc"] == pytest.approx(0.75)
    assert m["pacc"] == pytest.approx(0.75)


def test_empty_matrix_gives_nan_means():
    m = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(m["miou"]) and math.isnan(m["pacc"]) and m["iou"] == [None, None, None]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"0\.\.2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="resize"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), num_classes=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    label = torch.randint(0, 5, (2, 32, 32), generator=gen)
    label[:, :3] = 255
    pred = torch.randint(0, 5, (2, 32, 32), generator=gen)
    conf = confusion_matrix(pred.cuda(), label.cuda(), num_classes=5)
    assert conf.is_cuda
    assert torch.equal(conf.cpu(), confusion_matrix(pred, label, num_classes=5))


def test_seed_spread_is_the_sample_std_and_has_none_for_one_seed():
    # 0.50, 0.52, 0.57: mean 0.53, squared deviations 0.0009 + 0.0001 + 0.0016 = 0.0026 over n − 1 = 2
    mean, std, n = seed_spread([0.50, 0.52, 0.57])
    assert (mean, n) == (pytest.approx(0.53), 3) and std == pytest.approx(math.sqrt(0.0013))
    assert seed_spread([0.4, None, float("nan")]) == (0.4, None, 1)
    assert seed_spread([]) is None


def test_evaluation_json_reports_the_same_spread_as_the_tables():
    # One definition of ± over seeds: the evaluation JSON once wrote the population std (here 0.0163) while compare
    # and REPORT.md printed the sample std (0.02) of the same seeds.
    per_seed = {s: ({"miou": m, "macc": 0.6, "pacc": 0.7, "iou": [m, None]}, 3)
                for s, m in ((0, 0.50), (1, 0.52), (2, 0.54))}
    out = mode_result(per_seed, ["a", "b"], [1.0], False)
    assert out.spread("miou") == (pytest.approx(0.52), pytest.approx(0.02), 3)
    assert out.spread("macc")[1] == pytest.approx(0.0) and out.iou == {"a": pytest.approx(0.52), "b": None}
    assert out.to_json()["miou_pct_std"] == pytest.approx(2.0)
    teacher = mode_result({None: ({"miou": 0.5, "macc": 0.6, "pacc": 0.7, "iou": [0.5, 0.5]}, 3)}, ["a", "b"], [1.0],
                          False)
    assert teacher.spread("miou") == (0.5, None, 1) and teacher.seeds == []
    assert teacher.to_json()["miou_pct_std"] is None
