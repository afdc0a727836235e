"""The pipeline stages' sub-commands: ``params``, ``download``, ``prepare``, ``hha``, ``train``, ``evaluate``.

DVC (dvc.yaml) and Snakemake (workflow/rules/*.smk) run exactly these command strings; every path is an argument.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from primkd.cli.options import add_command, load_config, stage_config, use_threads

log = logging.getLogger("primkd")


def cmd_params(args: argparse.Namespace) -> None:
    """Write the effective parameters (preset and experiment overrides applied); the file is left untouched when
    its contents would not change. With ``--dvc-yaml`` (dvc.yaml's command: the first stage of every DVC run), that
    file's student stages must match params.yaml's experiments: it lists them, grouped by teacher."""
    import yaml

    from primkd.config import effective_params, shadowed_edits
    from primkd.io import write_text

    cfg = load_config(args)
    for warning in shadowed_edits(args.params, cfg["preset"]):
        log.warning("%s", warning)
    if args.dvc_yaml:
        from primkd.stages import check_dvc_groups

        check_dvc_groups(args.dvc_yaml, cfg, args.params)
    text = yaml.safe_dump(effective_params(cfg), sort_keys=False, width=120)
    out = Path(args.out)
    if not out.is_file() or out.read_text() != text:
        write_text(out, text)
    log.info("effective parameters of preset %s: %s", cfg["preset"], out)


def cmd_download(args: argparse.Namespace) -> None:
    from primkd.data.prepare import fetch_sources, link_raw_files

    data = load_config(args)["data"]
    files = fetch_sources(data)
    link_raw_files(files, args.out)
    log.info("raw files of the %s source in %s: %s", data["source"], args.out, ", ".join(p.name for p in files.values())
             or "none needed")


def cmd_prepare(args: argparse.Namespace) -> None:
    from primkd.data.prepare import prepare_dataset

    data = stage_config(args)[0]["data"]
    prepare_dataset(data, args.out, raw_dir=args.raw)
    log.info("prepared %s dataset in %s", data["source"], args.out)


def cmd_hha(args: argparse.Namespace) -> None:
    from primkd.config import ConfigError
    from primkd.data import hha

    if args.depth:
        missing = [k for k in ("fx", "fy", "cx", "cy") if getattr(args, k) is None]
        if not args.out:
            missing.append("out")
        if missing:
            raise ConfigError(f"converting one depth file needs --out and the intrinsics --fx --fy --cx --cy "
                             f"(1-based principal point); missing: {', '.join(missing)}")
        intrinsics = {k: getattr(args, k) for k in ("fx", "fy", "cx", "cy")}
        hha.hha_from_file(args.depth, args.out, intrinsics, depth_scale=args.depth_scale)
        log.info("wrote %s", args.out)
        return
    if not (args.data and args.out):
        raise ConfigError("give --data and --out to convert a prepared dataset, or --depth FILE to convert one file")
    from primkd.data.layout import read_meta
    from primkd.data.prepare import link_imported_hha

    threads = use_threads(args, load_config(args))
    if read_meta(args.data).get("hha_dir"):
        link_imported_hha(args.data, args.out)
    else:
        counts = hha.convert_dataset(args.data, args.out, workers=threads.workers, force=args.force)
        log.info("HHA in %s: %s", args.out, counts)
    if args.contact_sheet:
        from primkd.data.viz import contact_sheet

        contact_sheet(args.data, args.contact_sheet, hha_root=args.out)
        log.info("contact sheet of test images: %s", args.contact_sheet)


def _run_from_args(args: argparse.Namespace, cfg: dict):
    from primkd.config import ConfigError, experiment_kd
    from primkd.data.dataset import MODALITY_INPUTS, STUDENT_INPUTS
    from primkd.engine.train import Run

    if args.role == "teacher":
        return Run(name=f"teacher_{args.modality}", kind="teacher", inputs=list(MODALITY_INPUTS[args.modality]),
                   info={"modality": args.modality})
    if args.experiment is None:
        return Run(name="cmx", kind="student", inputs=list(STUDENT_INPUTS))
    kd = experiment_kd(cfg, args.experiment)
    if args.teacher is None and args.teacher_dir is None:
        raise ConfigError(f"experiment {args.experiment!r} distils from a teacher: pass --teacher MODEL.pt or "
                         f"--teacher-dir (which holds teacher_{kd.teacher_modality}/model.pt)")
    teacher = Path(args.teacher) if args.teacher else Path(args.teacher_dir) / f"teacher_{kd.teacher_modality}" \
        / "model.pt"
    if kd.teacher_file is not None and kd.teacher_file != cfg["kd"]["teachers"][kd.teacher_modality]:
        teacher = Path(kd.teacher_file)  # the experiment's own teacher file (the preset's is the teacher stage's)
        if not teacher.is_file():
            raise ConfigError(f"experiment {args.experiment!r}: its kd.teachers.{kd.teacher_modality} names {teacher}, "
                              f"which is not there; place the file there or remove the entry from the experiment")
    return Run(name=args.experiment, kind="student", inputs=list(STUDENT_INPUTS), kd=kd, teacher_path=teacher)


def _teacher_from_file(args: argparse.Namespace, cfg: dict, run) -> bool:
    """``kd.teachers.<modality>`` names a file: import it when it is there (True: nothing to train); while it is
    missing, say that the teacher is trained instead and record it in the run (its train.json and the report)."""
    from primkd.config import TRAINED_TEACHER

    source = cfg["kd"]["teachers"][args.modality]
    if source == TRAINED_TEACHER:
        return False
    if Path(source).is_file():
        from primkd.engine.released import teacher_from_file

        teacher_from_file(source, args.modality, args.data, args.out_dir)
        return True
    note = (f"kd.teachers.{args.modality} names {source}, which is not there: training the {args.modality} teacher "
            f"instead (fallback); place the file there to distil from it (README, Released checkpoints)")
    log.warning("%s: %s", run.name, note)
    run.info["teacher_source"] = f"trained (fallback: {note})"
    return False


TRAIN_ENTRY = "primkd.cli.pipeline:cmd_train"


def training_code() -> dict[str, str]:
    """SHA-256 of each file of the training stages' code closure (the code dependencies DVC and Snakemake list),
    by repository path: the checkpoint fingerprint's ``code``.

    ``primkd.stages`` is imported by name, not with an import statement, so that the stage table does not join the
    closure itself: it chooses which files to digest and computes nothing of a result, and an edit of it must not
    retrain every network.
    """
    from primkd.io import file_digests

    stages = importlib.import_module("primkd.stages")
    return file_digests(stages.code_closure(TRAIN_ENTRY), stages.REPO_ROOT)


def cmd_train(args: argparse.Namespace) -> None:
    """Train one network, with ``--seed`` (default train.seed), into ``--out-dir``; a student's seeds are one
    pipeline stage each."""
    from primkd.engine.distributed import cleanup
    from primkd.engine.train import train

    cfg, threads = stage_config(args)
    run = _run_from_args(args, cfg)
    if run.kind == "teacher" and _teacher_from_file(args, cfg, run):
        return
    run.code = training_code()
    if args.seed is not None:
        cfg["train"]["seed"] = args.seed
    summary = train(cfg, run, Path(args.data), Path(args.hha) if args.hha else None, Path(args.out_dir),
                    progress=not args.no_progress,
                    checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None, threads=threads)
    if summary:  # rank 0 (the only rank outside torchrun)
        log.info("%s (seed %d) done: test mIoU %.2f%% (single scale), %.1f s", run.name, cfg["train"]["seed"],
                 100 * summary["test_miou_single_scale"], summary["train_seconds"])
    cleanup()


def cmd_evaluate(args: argparse.Namespace) -> None:
    from primkd.engine.evaluate_run import evaluate_run

    evaluate_run(args.model, args.data, args.hha, stage_config(args)[0], args.out, per_image=args.per_image,
                 confusion=args.confusion, progress=not args.no_progress, split=args.split, train_out=args.train_out)


def cmd_evaluate_released(args: argparse.Namespace) -> None:
    from primkd.engine.released import evaluate_released

    evaluate_released(stage_config(args)[0], args.data, args.hha, args.out_dir, progress=not args.no_progress)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the pipeline stages' sub-commands to ``primkd``'s sub-parsers."""

    p = add_command(sub, "params", cmd_params,
                  "Write the effective parameters of a preset (its overrides and each experiment's applied).")
    p.add_argument("--out", required=True, help="YAML file to write.")
    p.add_argument("--dvc-yaml", help="Also check that this dvc.yaml lists the experiments of the parameter file "
                                      "(DVC runs: its student stages are written out per teacher).")

    p = add_command(sub, "download", cmd_download,
                  "Download (or find, placed by hand) the raw files of data.source into data.raw_dir; resumable.")
    p.add_argument("--out", required=True,
                   help="Folder that receives links to the raw files (the pipeline's record of them; empty for the "
                        "synthetic and folder sources).")

    p = add_command(sub, "prepare", cmd_prepare,
                  "Produce the prepared dataset layout (RGB, Depth, Label, splits, meta.json).")
    p.add_argument("--out", required=True, help="Output folder of the prepared dataset.")
    p.add_argument("--raw", help="Folder of the raw files (the download stage's --out); default: fetch them now.")

    p = add_command(sub, "hha", cmd_hha, "Encode depth as HHA: a whole prepared dataset, or one depth file.")
    p.add_argument("--data", help="Prepared dataset folder to convert.")
    p.add_argument("--out", help="Output folder (dataset) or PNG file (single depth file).")
    p.add_argument("--force", action="store_true", help="Re-encode images whose HHA is already up to date.")
    p.add_argument("--contact-sheet", help="Also write a PNG of the first test images: RGB, depth, label, HHA.")
    p.add_argument("--depth", help="One depth file: uint16 PNG in millimetres or float .npy in metres.")
    p.add_argument("--depth-scale", type=float, default=1000.0, help="PNG depth units per metre.")
    for k in ("fx", "fy", "cx", "cy"):
        p.add_argument(f"--{k}", type=float, help=f"Camera {k} in pixels (principal point 1-based).")

    p = add_command(sub, "train", cmd_train, "Train the teacher, the CMX baseline or a distilled PrimKD student.")
    p.add_argument("--role", choices=["teacher", "student"], required=True, help="Network to train.")
    p.add_argument("--modality", choices=["rgb", "depth"], default="rgb", help="Input of a teacher.")
    p.add_argument("--experiment", help="Student experiment name in params.yaml `experiments` (omit for CMX).")
    p.add_argument("--teacher", help="Teacher model file for a distilled student.")
    p.add_argument("--teacher-dir",
                   help="Instead of --teacher: the folder of teacher_rgb/ and teacher_depth/; the experiment's "
                        "`teacher` picks the model.pt.")
    p.add_argument("--seed", type=int,
                   help="Train with this seed instead of train.seed (the pipeline passes each entry of `seeds` to a "
                        "student's stage of that seed).")
    p.add_argument("--data", required=True, help="Prepared dataset folder.")
    p.add_argument("--hha", help="HHA folder (needed by students and depth teachers).")
    p.add_argument("--checkpoint-dir",
                   help="Resumable training-state checkpoints (default <out-dir>/checkpoints); rerunning resumes "
                        "from them.")
    p.add_argument("--out-dir", required=True, help="Folder of model.pt, curves.csv, eval_curve.csv, train.json.")

    p = add_command(sub, "evaluate-released", cmd_evaluate_released,
                    "Import and evaluate the published checkpoints of eval.released that are there (both modes).")
    p.add_argument("--data", required=True, help="Prepared dataset folder.")
    p.add_argument("--hha", help="HHA folder (the CMX checkpoint reads depth).")
    p.add_argument("--out-dir", required=True,
                   help="Folder of the released_<entry>.json files (results/<preset>/eval).")

    p = add_command(sub, "evaluate", cmd_evaluate,
                    "Evaluate a model on the test (or train) split, single-scale and multi-scale + flip.")
    p.add_argument("--model", required=True,
                   help="Model file, exported folder, or a student folder of seed<k>/model.pt (averaged over seeds).")
    p.add_argument("--data", required=True, help="Prepared dataset folder.")
    p.add_argument("--hha", help="HHA folder (needed by models that read depth).")
    p.add_argument("--out", required=True, help="Metrics JSON to write.")
    p.add_argument("--split", choices=["test", "train"], default="test",
                   help="Split of the prepared dataset to score, without augmentation either way (the JSON's `split`).")
    p.add_argument("--train-out",
                   help="Also score the last epoch's model single-scale on the train split into this JSON (the "
                        "evaluate stages' eval/<run>.train.json: the train − test gap).")
    p.add_argument("--confusion", help="Confusion matrix CSV to write (rows ground truth).")
    p.add_argument("--per-image", help="Per-image counts (.npz) to write for the report's bootstrap (default: "
                                       "<out stem>_per_image.npz beside --out).")
