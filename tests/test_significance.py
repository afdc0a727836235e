"""Seed statistics and the paired bootstrap of mIoU differences (primkd.report.significance)."""

import numpy as np
import pytest

from primkd.engine.counts import NO_SEED, Counts, counts_by_mode, counts_checkpoint, read_counts, write_counts
from primkd.io import DataError
from primkd.report.significance import (
    Comparison,
    direction_agreement,
    miou_from_counts,
    paired_bootstrap,
    seed_mious,
)


def _random_counts(rng: np.random.Generator, seeds: int, images: int, classes: int) -> Counts:
    union = rng.integers(50, 200, size=(seeds, images, classes))
    inter = (union * rng.uniform(0.2, 0.9, size=union.shape)).astype(np.int64)
    return Counts(inter, union)


def test_miou_sums_counts_over_images_and_skips_empty_classes():
    # image 0: class 0 IoU 1/2; image 1: class 0 IoU 9/10; class 2 never occurs (union 0) and is left out
    inter = np.array([[1, 2, 0], [9, 0, 0]])
    union = np.array([[2, 4, 0], [10, 0, 0]])
    counts = Counts(inter, union)
    # dataset level: class 0 = 10/12, class 1 = 2/4; not the mean of per-image mIoUs ((0.5+0.5)/2, 0.9 -> 0.7)
    assert seed_mious(counts)[0] == pytest.approx((10 / 12 + 2 / 4) / 2)
    assert np.isnan(miou_from_counts(np.zeros(3), np.zeros(3)))


