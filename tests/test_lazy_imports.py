"""`primkd --help` and the stages that need no network (params, prepare, hha, check-data, report) import neither
torch nor timm: each pipeline stage used to pay about 5 CPU-seconds and 1 GB for it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from primkd.config import backbones

REPO = Path(__file__).resolve().parents[1]
# Runs the CLI in a fresh interpreter and reports which heavy packages it imported, whatever the exit status.
PROBE = """
import json, sys
from primkd.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
finally:
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "timm", "torchvision"})))
"""


def heavy_imports(args: list[str], cwd: Path) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lazy")


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["import-official", "--help"]])
def test_help_imports_no_torch(workdir, args):
    assert heavy_imports(args, workdir) == []


def test_data_and_report_stages_import_no_torch(workdir):
    params = ["--params", str(REPO / "params.yaml"), "--preset", "smoke"]
    commands = [
        ["params", *params, "--out", "effective.yaml"],
        ["prepare", *params, "--out", "prepared"],
        ["hha", *params, "--data", "prepared", "--out", "hha", "--contact-sheet", "sheet.png"],
        ["check-data", "--data", "prepared", "--hha", "hha", "--no-progress"],
        ["report", *params, "--results", "results", "--out-dir", "results/report", "--report", "REPORT.md"],
    ]
    (workdir / "results").mkdir()
    for args in commands:
        assert heavy_imports(args, workdir) == [], args[0]
    assert (workdir / "hha").is_dir() and (workdir / "REPORT.md").is_file()


def test_backbone_names_read_without_torch_match_the_models():
    from primkd.models.mit import MIT_VARIANTS

    assert set(backbones()) == set(MIT_VARIANTS)
