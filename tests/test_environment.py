"""requirements.lock, environment.yml, the Makefile and pyproject.toml describe one package set."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PINS = {"torch": "2.14.1", "torchvision": "0.29.1"}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared() -> list[Requirement]:
    """pyproject.toml's dependencies and its `test` extra (the lock holds both)."""
    p = project()
    return [Requirement(r) for r in [*p["dependencies"], *p["optional-dependencies"]["test"]]]


def locked() -> tuple[dict[str, set[str]], set[str]]:
    """Pinned versions by package (a universal lock may pin one package per platform), and the packages the lock says
    it holds for primkd itself (`# via primkd (pyproject.toml)`)."""
    versions: dict[str, set[str]] = {}
    direct, current = set(), None
    for line in LOCK.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if pin:
            current = canonicalize_name(pin[1])
            versions.setdefault(current, set()).add(pin[2])
        elif current and re.search(r"#\s+(via\s+)?primkd \(pyproject\.toml\)", line):
            direct.add(current)
    return versions, direct


def test_lock_pins_every_declared_package_within_its_range():
    versions, direct = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in versions, f"requirements.lock lacks {req.name} of pyproject.toml; run `make lock`"
        for version in versions[name]:
            assert req.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside pyproject.toml's {req}; run `make lock`")
    assert direct == {canonicalize_name(r.name) for r in declared()}, "requirements.lock is stale; run `make lock`"


def test_lock_pins_torch_and_every_package_exactly():
    versions, _ = locked()
    assert {name: versions[name] for name in PINS} == {name: {v} for name, v in PINS.items()}
    assert len(versions) > 50  # the whole closure, not only the direct dependencies
    requirement_lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith((" ", "#"))]
    assert all("==" in line for line in requirement_lines)


def test_lock_was_made_by_the_makefile_command_for_the_project_python():
    makefile = (REPO / "Makefile").read_text()
    command = re.search(r"^LOCK_CMD := (.+)$", makefile, re.M)[1]
    assert f"#    uv {command}" in LOCK.read_text().splitlines()[1]
    python = re.search(r"--python-version (\S+)", command)[1]
    assert project()["requires-python"] == f">={python}"
    assert re.search(r"pip install .*-r requirements\.lock", makefile), "make venv must install from the lock"


def test_conda_environment_installs_the_lock_and_primkd():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = re.search(r"--python-version (\S+)", LOCK.read_text().splitlines()[1])[1]
    assert sorted(conda) == sorted([f"python={python}", "pip"]), "packages come from requirements.lock, not conda"
    assert pip == ["-r ${PWD}/requirements.lock", "-e ${PWD}"]


@pytest.mark.parametrize("name", sorted(PINS))
def test_installed_versions_match_the_lock(name):
    """The environment running the tests was built from the lock (a stale venv shows up here)."""
    from importlib.metadata import version

    assert version(name).split("+")[0] == PINS[name]
