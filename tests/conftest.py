"""Shared test set-up: offline hubs, few threads, the location of the reference fixtures, and ``--order``."""

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


ORDERS = "file (as collected), reverse, or shuffle:<seed>"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--order", default="file", metavar="ORDER",
                     help=f"Run the collected tests in another order, to catch tests that depend on one another: "
                          f"{ORDERS}. shuffle keeps each module's tests together (its module-scoped fixtures are "
                          f"built once) and shuffles the modules and the tests within each.")


def pytest_report_header(config: pytest.Config) -> str | None:
    order = config.getoption("--order")
    return None if order == "file" else f"test order: {order} (rerun with --order {order} to reproduce)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = config.getoption("--order")
    kind, _, seed = order.partition(":")
    if order == "file":
        return
    if order == "reverse":
        items.reverse()
        return
    if kind != "shuffle" or not seed.isdigit():
        raise pytest.UsageError(f"--order {order!r} is not an order; use {ORDERS}, e.g. --order shuffle:1")
    rng = random.Random(int(seed))
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.partition("::")[0], []).append(item)
    groups = list(modules.values())
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    items[:] = [item for group in groups for item in group]


# The reference fixtures travel with the repository (tests/fixtures/PROVENANCE.md); the team's shared originals sit
# beside it, and tests/test_fixtures.py checks that the copy still equals them.
FIXTURES = REPO / "tests" / "fixtures"
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
# The paper's numbers as transcribed in ../shared/paper, copied byte for byte (tests/test_fixtures.py checks it).
PAPER_TABLES = REPO / "tests" / "paper" / "primkd_tables.yaml"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures`` (override with PRIMKD_FIXTURES, e.g. fixtures made with other seeds)."""
    path = Path(os.environ.get("PRIMKD_FIXTURES") or FIXTURES)
    if not path.is_dir():
        pytest.fail(f"reference fixtures not found at {path}; unset PRIMKD_FIXTURES to use {FIXTURES}, or point it "
                    f"at a folder with the layout of tests/fixtures/README.md")
    return path


@pytest.fixture(scope="session")
def cmx_fixture(fixtures_dir: Path) -> dict:
    """The official CMX student's tiny reference file (fixtures/README.md, cmx section)."""
    import torch

    return torch.load(fixtures_dir / "cmx" / "tiny_cmx_seed0.pt", weights_only=True)


@pytest.fixture(scope="session")
def teacher_fixture(fixtures_dir: Path) -> dict:
    """The official PrimKD teacher's tiny reference file."""
    import torch

    return torch.load(fixtures_dir / "cmx" / "tiny_teacher_seed0.pt", weights_only=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Train with one intra-op thread: on a busy 2-core machine more threads spin-wait (tiny runs 10-20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
