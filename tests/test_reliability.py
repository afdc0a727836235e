"""Reliability of training: exact resume after crashes, SIGKILL and SIGTERM; determinism; non-finite guard;
foreign checkpoints and model files; stages that fail leave no declared output behind."""

import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import primkd.engine.train as T
from primkd.config import KDConfig, ModelConfig, TrainConfig, load_params
from primkd.data import hha, synthetic
from primkd.data.dataset import EpochSampler, RGBDDataset
from primkd.engine.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    remove_partial_checkpoints,
    restore_checkpoint,
    save_checkpoint,
)
from primkd.io import DataError, read_image, write_png
from primkd.models.io import architecture, build_model, load_model, save_model

from fake_data import REPO, make_dataset

OUTPUTS = ("model.pt", "train.json", "curves.csv", "eval_curve.csv")
TIMING = ("train_seconds", "images_per_second", "resumed_at_iterations", "step_seconds", "peak_memory")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_TRAIN = 8  # batch 2 → 4 iterations per epoch; 2 epochs; a checkpoint every 2 iterations: 2, 4 (epoch end), 6, 8


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny dataset, a trained RGB teacher, and the uninterrupted reference run of a distilled student."""
    tmp = tmp_path_factory.mktemp("reliability")
    data = make_dataset(tmp / "data", n_train=N_TRAIN, n_test=2)
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["train"].update(epochs=2, batch_size=2, crop=[32, 48], checkpoint_every=2, keep_checkpoints=2,
                        deterministic=True)
    teacher_cfg = copy.deepcopy(cfg)
    teacher_cfg["train"]["epochs"] = 1
    T.train(teacher_cfg, T.Run("teacher_rgb", "teacher", ["rgb"]), data, data / "hha", tmp / "teacher", progress=False)
    run = T.Run("primkd", "student", ["rgb", "modal"],
                kd=KDConfig(**dict(cfg["kd"], beta=0.5), teacher_modality="rgb"),
                teacher_path=tmp / "teacher" / "model.pt")
    ref = tmp / "reference"
    T.train(cfg, run, data, data / "hha", ref, progress=False, checkpoint_dir=ref / "ckpt")
    return {"tmp": tmp, "data": data, "cfg": cfg, "teacher_cfg": teacher_cfg, "run": run, "ref": ref}


def student(env, out: Path, cfg: dict | None = None) -> dict:
    return T.train(cfg or env["cfg"], env["run"], env["data"], env["data"] / "hha", out, progress=False,
                   checkpoint_dir=out / "ckpt")


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical weights, curves and metrics (timing aside)."""
    for name in ("model.pt", "model_best.pt"):
        wa, wb = (torch.load(d / name, weights_only=True)["state_dict"] for d in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for name in ("curves.csv", "eval_curve.csv"):
        assert (a / name).read_text() == (b / name).read_text()
    ja, jb = (json.loads((d / "train.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ja.items() if k not in TIMING} == {k: v for k, v in jb.items() if k not in TIMING}


def crash_at(monkeypatch, target: str, call: int) -> None:
    """Make ``primkd.engine.train.<target>`` raise on its ``call``-th call (a crash at that point)."""
    original, count = getattr(T, target), [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise RuntimeError(f"injected crash in {target}")
        return original(*args, **kwargs)

    monkeypatch.setattr(T, target, wrapper)


@pytest.mark.parametrize(("target", "call", "resumed_at"), [
    ("train_step", 1, []),  # before the first checkpoint: starts over
    ("train_step", 3, [2]),  # mid-epoch: resumes at batch 2 of epoch 1
    ("train_step", 5, [4]),  # just after an epoch-end checkpoint
    ("evaluate", 2, [6]),  # in the last evaluation: resumes mid-epoch 2 with epoch 1's curves restored
    ("_write_best_model", 1, [8]),  # after the final checkpoint: only the outputs are written again
])
def test_crashed_run_resumes_to_the_same_weights_and_metrics(env, tmp_path, monkeypatch, target, call, resumed_at):
    with monkeypatch.context() as m:
        crash_at(m, target, call)
        with pytest.raises(RuntimeError, match="injected crash"):
            student(env, tmp_path)
    assert not (tmp_path / "model.pt").exists()
    summary = student(env, tmp_path)
    assert summary["resumed_at_iterations"] == resumed_at
    assert_same_run(tmp_path, env["ref"])


def test_checkpoints_keep_the_newest_k_and_record_the_run(env):
    paths = list_checkpoints(env["ref"] / "ckpt")
    assert [p.name for p in paths] == ["step-000000006.pt", "step-000000008.pt"]
    blob = read_checkpoint(paths[-1])
    assert blob["complete"] and blob["progress"]["epoch"] == 2 and len(blob["progress"]["curves"]) == 2
    assert blob["fingerprint"]["train"]["seed"] == 0 and set(blob["rng"]) >= {"torch", "numpy", "python"}
    assert set(blob["states"]) == {"model", "criterion", "optimizer", "scheduler"}
    assert any(k.startswith("aligners") for k in blob["states"]["criterion"])  # the trained aligners are saved


def test_deterministic_runs_are_identical_and_record_their_seed(env, tmp_path):
    summary = student(env, tmp_path)
    assert_same_run(tmp_path, env["ref"])
    assert summary["seed"] == 0 and summary["deterministic"] is True
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["info"]["seed"] == 0 and meta["info"]["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()  # the global setting is restored after the run


DRIVER = """
import json, logging, os, signal, sys, time
from pathlib import Path
import torch
import primkd.engine.train as T
torch.set_num_threads(1)  # as the test process, so that the numbers are bit-identical
logging.basicConfig(level=logging.INFO)
spec = json.loads(Path(sys.argv[1]).read_text())
original, calls = T.train_step, [0]
def step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == spec["at"]:
        if spec["fault"] == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        Path(spec["marker"]).touch()  # the parent now sends SIGTERM to the whole process group, then "sent"
        deadline = time.time() + 20
        while not Path(spec["marker"] + ".sent").exists() and time.time() < deadline:
            time.sleep(0.01)
    return original(*args, **kwargs)
T.train_step = step
run = T.Run(**{**spec["run"], "kd": T.KDConfig(**spec["run"]["kd"]),
              "teacher_path": Path(spec["run"]["teacher_path"])})
T.train(spec["cfg"], run, Path(spec["data"]), Path(spec["data"]) / "hha", Path(spec["out"]), progress=False,
        checkpoint_dir=Path(spec["out"]) / "ckpt")
"""


def start_driver(env, out: Path, fault: str, at: int, cfg: dict) -> tuple[subprocess.Popen, Path]:
    """Train the reference student in a new process (and process group) that meets ``fault`` at step ``at``."""
    out.mkdir(parents=True)
    run = {"name": env["run"].name, "kind": env["run"].kind, "inputs": env["run"].inputs,
           "kd": env["run"].kd.as_dict(), "teacher_path": str(env["run"].teacher_path)}
    marker = out / "at_step"
    spec = {"cfg": cfg, "run": run, "data": str(env["data"]), "out": str(out), "fault": fault, "at": at,
            "marker": str(marker)}
    (out / "spec.json").write_text(json.dumps(spec))
    (out / "driver.py").write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(out / "driver.py"), str(out / "spec.json")], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker


def test_sigkill_mid_iteration_then_resume_is_exact(env, tmp_path):
    proc, _ = start_driver(env, tmp_path / "run", "sigkill", at=7, cfg=env["cfg"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    out = tmp_path / "run"
    assert not any((out / name).exists() for name in OUTPUTS)
    assert [p.name for p in list_checkpoints(out / "ckpt")] == ["step-000000004.pt", "step-000000006.pt"]
    assert student(env, out)["resumed_at_iterations"] == [6]
    assert_same_run(out, env["ref"])


def test_sigterm_saves_a_checkpoint_exits_143_and_resumes_exactly(env, tmp_path):
    cfg = copy.deepcopy(env["cfg"])
    cfg["train"]["num_workers"] = 1  # SIGTERM also reaches the DataLoader worker, which must survive it
    proc, marker = start_driver(env, tmp_path / "run", "sigterm", at=1, cfg=cfg)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    Path(f"{marker}.sent").touch()
    _, err = proc.communicate(timeout=120)
    out = tmp_path / "run"
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at iteration 1" in err and "step-000000001.pt" in err
    assert [p.name for p in list_checkpoints(out / "ckpt")] == ["step-000000001.pt"]
    assert not any((out / name).exists() for name in OUTPUTS)
    assert student(env, out)["resumed_at_iterations"] == [1]  # resumed with num_workers 0: a free setting
    assert_same_run(out, env["ref"])


def teacher_run(env, out: Path, cfg: dict | None = None) -> dict:
    return T.train(cfg or env["teacher_cfg"], T.Run("teacher_rgb", "teacher", ["rgb"]), env["data"], None, out,
                   progress=False)


def test_checkpoint_of_other_settings_is_never_resumed(env, tmp_path, monkeypatch, caplog):
    with monkeypatch.context() as m:
        crash_at(m, "train_step", 3)
        with pytest.raises(RuntimeError, match="injected crash"):
            teacher_run(env, tmp_path)
    ckpt = tmp_path / "checkpoints" / "step-000000002.pt"
    free, other_lr = (copy.deepcopy(env["teacher_cfg"]) for _ in range(2))
    free["train"]["max_bad_batches"] = 3  # not part of the fingerprint: the unfinished run resumes
    free["train"]["num_workers"] = 1
    with monkeypatch.context() as m:  # resume, then crash again so that an unfinished checkpoint is left
        crash_at(m, "train_step", 1)
        with pytest.raises(RuntimeError, match="injected crash"):
            teacher_run(env, tmp_path, free)
    assert ckpt.is_file()
    # An unfinished run with another learning rate starts from scratch, the log says why.
    other_lr["train"]["lr"] = 2e-3
    with caplog.at_level(logging.WARNING):
        assert teacher_run(env, tmp_path, other_lr)["resumed_at_iterations"] == []
    assert (f"teacher_rgb: training from scratch: the unfinished checkpoint {ckpt} was computed from other inputs "
            f"or settings (train.lr: 0.001 → 0.002)") in caplog.text
    # So does a finished one (a parameter change after a completed run retrains).
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert teacher_run(env, tmp_path)["resumed_at_iterations"] == []
    assert "the finished checkpoint" in caplog.text and "(train.lr: 0.002 → 0.001)" in caplog.text


def test_ctrl_c_saves_a_checkpoint_exits_130_in_one_line_and_resumes_exactly(env, tmp_path, monkeypatch, caplog):
    original, calls = T.train_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during iteration 3
        return original(*args, **kwargs)

    with monkeypatch.context() as m, caplog.at_level(logging.ERROR):
        m.setattr(T, "train_step", step)
        with pytest.raises(SystemExit) as info:
            student(env, tmp_path)
    assert info.value.code == 130 and not (tmp_path / "model.pt").exists()
    assert (f"primkd: stopped by SIGINT at iteration 3; saved {tmp_path / 'ckpt' / 'step-000000003.pt'}; run the "
            f"same command again to resume") in caplog.text
    assert signal.getsignal(signal.SIGINT) is not None and student(env, tmp_path)["resumed_at_iterations"] == [3]
    assert_same_run(tmp_path, env["ref"])


def test_a_second_trainer_on_the_same_checkpoint_folder_is_refused(env, tmp_path):
    """A trainer orphaned by a killed `dvc repro` holds the lock; a new one stops in one line naming it."""
    from primkd.engine.runtime import checkpoint_lock

    folder = tmp_path / "checkpoints"
    with checkpoint_lock(folder, "teacher_rgb"):
        with pytest.raises(DataError) as info:
            teacher_run(env, tmp_path)
    assert str(info.value) == (f"{folder}: run 'teacher_rgb' is being trained by process {os.getpid()}, which holds "
                               f"{folder / '.lock'}; wait for it to finish, or stop it (kill {os.getpid()}) and run "
                               f"again")
    assert list_checkpoints(folder) == []
    assert teacher_run(env, tmp_path)["resumed_at_iterations"] == []  # the lock went with its holder


def stale_folders(checkpoints: Path) -> list[Path]:
    return sorted(checkpoints.parent.glob(f"{checkpoints.name}.stale-*"))


def test_checkpoint_of_other_code_is_never_resumed_and_is_kept_aside(env, tmp_path, monkeypatch, caplog):
    """A code edit in the training closure (simulated: the digest of engine/optim.py) makes an unfinished and a
    finished checkpoint unusable: the run trains from scratch, bit-equal to a fresh run of the new code, and the old
    checkpoints (best.pt included) are moved aside with the reason."""
    optim = "src/primkd/engine/optim.py"
    old, new = (T.Run("teacher_rgb", "teacher", ["rgb"], code={optim: digest * 64, "src/primkd/io.py": "0" * 64})
                for digest in "ab")
    reference = tmp_path / "reference"
    T.train(env["teacher_cfg"], new, env["data"], None, reference, progress=False)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        crash_at(m, "train_step", 3)
        with pytest.raises(RuntimeError, match="injected crash"):
            T.train(env["teacher_cfg"], old, env["data"], None, out, progress=False)
    checkpoints = out / "checkpoints"
    unfinished = [p.read_bytes() for p in list_checkpoints(checkpoints)]
    assert unfinished and not (checkpoints / T.BEST_FILE).exists()
    with caplog.at_level(logging.WARNING):
        assert T.train(env["teacher_cfg"], new, env["data"], None, out, progress=False)["resumed_at_iterations"] == []
    assert_same_run(out, reference)
    assert (f"teacher_rgb: training from scratch: the unfinished checkpoint {checkpoints / 'step-000000002.pt'} was "
            f"computed from other inputs or settings (code.{optim}: aaaaaaaaaaaa… → bbbbbbbbbbbb…)") in caplog.text
    [aside] = stale_folders(checkpoints)
    assert f"moved its files to {aside}" in caplog.text
    assert [p.read_bytes() for p in list_checkpoints(aside)] == unfinished
    reason = (aside / "REASON.txt").read_text()
    assert "unfinished" in reason and f"code.{optim}: aaaaaaaaaaaa… → bbbbbbbbbbbb…" in reason
    # A finished run is not reused by other code either, and is kept aside with its best.pt.
    finished = {p.name: p.read_bytes() for p in [*list_checkpoints(checkpoints), checkpoints / T.BEST_FILE]}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert T.train(env["teacher_cfg"], old, env["data"], None, out, progress=False)["resumed_at_iterations"] == []
    assert "the finished checkpoint" in caplog.text and f"code.{optim}: bbbbbbbbbbbb… → aaaaaaaaaaaa…" in caplog.text
    second = [p for p in stale_folders(checkpoints) if p != aside]
    assert len(second) == 1
    assert {name: (second[0] / name).read_bytes() for name in finished} == finished


def test_the_train_command_fingerprints_the_code_closure_of_training(tmp_path, monkeypatch, capsys):
    """`primkd train` records the SHA-256 of every file of the training stage's code closure (the files DVC and
    Snakemake list); an edited file is named when the checkpoint is set aside."""
    from primkd import cli, stages
    from primkd.cli import pipeline
    from primkd.io import sha256_file

    data = make_dataset(tmp_path / "data", n_train=4, n_test=1)
    argv = ["train", "--role", "teacher", "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--data",
            str(data), "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress"]
    cli.main(argv)
    code = read_checkpoint(list_checkpoints(tmp_path / "ckpt")[-1])["fingerprint"]["code"]
    closure = stages.code_closure("primkd.cli.pipeline:cmd_train")
    assert sorted(code) == sorted(closure) and "src/primkd/engine/optim.py" in code
    assert all(code[p] == sha256_file(REPO / p) for p in closure)
    edited = dict(code, **{"src/primkd/engine/optim.py": "f" * 64})
    monkeypatch.setattr(pipeline, "training_code", lambda: edited)
    capsys.readouterr()
    cli.main(argv)
    err = capsys.readouterr().err
    assert "training from scratch: the finished checkpoint" in err
    assert f"(code.src/primkd/engine/optim.py: {code['src/primkd/engine/optim.py'][:12]}… → ffffffffffff…)" in err
    assert len(stale_folders(tmp_path / "ckpt")) == 1


def test_checkpoint_of_other_data_is_never_resumed(env, tmp_path, caplog):
    """The fingerprint covers the contents of the images, not only their names: after the data changed, even a
    finished checkpoint is not reused."""
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    run = T.Run("teacher_rgb", "teacher", ["rgb"])
    first = T.train(env["teacher_cfg"], run, data, None, tmp_path / "out", progress=False)
    again = T.train(env["teacher_cfg"], run, data, None, tmp_path / "out", progress=False)
    assert again["resumed_at_iterations"] == [first["iterations"]]  # same inputs: the finished run is reused
    rgb = data / "RGB" / "tr0.png"
    image = read_image(rgb, "rgb")
    write_png(rgb, 255 - image)
    with caplog.at_level(logging.WARNING):
        third = T.train(env["teacher_cfg"], run, data, None, tmp_path / "out", progress=False)
    assert third["resumed_at_iterations"] == []
    assert "training from scratch: the finished checkpoint" in caplog.text and "data.train_sha256" in caplog.text


def test_a_corrupt_best_model_of_a_finished_run_is_rebuilt_from_its_final_weights(env, tmp_path, caplog):
    """The teacher's best evaluation is its last epoch: a rerun after best.pt was corrupted rebuilds it (the same
    bytes) from the final checkpoint instead of crashing, and keeps the corrupt file aside."""
    out = tmp_path / "teacher"
    teacher_run(env, out)
    best = out / "checkpoints" / T.BEST_FILE
    original = best.read_bytes()
    best.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING):
        again = teacher_run(env, out)
    assert again["resumed_at_iterations"] == [again["iterations"]] and best.read_bytes() == original
    assert f"{best} is unreadable (cannot read the best model" in caplog.text
    assert "rebuilt it from the final weights" in caplog.text
    [aside] = stale_folders(out / "checkpoints")
    assert (aside / T.BEST_FILE).read_bytes() == b"\x00garbage"
    assert_same_run(out, env["tmp"] / "teacher")


def test_a_missing_best_model_of_an_earlier_epoch_retrains_and_keeps_the_checkpoints(env, tmp_path, monkeypatch,
                                                                                     caplog):
    """The best evaluation so far is epoch 1 and the run stopped in epoch 2: without best.pt its weights are in no
    checkpoint, so the run trains from scratch (bit-equal to an uninterrupted one), its checkpoints kept aside."""
    with monkeypatch.context() as m:
        crash_at(m, "train_step", 5)
        with pytest.raises(RuntimeError, match="injected crash"):
            student(env, tmp_path)
    best = tmp_path / "ckpt" / T.BEST_FILE
    best.unlink()
    kept = [p.name for p in list_checkpoints(tmp_path / "ckpt")]
    with caplog.at_level(logging.WARNING):
        assert student(env, tmp_path)["resumed_at_iterations"] == []
    assert (f"training from scratch: {best} is missing, and the weights of the best evaluation (epoch 1) are in no "
            f"checkpoint") in caplog.text
    [aside] = stale_folders(tmp_path / "ckpt")
    assert [p.name for p in list_checkpoints(aside)] == kept
    assert_same_run(tmp_path, env["ref"])


def poison(monkeypatch, name: str) -> None:
    """Make sample ``name`` come out of the dataset with NaN pixels."""
    original = RGBDDataset.__getitem__

    def getitem(self, key):
        item = original(self, key)
        if item["name"] == name:
            item["rgb"][:] = float("nan")
        return item

    monkeypatch.setattr(RGBDDataset, "__getitem__", getitem)


def test_nan_loss_stops_naming_iteration_term_and_image_and_keeps_the_good_checkpoint(env, tmp_path, monkeypatch):
    sampler = EpochSampler(N_TRAIN, seed=0)
    order = [f"tr{i}" for i, _ in sampler]  # epoch 0 order; batch 3 holds positions 4 and 5
    poison(monkeypatch, order[4])
    with pytest.raises(FloatingPointError, match=rf"iteration 3 \(epoch 1\): non-finite loss terms \['seg'\] on "
                                                 rf"images \['{order[4]}', '{order[5]}'\]; the last good "
                                                 rf"checkpoint is .*step-000000002\.pt"):
        teacher_run(env, tmp_path)
    assert not any((tmp_path / name).exists() for name in OUTPUTS)
    kept = read_checkpoint(tmp_path / "checkpoints" / "step-000000002.pt")
    assert all(torch.isfinite(v).all() for v in kept["states"]["model"].values() if v.is_floating_point())


def test_bad_batches_within_the_allowance_are_skipped_with_a_warning(env, tmp_path, monkeypatch, caplog):
    poison(monkeypatch, "tr0")
    cfg = copy.deepcopy(env["teacher_cfg"])
    cfg["train"].update(max_bad_batches=1)
    with caplog.at_level(logging.WARNING):
        summary = teacher_run(env, tmp_path, cfg)
    assert summary["skipped_batches"] == 1 and np.isfinite(summary["final_loss"])
    assert "skipping the batch (1 of at most 1)" in caplog.text and "'tr0'" in caplog.text


def test_weights_that_turned_non_finite_are_never_checkpointed(env, tmp_path):
    cfg = env["teacher_cfg"]
    trainer = T.Trainer(cfg, TrainConfig.of(cfg), T.Run("teacher_rgb", "teacher", ["rgb"]), env["data"], None,
                        tmp_path / "out", tmp_path, progress=False)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="became non-finite by iteration 0"):
        trainer.save()
    assert list_checkpoints(tmp_path) == []


def test_checkpoint_restores_states_and_every_rng_and_survives_a_corrupt_newest_file(tmp_path, caplog):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    torch.manual_seed(5)
    np.random.seed(5)  # noqa: NPY002 (the legacy global generator is what is checkpointed)
    for it in (1, 2, 3):
        save_checkpoint(tmp_path, it, {"net": net, "opt": opt}, {"it": it}, {"a": 1}, complete=False, keep=2)
    expected = (torch.rand(3), np.random.rand(2))  # noqa: NPY002
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000002.pt", "step-000000003.pt"]
    (tmp_path / "step-000000003.pt").write_bytes(b"\x00garbage")  # a half-copied newest file
    (tmp_path / ".step-000000004.abc.pt").write_bytes(b"partial")  # left by a process killed while saving
    remove_partial_checkpoints(tmp_path)
    assert not (tmp_path / ".step-000000004.abc.pt").exists()
    with caplog.at_level(logging.WARNING):
        path, blob = latest_checkpoint(tmp_path)
    assert path.name == "step-000000002.pt" and "step-000000003.pt: cannot read" in caplog.text
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    assert restore_checkpoint(blob, {"net": fresh, "opt": fresh_opt}, path) == {"it": 2}
    assert torch.equal(fresh.weight, net.weight) and fresh_opt.state_dict()["state"][0]["step"] == 1
    # Generators are back where they were when step 2 was saved, which is where they were for step 3 too.
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(2), expected[1])  # noqa: NPY002


def test_the_same_weights_give_the_same_bytes(env, tmp_path):
    """Model files, best models and training checkpoints: two saves of the same contents have the same SHA-256
    (torch names the zip entries after the file written, which was a random temporary name)."""
    from primkd.io import sha256_file

    arch = architecture(ModelConfig.of(env["teacher_cfg"]), "teacher", 3)
    torch.manual_seed(0)
    net = build_model(arch)
    for name in ("a.pt", "b.pt"):
        save_model(tmp_path / name, net, arch, ["rgb"], {"run": "teacher_rgb"})
    assert sha256_file(tmp_path / "a.pt") == sha256_file(tmp_path / "b.pt")
    for folder in ("c1", "c2"):
        torch.manual_seed(3)
        save_checkpoint(tmp_path / folder, 5, {"net": net}, {"it": 5}, {"a": 1}, complete=True, keep=1)
    assert sha256_file(tmp_path / "c1" / "step-000000005.pt") == sha256_file(tmp_path / "c2" / "step-000000005.pt")
    for out in ("x", "y"):
        T._write_best_model(tmp_path / out / "model_best.pt", torch.load(tmp_path / "a.pt", weights_only=True), {},
                            {"run": "teacher_rgb"})
    assert sha256_file(tmp_path / "x" / "model_best.pt") == sha256_file(tmp_path / "y" / "model_best.pt")


def test_model_file_of_another_architecture_is_rejected_by_name(env, tmp_path):
    arch = architecture(ModelConfig.of(env["teacher_cfg"]), "teacher", 3)
    other = build_model(dict(arch, num_classes=5))
    path = tmp_path / "model.pt"
    save_model(path, other, arch, ["rgb"], {})  # metadata says 3 classes, weights have 5
    with pytest.raises(DataError, match=rf"(?s){path}: weights do not fit .*shape mismatch.*weights "
                                        rf"\(5, 32, 1, 1\) vs model \(3, 32, 1, 1\).*re-run the training stage"):
        load_model(path)
    save_model(path, build_model(dict(arch, variant="mit_nano")), arch, ["rgb"], {})
    with pytest.raises(DataError, match=r"(?s)weights do not fit .*\d+ missing: "):
        load_model(path)
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(DataError, match=rf"{path}: cannot read the model file"):
        load_model(path)


def test_teacher_that_does_not_fit_the_student_is_rejected(env, tmp_path):
    cfg, kd = ModelConfig.of(env["cfg"]), env["run"].kd
    arch = architecture(cfg, "student", 3)
    cases = {"student": (dict(arch), "is a student model, not a teacher"),
             "classes": (architecture(cfg, "teacher", 5), "predicts 5 classes, the dataset has 3"),
             "widths": (dict(architecture(cfg, "teacher", 3), variant="mit_nano"), "stage widths")}
    for name, (file_arch, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        save_model(path, build_model(file_arch), file_arch, ["rgb"], {})
        with pytest.raises(DataError, match=message):
            T.load_teacher(T.Run("s", "student", ["rgb", "modal"], kd=kd, teacher_path=path), arch, "cpu")


def test_failed_prepare_leaves_no_output(tmp_path, monkeypatch):
    original, count = synthetic._write_scene, [0]

    def failing(*args, **kwargs):
        count[0] += 1
        if count[0] == 3:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_write_scene", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        synthetic.generate_dataset(tmp_path / "prepared", num_train=3, num_test=1, height=24, width=32, seed=0)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary folder


def test_failed_hha_stage_leaves_only_complete_images(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=4, n_test=2)
    raw = (data / "Depth" / "tr2.png").read_bytes()
    (data / "Depth" / "tr2.png").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "hha"
    with pytest.raises(DataError, match=rf"{data}/Depth/tr2\.png: cannot decode the image"):
        hha.convert_dataset(data, out, workers=1)
    written = sorted(p.name for p in out.iterdir())
    assert written and "tr2.png" not in written and not [n for n in written if n.startswith(".")]
    assert all(read_image(out / n, "rgb").shape == (32, 48, 3) for n in written)