def test_identical_runs_give_a_zero_interval():
    a = _random_counts(np.random.default_rng(0), seeds=3, images=30, classes=5)
    result = paired_bootstrap(a, a, num_boot=500)
    assert (result.delta, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert not result.significant
    assert direction_agreement(result, paper_delta=1.2) == "n.s."


def test_a_run_that_wins_on_every_image_is_significant():
    rng = np.random.default_rng(1)
    a = _random_counts(rng, seeds=3, images=25, classes=4)
    b = Counts(a.intersection + 1, a.union)  # one more correct pixel of every class on every image
    result = paired_bootstrap(a, b, num_boot=500)
    assert 0 < result.ci_low <= result.delta <= result.ci_high
    assert result.significant
    assert direction_agreement(result, paper_delta=1.3) == "agrees"
    assert direction_agreement(result, paper_delta=-0.4) == "disagrees"
    assert direction_agreement(result, paper_delta=None) == "no paper value"
    swapped = paired_bootstrap(b, a, num_boot=500)
    assert swapped.ci_high < 0 and swapped.delta == pytest.approx(-result.delta)


def test_point_estimate_is_the_full_data_difference_of_seed_means():
    rng = np.random.default_rng(2)
    a = _random_counts(rng, seeds=1, images=40, classes=6)  # a teacher: one seed
    b = _random_counts(rng, seeds=3, images=40, classes=6)
    by_hand_a = miou_from_counts(a.intersection[0].sum(0), a.union[0].sum(0))
    by_hand_b = [miou_from_counts(b.intersection[s].sum(0), b.union[s].sum(0)) for s in range(3)]
    for num_boot, seed in ((200, 0), (300, 7)):
        result = paired_bootstrap(a, b, num_boot=num_boot, seed=seed)
        assert result.delta == pytest.approx(np.mean(by_hand_b) - by_hand_a, abs=1e-12)
        assert result.miou_b == pytest.approx(np.mean(by_hand_b))
        assert result.std_b == pytest.approx(np.std(by_hand_b, ddof=1))
        assert result.miou_a == pytest.approx(by_hand_a) and result.std_a is None  # one seed has no spread


def test_interval_matches_normal_theory_for_a_mean_difference():
    # One class with the same union on every image: mIoU is the mean per-image IoU, so Δ is a mean of per-image
    # differences d_n and its 95% interval is close to mean(d) ± 1.96·sd(d)/√N.
    rng = np.random.default_rng(3)
    n, union = 400, 1000
    ia = rng.integers(300, 700, size=n)
    d = rng.normal(8, 40, size=n).round().astype(np.int64)
    a = Counts(ia[None, :, None], np.full((1, n, 1), union))
    b = Counts((ia + d)[None, :, None], np.full((1, n, 1), union))
    result = paired_bootstrap(a, b, num_boot=4000, seed=0)
    mean, se = d.mean() / union, d.std() / union / np.sqrt(n)
    assert result.delta == pytest.approx(mean)
    assert result.ci_low == pytest.approx(mean - 1.96 * se, abs=0.15 * se)
    assert result.ci_high == pytest.approx(mean + 1.96 * se, abs=0.15 * se)


def test_same_seed_same_interval_other_seed_other_interval():
    rng = np.random.default_rng(4)
    a, b = _random_counts(rng, 2, 30, 5), _random_counts(rng, 2, 30, 5)
    first, again, other = (paired_bootstrap(a, b, num_boot=300, seed=s) for s in (11, 11, 12))
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.delta == other.delta


def test_rejects_mismatched_runs_and_bad_counts():
    rng = np.random.default_rng(5)
    a = _random_counts(rng, 1, 10, 3)
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap(a, _random_counts(rng, 1, 11, 3))
    with pytest.raises(ValueError, match="different test images"):
        paired_bootstrap(Counts(a.intersection, a.union, images=tuple("abcdefghij")),
                         Counts(a.intersection, a.union, images=tuple("abcdefghik")))
    with pytest.raises(ValueError, match="intersection <= union"):
        Counts(np.array([[5]]), np.array([[4]]))


def test_significance_flag_follows_the_interval():
    common = dict(miou_a=0.5, std_a=0.0, miou_b=0.51, std_b=0.0, delta=0.01, confidence=0.95, num_images=10,
                  num_boot=100)
    assert Comparison(ci_low=0.001, ci_high=0.02, **common).significant
    assert not Comparison(ci_low=-0.001, ci_high=0.02, **common).significant
    assert Comparison(ci_low=-0.03, ci_high=-0.001, **common).significant


def test_counts_round_trip_per_mode_and_errors(tmp_path):
    rng = np.random.default_rng(6)
    c, m = _random_counts(rng, 3, 4, 2), _random_counts(rng, 3, 4, 2)
    images = ("test_0000", "test_0001", "test_0002", "test_0003")
    single, multi = Counts(c.intersection, c.union, (0, 1, 2), images), Counts(m.intersection, m.union, (0, 1, 2),
                                                                                images)
    path = tmp_path / "cmx_per_image.npz"
    write_counts(path, {"single": single, "multi_scale_flip": multi}, "last")
    back = read_counts(path)
    np.testing.assert_array_equal(back.intersection, c.intersection)
    np.testing.assert_array_equal(read_counts(path, "multi_scale_flip").union, m.union)
    assert back.seeds == (0, 1, 2) and back.images[-1] == "test_0003" and counts_checkpoint(path) == "last"
    write_counts(tmp_path / "single.npz", {"single": single}, "best")
    with pytest.raises(DataError, match=r"single\.npz: missing arrays \['multi_scale_flip_intersection', "
                                        r"'multi_scale_flip_union'\]"):
        read_counts(tmp_path / "single.npz", "multi_scale_flip")
    (tmp_path / "junk.npz").write_text("not numpy")
    with pytest.raises(DataError, match=r"junk\.npz: not a per-image counts file"):
        read_counts(tmp_path / "junk.npz")
    assert counts_checkpoint(tmp_path / "junk.npz") is None


def test_counts_by_mode_stacks_seeds_and_marks_a_run_trained_once():
    def block(value):
        return {"per_image": {"intersection": np.full((2, 3), value), "union": np.full((2, 3), 10),
                              "images": ["a", "b"]}}

    two = counts_by_mode({0: {"single": block(1), "multi_scale_flip": block(2)}, 1: {"single": block(3)}})
    assert list(two) == ["single"]  # seed 1 has no multi-scale counts: that mode is left out
    assert two["single"].intersection[:, 0, 0].tolist() == [1, 3] and two["single"].seeds == (0, 1)
    once = counts_by_mode({None: {"single": block(4)}})
    assert once["single"].seeds == (NO_SEED,) and once["single"].images == ("a", "b")
    other = block(1)
    other["per_image"]["images"] = ["a", "c"]
    with pytest.raises(ValueError, match="different test images"):
        counts_by_mode({0: {"single": block(1)}, 1: {"single": other}})
