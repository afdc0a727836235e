"""Content, not time: outputs edited in place or replaced by an older file are named (primkd.io.OutputRecords), and
Snakemake plans their jobs and everything after them, as DVC does."""

import os
import shutil
from pathlib import Path

import pytest

from primkd.io import OutputRecords, read_image, write_png

from pipeline_utils import copy_workflow, run


def _same_times(path: Path, like: os.stat_result) -> None:
    os.utime(path, ns=(like.st_atime_ns, like.st_mtime_ns))


def test_records_name_content_changes_whatever_the_file_times(tmp_path):
    folder, model = tmp_path / "hha", tmp_path / "model.pt"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"aaaa")
    (folder / ".snakemake_timestamp").write_text("")
    model.write_bytes(b"weights")
    store = tmp_path / "records.json"
    outputs = [str(folder), str(model), str(tmp_path / "not-yet")]
    assert OutputRecords(store).changed(outputs) == {}  # first seen: recorded as written
    old = (folder / "a.png").stat()
    (folder / "a.png").write_bytes(b"bbbb")  # same size, same time: only the contents tell
    _same_times(folder / "a.png", old)
    (folder / ".snakemake_timestamp").write_text("touched")  # Snakemake's marker is no content
    os.utime(model)  # touched, same bytes: not a change
    records = OutputRecords(store)
    assert records.token(outputs) == ",,"
    assert records.changed(outputs) == {str(folder): "a.png edited"}
    token = records.token(outputs)
    assert token.endswith(",,") and len(token) == 18  # a new parameter for the job writing the folder
    assert records.token([str(model)]) == ""
    assert OutputRecords(store).token(outputs) == token  # a job process of a cluster run reads it without looking
    assert OutputRecords(store).changed(outputs) == {str(folder): "a.png edited"}  # until its job has rerun
    (folder / "b.png").write_bytes(b"new")
    assert OutputRecords(store).changed(outputs) == {str(folder): "a.png edited"}
    (folder / "a.png").write_bytes(b"aaaa")
    assert OutputRecords(store).changed(outputs) == {str(folder): "b.png added"}
    # The run rewrites the folder and writes the output that was missing: both recorded, nothing reported after.
    records = OutputRecords(store)
    records.changed(outputs)
    token = records.token(outputs)  # what the job that reruns is given
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "a.png").write_bytes(b"cccc")
    (tmp_path / "not-yet").write_bytes(b"x")
    records.record_rewritten()
    again = OutputRecords(store)
    assert again.changed(outputs) == {} and again.token(outputs) == token  # what the rerun job was given: stable
    model.write_bytes(b"weightz")
    assert OutputRecords(store).changed(outputs) == {str(model): "model.pt edited"}


def _dry_run(root: Path, *targets: str) -> str:
    proc = run(["snakemake", "--cores", "1", "--dry-run", *targets], root)
    return proc.stdout + proc.stderr


def _planned(out: str) -> set[str]:
    """The rules of the jobs a dry run plans (its "Job stats" table)."""
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0].splitlines()[3:] if "Job stats:" in out else []
    return {line.split()[0] for line in table if line.split() and line.split()[0] != "total"}


@pytest.mark.integration
def test_snakemake_plans_the_jobs_of_an_edited_hha_image_or_a_replaced_teacher(tmp_path):
    """Overwritten with the old file times kept, an HHA image and the RGB teacher's model.pt go unseen by mtimes; the
    dry run plans the hha job and the training after it, and the teacher's training."""
    root = copy_workflow(tmp_path / "smk", preset="smoke")
    teacher = "results/smoke/models/teacher_rgb/model.pt"
    run(["snakemake", "--cores", "1", teacher], root)
    assert "Nothing to be done" in _dry_run(root, teacher)
    hha = sorted((root / "data" / "smoke" / "hha").glob("*.png"))[0]
    before = hha.stat()
    write_png(hha, 255 - read_image(hha))
    _same_times(hha, before)
    out = _dry_run(root, teacher)
    assert _planned(out) == {"hha", "train_teacher"}, out
    assert f"data/smoke/hha: {hha.name} edited since the pipeline wrote it" in out
    run(["snakemake", "--cores", "1", teacher], root)  # restores the HHA image; then nothing is left to do
    assert "Nothing to be done" in _dry_run(root, teacher)
    model = root / teacher
    before = model.stat()
    shutil.copy(root / "results/smoke/models/teacher_rgb/model_best.pt", model)
    _same_times(model, before)
    out = _dry_run(root, teacher)
    assert _planned(out) == {"train_teacher"}, out
    assert f"{teacher}: model.pt edited since the pipeline wrote it" in out
