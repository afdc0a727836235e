"""Stage logs append under one header per run, so a stage's history survives a resume."""

import logging
from pathlib import Path

import pytest

from primkd.cli import main
from primkd.runlog import run_header, setup_logging

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def close_logs() -> None:
    """Close the root logger's handlers (the log file) so that the test reads everything written."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        handler.close()
        root.removeHandler(handler)


def test_header_names_command_and_the_checkpoints_a_training_run_resumes_from(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert run_header(["train", "--out-dir", "a b"], ckpt).splitlines()[1].strip() == (
        f"starts afresh (no checkpoint in {ckpt})")
    for seed, steps in ((0, (4, 12)), (1, (8,))):
        (ckpt / f"seed{seed}").mkdir(parents=True, exist_ok=True)
        for step in steps:
            (ckpt / f"seed{seed}" / f"step-{step:09d}.pt").write_bytes(b"")
    aside = ckpt / "seed0.stale-20261207T000000Z"  # a run the engine set aside: not resumed from
    aside.mkdir()
    (aside / "step-000000099.pt").write_bytes(b"")
    first, *rest = run_header(["train", "--out-dir", "a b"], ckpt).splitlines()
    assert first.startswith("===== ") and first.endswith("primkd train --out-dir 'a b'")
    assert [line.strip() for line in rest] == [f"resumes from {ckpt}/seed0/step-000000012.pt",
                                               f"resumes from {ckpt}/seed1/step-000000008.pt"]
    assert len(run_header(["prepare"]).splitlines()) == 1


def test_log_file_keeps_every_run(tmp_path):
    path = tmp_path / "logs" / "stage.log"
    for run in (1, 2):
        setup_logging(path, f"===== run {run}\n")
        logging.getLogger("primkd").info("line of run %d", run)
    close_logs()
    lines = path.read_text().splitlines()
    assert lines[0] == "===== run 1" and lines[2] == "===== run 2"
    assert lines[1].endswith("primkd: line of run 1") and lines[3].endswith("primkd: line of run 2")


def test_prepare_log_keeps_its_earlier_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    log = tmp_path / "prepare.log"
    for _ in range(2):
        main(["prepare", "--params", str(PARAMS), "--preset", "smoke", "--out", str(tmp_path / "prepared"),
              "--log", str(log), "--no-progress"])
    close_logs()
    text = log.read_text()
    assert text.count("===== ") == 2 and text.count("prepared synthetic dataset in") == 2
    assert text.count("prepare: 1 torch thread(s), 1 worker(s)") == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_a_log_on_a_full_disk_is_one_line(capsys):
    """Opening the log on a full disk stops in one line; a log that fills during the run says so once and the run
    goes on, logging to stderr."""
    with pytest.raises(SystemExit) as info:
        setup_logging("/dev/full", "===== header\n")
    assert info.value.code == 2
    assert capsys.readouterr().err == ("ERROR primkd: /dev/full: cannot write the log (No space left on device); free "
                                       "space on its disk or pass another --log\n")
    setup_logging("/dev/full")
    log = logging.getLogger("primkd.test")
    for i in range(14):
        log.info("epoch %d", i)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("cannot write the log any more") == 1
    assert err.splitlines()[1] == ("WARNING primkd: /dev/full: cannot write the log any more (No space left on "
                                   "device); the rest of this run is logged to stderr only")
    assert err.count("epoch ") == 14
    setup_logging(None)
