"""Offline PNG training curves: per run and an ablation overlay, from curves.csv / eval_curve.csv."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from primkd.io import DataError
from primkd.report.curves import _mean_over_seeds, plot_curves, read_curve, run_folders

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(folder: Path, losses: list[float], mious: dict[int, float], feat: float = 0.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,lr,loss,seg,pred,feat"] + [f"{e + 1},0.001,{v},{v / 2},0.0,{feat}" for e, v in enumerate(losses)]
    (folder / "curves.csv").write_text("\n".join(rows) + "\n")
    rows = ["epoch,miou,macc,pacc"] + [f"{e},{m},{m},{m}" for e, m in mious.items()]
    (folder / "eval_curve.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def results(tmp_path):
    models = tmp_path / "demo" / "models"
    write_run(models / "teacher_rgb", [3.0, 2.0, 1.0], {1: 0.2, 3: 0.5})
    write_run(models / "cmx" / "seed0", [4.0, 3.0, 2.0], {1: 0.1, 2: 0.2, 3: 0.3})
    write_run(models / "cmx" / "seed1", [2.0, 1.0, 0.5], {1: 0.3, 3: 0.5})  # seed 1 skipped epoch 2's evaluation
    write_run(models / "primkd" / "seed0", [5.0, 4.0, 3.0], {3: 0.4}, feat=0.1)
    (models / "still_training").mkdir()
    return tmp_path / "demo"


def test_mean_over_seeds_uses_the_epochs_every_seed_has(results):
    epochs, loss = _mean_over_seeds(results / "models" / "cmx", "curves.csv", "loss")
    np.testing.assert_allclose(epochs, [1, 2, 3])
    np.testing.assert_allclose(loss, [3.0, 2.0, 1.25])
    epochs, miou = _mean_over_seeds(results / "models" / "cmx", "eval_curve.csv", "miou")
    np.testing.assert_allclose(epochs, [1, 3])
    np.testing.assert_allclose(miou, [0.2, 0.4])


def test_run_folders_are_seeds_or_the_run_itself(results):
    assert list(run_folders(results / "models" / "cmx")) == ["seed 0", "seed 1"]
    assert run_folders(results / "models" / "teacher_rgb") == {"": results / "models" / "teacher_rgb"}
    with pytest.raises(DataError, match=r"still_training: no curves\.csv"):
        run_folders(results / "models" / "still_training")


def test_curves_are_those_of_the_seeds_of_params(results, tmp_path):
    """seeds [0] (an earlier list was [0, 1]): cmx/seed1/ is a leftover, outside the run's curves and mean."""
    cmx = results / "models" / "cmx"
    assert run_folders(cmx, [0]) == {"seed 0": cmx / "seed0"}
    assert list(run_folders(cmx, [1, 0])) == ["seed 1", "seed 0"]  # in the order of `seeds`
    assert run_folders(cmx, [0, 5]) == {"seed 0": cmx / "seed0"}  # seed 5 still training: no curves yet
    epochs, loss = _mean_over_seeds(cmx, "curves.csv", "loss", [0])
    np.testing.assert_allclose(epochs, [1, 2, 3])
    np.testing.assert_allclose(loss, [4.0, 3.0, 2.0])  # seed 0 alone, not the mean with seed 1's [2, 1, 0.5]
    with pytest.raises(DataError, match=r"primkd: no curves\.csv"):
        run_folders(results / "models" / "primkd", [1])  # only a leftover seed0/: no curve of the listed seeds
    # the figures: with seeds [0], cmx.png draws seed 0 only, as a folder holding seed0/ alone does
    alone = tmp_path / "alone" / "demo"
    shutil.copytree(results, alone)
    shutil.rmtree(alone / "models" / "cmx" / "seed1")
    plot_curves(results, tmp_path / "listed", order=["cmx"], seeds=[0])
    plot_curves(alone, tmp_path / "only_seed0", order=["cmx"])
    plot_curves(results, tmp_path / "every", order=["cmx"])
    for name in ("cmx.png", "ablation.png"):
        assert (tmp_path / "listed" / name).read_bytes() == (tmp_path / "only_seed0" / name).read_bytes(), name
        assert (tmp_path / "listed" / name).read_bytes() != (tmp_path / "every" / name).read_bytes(), name


def test_plot_curves_writes_one_png_per_run_and_the_student_overlay(results, tmp_path):
    written = plot_curves(results, tmp_path / "plots", order=["cmx"])
    assert [p.name for p in written] == ["cmx.png", "primkd.png", "teacher_rgb.png", "ablation.png"]
    for path in written:
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 10_000  # a drawn figure, not an empty canvas
    assert (tmp_path / "plots" / "cmx.png").read_bytes() != (tmp_path / "plots" / "primkd.png").read_bytes()


def test_bad_curve_files_name_the_file(tmp_path):
    (tmp_path / "curves.csv").write_text("epoch,loss\n1,abc\n")
    with pytest.raises(DataError, match=r"curves\.csv: a value is not a number"):
        read_curve(tmp_path / "curves.csv")
    with pytest.raises(DataError, match=r"no trained run with curves\.csv"):
        plot_curves(tmp_path, tmp_path / "plots")
