"""Tests of primkd.data.dataset: augmentation, normalisation, the epoch sampler and label checks."""


import numpy as np
import pytest
import torch

from primkd.data.check import check_dataset
from primkd.data.dataset import Augment, EpochSampler, RGBDDataset, augment, normalize
from primkd.data.layout import IGNORE_INDEX, write_split
from primkd.io import DataError, write_png

from fake_data import make_dataset


def test_augment_keeps_images_and_labels_aligned():
    rng = np.random.default_rng(3)
    H, W = 20, 30
    label = np.tile(np.arange(W, dtype=np.uint8), (H, 1))  # label = column index
    image = np.repeat(label[..., None], 3, axis=2)  # image pixel = its label
    aug = Augment(crop=(24, 36), scales=[1.0], flip=1.0)
    (out,), out_label = augment([image], label, aug, rng)
    assert out.shape == (3, 24, 36) and out_label.shape == (24, 36)
    padded = out_label == IGNORE_INDEX  # padding around the 20x30 image
    assert padded.sum() == 24 * 36 - H * W
    back = out[0] * 0.229 + 0.485  # undo the red channel's normalisation: pixel / 255
    assert torch.allclose(back[torch.from_numpy(~padded)] * 255, torch.from_numpy(out_label[~padded]).float(),
                          atol=1e-3)
    assert torch.all(out[:, torch.from_numpy(padded)] == 0)
    row = out_label[2]  # 2 rows of padding above (4 // 2), so row 2 holds image pixels
    assert np.all(np.diff(row[row != IGNORE_INDEX].astype(int)) == -1)  # flipped: columns run backwards


def test_augment_pads_a_3x4_image_centred_with_the_mean_colour():
    # A hand-made 3x4 image in a 6x7 crop: 3 rows of padding (1 above, 2 below) and 3 columns (1 left, 2 right).
    # The official code pads after normalisation with 0, i.e. the ImageNet mean colour, for RGB and HHA alike.
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [124, 116, 104], [10, 20, 30]],
                    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [124, 116, 104]],
                    [[50, 60, 70], [80, 90, 100], [200, 210, 220], [1, 2, 3]]], dtype=np.uint8)
    hha = rgb[::-1].copy()
    label = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], dtype=np.uint8)
    aug = Augment(crop=(6, 7), scales=[1.0], flip=0.0)
    (out_rgb, out_hha), out_label = augment([rgb, hha], label, aug, np.random.default_rng(0))
    expected_label = np.full((6, 7), 255, np.uint8)
    expected_label[1:4, 1:5] = label
    assert np.array_equal(out_label, expected_label)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for out, image in ((out_rgb, rgb), (out_hha, hha)):
        expected = np.zeros((3, 6, 7), np.float32)
        expected[:, 1:4, 1:5] = ((image / 255.0 - mean) / std).transpose(2, 0, 1)
        assert np.allclose(out.numpy(), expected, atol=1e-6)
    # Pixel (0, 0) is black: (0 - 0.485) / 0.229 = -2.1179 in red, the old uint8-zero padding value.
    assert out_rgb[0, 1, 1].item() == pytest.approx(-2.117904, abs=1e-5)
    assert out_rgb[0, 0, 0].item() == 0.0
    # BGR input (the official cv2 quirk): channels reversed before the RGB statistics.
    (bgr,), _ = augment([rgb], label, aug, np.random.default_rng(0), bgr=True)
    assert bgr[0, 2, 1].item() == pytest.approx((0 / 255 - 0.485) / 0.229)  # the pure red pixel's blue is 0
    assert bgr[2, 2, 1].item() == pytest.approx((1 - 0.406) / 0.225)


