"""Linear CKA: identities, invariances, the HSIC Gram-matrix form, and minibatch accumulation."""

import numpy as np
import pytest
import torch

from primkd.analysis.cka import CKAAccumulator, linear_cka


def random_pair(n=60, d1=5, d2=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(d1, d2, generator=gen, dtype=torch.float64) + torch.randn(n, d2, generator=gen,
                                                                                 dtype=torch.float64)
    return x, y


def cka_hsic_gram(x: np.ndarray, y: np.ndarray) -> float:
    """Gram-matrix form: HSIC(K, L) = tr(K H L H) with K = XXᵀ, L = YYᵀ, H = I − 11ᵀ/n (the 1/(n−1)² cancels)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_self_similarity_is_one():
    x, _ = random_pair()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_equals_hsic_gram_form():
    x, y = random_pair()
    expected = cka_hsic_gram(x.numpy(), y.numpy())
    assert 0.05 < expected < 0.95  # a non-trivial value, so the comparison can tell formulas apart
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_orthogonal_and_isotropic_scaling_invariance():
    x, y = random_pair()
    q, _ = torch.linalg.qr(torch.randn(7, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    reference = linear_cka(x, y)
    assert linear_cka(x * 3.5, y @ q) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x + 10.0, y) == pytest.approx(reference, rel=1e-8)  # centring removes a constant offset
    # not invariant to a non-isotropic scaling (so the checks above are meaningful)
    assert abs(linear_cka(x * torch.tensor([1.0, 1.0, 1.0, 1.0, 20.0], dtype=torch.float64), y) - reference) > 1e-3


def test_values_in_unit_interval():
    for seed in range(5):
        x, y = random_pair(n=40, d1=3 + seed, d2=4, seed=seed)
        independent = torch.randn(40, 6, generator=torch.Generator().manual_seed(100 + seed))
        for value in (linear_cka(x, y), linear_cka(x, independent)):
            assert 0.0 <= value <= 1.0


def test_accumulator_equals_full_computation():
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(b, 6, 3, 4, generator=gen) + 2.0 for b in (2, 1, 3)]  # offset: centring must be exact
    ys = [torch.relu(x[:, :4]) * 2.0 + torch.randn(x.shape[0], 4, 3, 4, generator=gen) for x in xs]
    acc = CKAAccumulator()
    for x, y in zip(xs, ys):
        acc.update(x, y)
    x_full = torch.cat(xs).permute(0, 2, 3, 1).reshape(-1, 6)  # (B·H·W, C1)
    y_full = torch.cat(ys).permute(0, 2, 3, 1).reshape(-1, 4)  # (B·H·W, C2)
    assert acc.n == 6 * 3 * 4
    assert acc.value() == pytest.approx(linear_cka(x_full, y_full), rel=1e-12)
    assert acc.value() == pytest.approx(cka_hsic_gram(x_full.double().numpy(), y_full.double().numpy()), rel=1e-9)


def test_accumulator_self_similarity_and_errors():
    x = torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    acc = CKAAccumulator()
    acc.update(x, x)
    assert acc.value() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="resize"):
        acc.update(x, torch.randn(2, 5, 2, 2))
    with pytest.raises(ValueError, match="channel counts"):
        acc.update(x, torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="before any update"):
        CKAAccumulator().value()


def test_mismatched_samples_and_constant_features_raise():
    with pytest.raises(ValueError, match="resize"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(10, 3), torch.randn(10, 3))
