"""The suite's ``--order`` option (tests/conftest.py): reverse, or a seeded shuffle that keeps modules together."""

from types import SimpleNamespace

import pytest
from conftest import pytest_collection_modifyitems


def _order(order: str, items: list) -> list[str]:
    config = SimpleNamespace(getoption=lambda name: order)
    pytest_collection_modifyitems(config, items)
    return [item.nodeid for item in items]


def _items() -> list:
    return [SimpleNamespace(nodeid=f"tests/test_{m}.py::test_{i}") for m in "abcd" for i in range(4)]


def test_file_and_reverse_orders():
    ids = [item.nodeid for item in _items()]
    assert _order("file", _items()) == ids
    assert _order("reverse", _items()) == ids[::-1]


def test_shuffle_is_seeded_and_keeps_each_module_together():
    ids = [item.nodeid for item in _items()]
    first = _order("shuffle:1", _items())
    assert first == _order("shuffle:1", _items()) and sorted(first) == sorted(ids) and first != ids
    modules = [nodeid.partition("::")[0] for nodeid in first]
    runs = [m for k, m in enumerate(modules) if k == 0 or modules[k - 1] != m]
    assert len(runs) == 4  # each module's tests are contiguous
    assert any(_order(f"shuffle:{seed}", _items()) != first for seed in (2, 3))


@pytest.mark.parametrize("order", ["sideways", "shuffle", "shuffle:x"])
def test_an_unknown_order_is_refused_with_the_choices(order):
    with pytest.raises(pytest.UsageError, match=r"not an order; use file \(as collected\), reverse, or shuffle:<seed>"):
        _order(order, _items())
