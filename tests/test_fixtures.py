"""The reference fixtures in tests/fixtures are the team's shared fixtures, byte for byte."""

import hashlib
from pathlib import Path

import pytest
from conftest import FIXTURES, PAPER_TABLES, SHARED_FIXTURES

# Files of tests/fixtures that are not copies of the shared folder.
OWN_FILES = {"SHA256SUMS", "PROVENANCE.md"}


def _checksums() -> dict[str, str]:
    lines = (FIXTURES / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


CHECKSUMS = _checksums()


def test_fixture_file_lists_agree():
    """The copy holds exactly the listed files; so does the shared folder, when it sits beside the repository."""
    assert _files(FIXTURES) - OWN_FILES == set(CHECKSUMS)
    assert {"README.md", "cmx/tiny_cmx_seed0.pt", "cmx/tiny_teacher_seed0.pt", "kd/kd_losses_seed0.pt",
            "hha/depth.npy", "nyuv2/splits.mat"} <= set(CHECKSUMS)
    if SHARED_FIXTURES.is_dir():
        assert _files(SHARED_FIXTURES) == set(CHECKSUMS), (
            f"{SHARED_FIXTURES} and tests/fixtures list other files; copy the shared folder again "
            f"(tests/fixtures/PROVENANCE.md, Updating)")


@pytest.mark.parametrize("name", sorted(CHECKSUMS))
def test_fixture_copy_is_byte_identical(name):
    """Each copied file has its recorded SHA-256 and, when the shared folder exists, the bytes of the original."""
    data = (FIXTURES / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == CHECKSUMS[name], f"tests/fixtures/{name} changed since it was copied"
    if SHARED_FIXTURES.is_dir():
        assert data == (SHARED_FIXTURES / name).read_bytes(), (
            f"tests/fixtures/{name} differs from {SHARED_FIXTURES / name}; copy the shared folder again "
            f"(tests/fixtures/PROVENANCE.md, Updating)")


def test_paper_tables_copy_is_the_shared_transcription():
    """tests/paper/primkd_tables.yaml (the paper's numbers the report test checks) equals the team's shared copy."""
    shared = SHARED_FIXTURES.parent / "paper" / PAPER_TABLES.name
    assert PAPER_TABLES.is_file()
    if shared.is_file():
        assert PAPER_TABLES.read_bytes() == shared.read_bytes(), f"{PAPER_TABLES} differs from {shared}; copy it again"
