"""The released checkpoints scored by the project's evaluator (primkd.engine.released): official-format tiny files
imported and evaluated on a prepared test split, and one line for a missing or unfitting file."""

import torch
from torch import nn

from primkd.config import load_params
from primkd.engine.evaluate_run import evaluate_run
from primkd.engine.released import evaluate_released
from primkd.engine.results import Evaluation
from primkd.io import read_json
from primkd.models import build_student, build_teacher
from primkd.models.io import save_model

from fake_data import REPO, make_dataset, save_released


def _networks() -> dict[str, nn.Module]:
    """A tiny RGB teacher and a tiny CMX, with BatchNorm statistics that eval mode must read from the files."""
    torch.manual_seed(5)
    nets = {"teacher_rgb": build_teacher("mit_tiny", 3, decoder_embed_dim=16, decoder_bn_eps=1e-5),
            "cmx": build_student("mit_tiny", 3, decoder_embed_dim=16, decoder_bn_eps=1e-5)}
    with torch.no_grad():
        for m in (m for net in nets.values() for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return {name: net.eval() for name, net in nets.items()}


def test_released_files_are_imported_and_scored_as_their_networks(tmp_path):
    torch.set_num_threads(1)
    data = make_dataset(tmp_path / "data", n_train=2, n_test=2, classes=3)
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["train"]["crop"] = [32, 48]
    nets = _networks()
    cfg["eval"]["released"] = {name: str(save_released(tmp_path / f"{name}.pth", net)) for name, net in nets.items()}
    results = evaluate_released(cfg, data, data / "hha", tmp_path, progress=False)
    for name, net in nets.items():
        entry = results[name]
        assert entry["status"] == "evaluated" and entry["arch"]["variant"] == "mit_tiny"
        # the same network saved as a model file that takes BGR input, as every official checkpoint does
        inputs = ["rgb"] if name == "teacher_rgb" else ["rgb", "modal"]
        arch = {"kind": "teacher" if name == "teacher_rgb" else "student", "variant": "mit_tiny", "num_classes": 3,
                "decoder_embed_dim": 16, "decoder_bn_eps": 1e-5}
        save_model(tmp_path / f"{name}.pt", net, arch, inputs, {"run": name, "bgr": True})
        direct = evaluate_run(tmp_path / f"{name}.pt", data, data / "hha", cfg, tmp_path / f"{name}.json",
                              progress=False)
        scored, own = Evaluation.from_json(entry), direct
        for mode in ("single", "multi_scale_flip"):
            assert scored.get("last", mode).per_seed[0].miou == own.get("last", mode).per_seed[0].miou
        assert scored.get().iou == own.get().iou and scored.model == f"released_{name}"
    # the official files take BGR input: the same teacher fed RGB scores otherwise
    save_model(tmp_path / "rgb.pt", nets["teacher_rgb"], {**arch, "kind": "teacher"}, ["rgb"], {"run": "t"})
    rgb = evaluate_run(tmp_path / "rgb.pt", data, None, cfg, tmp_path / "rgb.json", progress=False)
    assert rgb.get().iou != Evaluation.from_json(results["teacher_rgb"]).get().iou


def test_a_missing_or_unfitting_file_gets_one_line(tmp_path, caplog):
    data = make_dataset(tmp_path / "data", n_train=2, n_test=2, classes=4)
    cfg = load_params(REPO / "params.yaml", "smoke")
    cfg["eval"]["released"] = {"teacher_rgb": str(save_released(tmp_path / "t.pth", _networks()["teacher_rgb"])),
                               "cmx": str(tmp_path / "absent.pth")}
    results = evaluate_released(cfg, data, data / "hha", tmp_path, progress=False)
    assert results["cmx"] == {"status": "missing", "note": (
        f"CMX's released NYU Depth V2 model (MiT-B2): {tmp_path / 'absent.pth'} not found; download it from "
        f"https://drive.google.com/file/d/1hlyglGnEB0pnWXfHPtBtCGGlKMDh2K--/view and save it as "
        f"{tmp_path / 'absent.pth'} (eval.released.cmx)")}
    assert results["teacher_rgb"]["status"] == "skipped"
    assert "predicts 3 classes, the prepared dataset has 4" in results["teacher_rgb"]["note"]
    assert results["cmx"]["note"] in caplog.text and "\n" not in results["cmx"]["note"]
    assert read_json(tmp_path / "released_cmx.json") == results["cmx"]


def test_the_teacher_stage_imports_a_teacher_file_and_a_student_distils_from_it(tmp_path):
    """kd.teachers.rgb names an official-format teacher: `primkd train --role teacher` imports it (nothing trained:
    no epoch, empty curves, its SHA-256 in train.json) and a student distils from it; while the file is missing the
    teacher is trained and train.json says it is a fallback."""
    import hashlib
    import json

    import yaml

    from primkd.cli import main
    from primkd.models.io import load_model

    torch.set_num_threads(1)
    data = make_dataset(tmp_path / "data", n_train=2, n_test=2, classes=3)
    teacher = _networks()["teacher_rgb"]
    released = save_released(tmp_path / "nyu-rgb.pth", teacher)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    smoke = params["presets"]["smoke"]
    smoke["kd"] = {"teachers": {"rgb": str(released)}}
    smoke["train"].update(epochs=1, batch_size=2, crop=[32, 48], bgr=True)  # official teachers take BGR
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(tmp_path / "params.yaml"), "--preset", "smoke", "--data", str(data), "--hha",
              str(data / "hha"), "--no-progress"]
    models = tmp_path / "models"
    main(["train", *common, "--role", "teacher", "--modality", "rgb", "--out-dir", str(models / "teacher_rgb")])
    summary = json.loads((models / "teacher_rgb" / "train.json").read_text())
    sha = hashlib.sha256(released.read_bytes()).hexdigest()
    assert summary["epochs"] == 0 and summary["teacher_source"].startswith(f"the file {released} (sha256 {sha})")
    assert (models / "teacher_rgb" / "curves.csv").read_text() == "epoch,loss\n"
    imported, _ = load_model(models / "teacher_rgb" / "model.pt")
    best, _ = load_model(models / "teacher_rgb" / "model_best.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(imported(x)["logits"], teacher(x)["logits"]) and torch.equal(best(x)["logits"],
                                                                                      teacher(x)["logits"])
    main(["train", *common, "--role", "student", "--experiment", "primkd", "--seed", "0", "--teacher-dir",
          str(models), "--out-dir", str(models / "primkd")])
    student = torch.load(models / "primkd" / "model.pt", weights_only=True)["info"]
    assert student["kd"]["teachers"]["rgb"] == str(released) and student["bgr"] is True
    released.unlink()  # the official preset without the file: the teacher is trained, and says so
    main(["train", *common, "--role", "teacher", "--modality", "rgb", "--out-dir", str(models / "fallback"), "--log",
          str(tmp_path / "fallback.log")])
    fallback = json.loads((models / "fallback" / "train.json").read_text())
    assert fallback["epochs"] == 1 and fallback["teacher_source"].startswith(
        f"trained (fallback: kd.teachers.rgb names {released}, which is not there")
    assert (f"kd.teachers.rgb names {released}, which is not there: training the rgb teacher instead"
            in (tmp_path / "fallback.log").read_text())