def test_augment_crops_larger_axes_and_pads_smaller_ones():
    # 4x10 image into a 6x4 crop: rows padded (1 above, 1 below), columns cropped at a random offset.
    label = np.tile(np.arange(10, dtype=np.uint8), (4, 1))
    image = np.repeat(label[..., None], 3, axis=2)
    offsets = set()
    for seed in range(20):
        _, lab = augment([image], label, Augment(crop=(6, 4), scales=[1.0], flip=0.0),
                              np.random.default_rng(seed))
        assert np.all(lab[0] == 255) and np.all(lab[5] == 255) and np.all(lab[1:5] != 255)
        offsets.add(int(lab[1, 0]))
        assert np.array_equal(lab[1], np.arange(lab[1, 0], lab[1, 0] + 4))
    assert offsets <= set(range(7)) and len(offsets) > 3


def test_normalize_uses_imagenet_statistics():
    x = normalize(np.full((2, 2, 3), 255, np.uint8))
    assert x.shape == (3, 2, 2)
    assert torch.allclose(x[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))


def test_epoch_sampler_is_deterministic_and_shards_ranks():
    s = EpochSampler(10, seed=1)
    s.set_epoch(2)
    first = list(s)
    assert first == list(s) and sorted(i for i, _ in first) == list(range(10))
    s.set_epoch(3)
    assert [i for i, _ in s] != [i for i, _ in first]
    ranks = [EpochSampler(10, seed=1, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    union = [i for r in ranks for i, _ in r]
    assert len(union) == 12 and set(union) == set(range(10))
    s.set_epoch(2, start=4)
    assert list(s) == first[4:]


def test_dataset_rejects_labels_outside_the_classes(tmp_path):
    root = make_dataset(tmp_path, classes=3)
    bad = np.full((32, 48), 7, np.uint8)
    write_png(root / "Label" / "tr0.png", bad)
    ds = RGBDDataset(root, "train", root / "hha")
    with pytest.raises(DataError, match=r"tr0\.png: label values \[7\] are outside 0\.\.2"):
        ds[0]


def test_repeated_split_entries_and_shared_images_are_refused_naming_file_and_names(tmp_path):
    """A repeated name would weigh twice in training or in the test mIoU, a shared one scores training images:
    loading either split refuses them in one line (check-data lists them with the other problems)."""
    root = make_dataset(tmp_path / "data", n_train=3, n_test=2)
    write_split(root, "train", ["tr0", "tr1", "tr0", "tr2"])
    message = f"{root}/train.txt: names listed more than once: ['tr0']; keep one line per image"
    for split in ("train", "test"):
        with pytest.raises(DataError) as info:
            RGBDDataset(root, split)
        assert str(info.value) == message
    assert message in check_dataset(root, progress=False)
    write_split(root, "train", ["tr0", "tr1", "tr2", "te1"])
    shared = (f"{root}: 1 images are in both train.txt and test.txt (e.g. ['te1']); the test split must be disjoint "
              f"from the training split: remove them from one of the lists")
    for split in ("train", "test"):
        with pytest.raises(DataError) as info:
            RGBDDataset(root, split)
        assert str(info.value) == shared
    assert shared in check_dataset(root, progress=False)
    write_split(root, "train", ["tr0", "tr1", "tr2"])
    assert RGBDDataset(root, "train").names == ["tr0", "tr1", "tr2"]


def test_a_link_out_of_the_dataset_is_refused_one_to_its_folder_source_is_kept(tmp_path):
    """An RGB/ entry linked to a file outside the dataset (and outside the folder meta.json says it was prepared
    from) reads what no stage tracks: refused in one line naming the link; a link into the recorded source is fine."""
    import json
    import os

    root = make_dataset(tmp_path / "data", n_train=2, n_test=1)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    rgb = root / "RGB" / "tr1.png"
    os.replace(rgb, outside / "tr1.png")
    rgb.symlink_to(outside / "tr1.png")
    with pytest.raises(DataError) as info:
        RGBDDataset(root, "train")
    assert str(info.value) == (f"{rgb}: a link to {outside / 'tr1.png'}, outside the dataset and the folder it was "
                               f"prepared from; copy the file into the dataset, or prepare it again from a folder "
                               f"that holds it")
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "source": str(outside)}))  # as data/folder.py records it
    assert RGBDDataset(root, "train").names == ["tr0", "tr1"]
