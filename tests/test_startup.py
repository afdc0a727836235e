"""Stage start-up: MiT's own stochastic depth and truncated-normal initialiser draw exactly what timm's did (so the
seeded trainings and the tiny parity fixtures are unchanged), and the network stages no longer import timm or
torchvision, whose import cost every training stage seconds (docs/BENCHMARKS.md)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm.layers
import torch

from primkd.models import build_student, build_teacher, mit

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("shape", "mean", "std", "a", "b"), [((64, 32), 0.0, 0.02, -2.0, 2.0),
                                                              ((7, 5, 3), 0.5, 1.0, -1.0, 1.5),
                                                              ((1000,), 0.0, 1.0, -0.3, 0.2)])
def test_trunc_normal_draws_what_timm_draws(shape, mean, std, a, b):
    ours, theirs = torch.empty(shape), torch.empty(shape)
    torch.manual_seed(3)
    mit.trunc_normal_(ours, mean=mean, std=std, a=a, b=b)
    after_ours = torch.rand(4)  # the generator advanced by the same count
    torch.manual_seed(3)
    timm.layers.trunc_normal_(theirs, mean=mean, std=std, a=a, b=b)
    assert torch.equal(ours, theirs)
    assert torch.equal(after_ours, torch.rand(4))
    assert ours.min() >= a and ours.max() <= b and ours.std() > 0


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_drop_path_matches_timm(p):
    x = torch.randn(16, 5, 3)
    ours, theirs = mit.DropPath(p), timm.layers.DropPath(p)
    torch.manual_seed(1)
    y = ours(x)
    torch.manual_seed(1)
    assert torch.equal(y, theirs(x))
    if 0 < p < 1:  # some samples dropped, the others scaled up
        kept = y.flatten(1).abs().sum(1) > 0
        assert 0 < kept.sum() < 16
        assert torch.allclose(y[kept], x[kept] / (1 - p))
    assert torch.equal(ours.eval()(x), x)


def test_seeded_networks_equal_those_built_with_timm(monkeypatch):
    """The same seed gives the same initial weights and the same training-mode outputs (stochastic depth on) as
    with timm's helpers, the code that trained the fixtures and every result so far."""
    x = torch.randn(2, 3, 64, 64)

    def build_and_run():
        torch.manual_seed(0)
        teacher = build_teacher("mit_tiny", 5, decoder_embed_dim=16)
        student = build_student("mit_tiny", 5, decoder_embed_dim=16)
        torch.manual_seed(1)
        with torch.no_grad():
            out = student.train()(x, x.flip(-1))["logits"]
        return {**teacher.state_dict(), **{f"s.{k}": v for k, v in student.state_dict().items()}}, out

    ours, out = build_and_run()
    monkeypatch.setattr(mit, "trunc_normal_", timm.layers.trunc_normal_)
    monkeypatch.setattr(mit, "DropPath", timm.layers.DropPath)
    theirs, out_timm = build_and_run()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(out, out_timm)


def test_network_stages_import_neither_timm_nor_torchvision():
    """What `primkd train`, `evaluate` and `analyze` import before they run (their modules, in a fresh process)."""
    code = ("import json, sys, primkd.engine.train, primkd.engine.evaluate_run, primkd.analysis.run; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'torchvision'})))")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == ["torch"]


@pytest.mark.integration
@pytest.mark.skipif(not (REPO / ".venv/bin/primkd").is_file(), reason="needs the checkout's .venv (make venv)")
def test_stage_startup_bench_alternates_and_stops_at_the_first_training_line(tmp_path):
    """bench/stage_startup.py in its shortest form, this checkout against itself."""
    spec = importlib.util.spec_from_file_location("bench_stage_startup", REPO / "bench" / "stage_startup.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(bench.parse_args(["--baseline", str(REPO), "--rounds", "2", "--data", str(tmp_path / "data"),
                                          "--out", str(tmp_path / "startup.json")]))
    for name in ("baseline", "candidate"):
        for kind in ("help", "stage"):
            runs = report["runs"][name][kind]
            assert len(runs) == 2 and all(r["wall_s"] > 0 and r["cpu_s"] > 0 for r in runs), (name, kind)
        medians = report["medians"][name]
        # the stage imports torch and builds the network before its first line; `--help` imports neither
        assert medians["stage"]["median_cpu_s"] > 3 * medians["help"]["median_cpu_s"]
    assert json.loads((tmp_path / "startup.json").read_text())["medians"] == report["medians"]
