"""The evaluate stage's work: every seed of a run (or one model file or export), last and best epoch, written as
the metrics JSON, the per-image counts for the report's bootstrap and the confusion matrix; beside them the last
epoch's single-scale score on the train split (``eval/<run>.train.json``), the train − test gap."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from torch.utils.data import DataLoader

from primkd.config import EvalConfig, TrainConfig
from primkd.data.dataset import RGBDDataset, hha_input, reads_depth
from primkd.engine.counts import counts_by_mode, write_counts
from primkd.engine.evaluate import evaluate_modes, evaluation_report
from primkd.engine.results import Evaluation
from primkd.engine.runtime import select_device
from primkd.engine.seeds import model_files
from primkd.io import write_text
from primkd.models.io import is_export, load_any

log = logging.getLogger("primkd")


def evaluate_run(model: str | os.PathLike, data: str | os.PathLike, hha: str | os.PathLike | None, cfg: dict,
                 out: str | os.PathLike, per_image: str | os.PathLike | None = None,
                 confusion: str | os.PathLike | None = None, progress: bool = True, split: str = "test",
                 train_out: str | os.PathLike | None = None) -> Evaluation:
    """Evaluate a model on one split of ``data`` (the test split by default) and write the metrics JSON ``out``.

    Args:
        model: a model file, an exported folder, or a student's run folder of ``seed<k>/model.pt`` (the seeds of
            ``cfg["seeds"]``, averaged); a ``model_best.pt`` beside a model file is evaluated as the best epoch.
        data, hha: the prepared dataset and its HHA folder (needed by models that read depth).
        cfg: the resolved parameters (``eval``, ``train.device``/``crop``/``bgr``/``num_workers``, ``seeds``).
        out: evaluation JSON to write (:class:`primkd.engine.results.Evaluation`).
        per_image: per-image counts (.npz) of the reported checkpoint (default: ``<out stem>_per_image.npz``).
        confusion: confusion matrix CSV to write (last epoch, single scale, summed over seeds; rows ground truth).
        progress: show progress bars.
        split: the split scored, ``"test"`` or ``"train"``, either without augmentation (whole images, the same
            modes).
        train_out: also score the last epoch's models single-scale on the train split, into this JSON (the same
            schema, no per-image counts): the evaluate stages' train − test gap, from the networks already loaded.

    Returns:
        The evaluation written.
    """
    t, ev = TrainConfig.of(cfg), EvalConfig.of(cfg)
    device = select_device(t.device)
    results, train_results, loaders, name = {}, {}, {}, None
    # a student's run folder: the seeds of params.yaml, not whatever else the folder holds
    files = {None: Path(model)} if is_export(model) else model_files(model, cfg["seeds"])
    for seed, path in files.items():
        network, meta = load_any(path, device)
        if not loaders:  # the seeds of a run share inputs; imported official weights record that they expect BGR
            hha_root = hha_input(hha, reads_depth(meta["inputs"]), str(path))
            loaders = {s: DataLoader(RGBDDataset(data, s, hha_root, bgr=meta["info"].get("bgr", t.bgr)),
                                     batch_size=ev.batch_size, num_workers=t.num_workers)
                       for s in dict.fromkeys((split, *(("train",) if train_out else ())))}
        name = meta["info"].get("run")
        # The last epoch's model and, when training kept one, the best test-split evaluation's (model_best.pt).
        for checkpoint, file in (("last", path), ("best", path.with_name("model_best.pt"))):
            if checkpoint == "best" and (is_export(model) or not file.is_file()):
                continue
            net, net_meta = (network, meta) if checkpoint == "last" else load_any(file, device)
            # The best epoch's multi-scale test (the costly one) only when the tables report that epoch.
            wanted = None if checkpoint == "last" or ev.checkpoint == "best" else ["single"]
            modes = evaluate_modes(net, loaders[split], len(loaders[split].dataset.classes), meta["inputs"], device,
                                   ev, t.crop, progress=progress, modes=wanted, per_image=True)
            results.setdefault(checkpoint, {})[seed] = (modes, net_meta["info"].get("epoch"))
            _log_modes(file, checkpoint, split, modes)
        if train_out:
            modes = evaluate_modes(network, loaders["train"], len(loaders["train"].dataset.classes), meta["inputs"],
                                   device, ev, t.crop, progress=progress, modes=["single"])
            train_results.setdefault("last", {})[seed] = (modes, meta["info"].get("epoch"))
            _log_modes(path, "last", "train", modes)
    dataset = loaders[split].dataset
    # Per-image counts of the checkpoint the tables report, for the report's paired bootstrap (report.significance).
    counted = "best" if ev.checkpoint == "best" and results.get("best") else "last"
    per_image = Path(per_image or Path(out).with_name(f"{Path(out).stem}_per_image.npz"))
    counts = counts_by_mode({seed: modes for seed, (modes, _) in results[counted].items()})
    write_counts(per_image, counts, counted)
    evaluation = Evaluation(name, len(dataset), evaluation_report(results, dataset.classes, ev),
                            {"file": per_image.name, "checkpoint": counted, "modes": list(counts)}, split)
    evaluation.write(out)
    if train_out:
        train = loaders["train"].dataset
        Evaluation(name, len(train), evaluation_report(train_results, train.classes, ev), split="train").write(
            train_out)
    if confusion:  # last epoch, single scale, summed over seeds
        matrix = sum(modes["single"]["confusion"] for modes, _ in results["last"].values())
        frame = pd.DataFrame(matrix.numpy(), index=dataset.classes, columns=dataset.classes)
        write_text(confusion, frame.to_csv(index_label="ground_truth\\prediction"))
    return evaluation


def _log_modes(file: Path, checkpoint: str, split: str, modes: dict[str, dict]) -> None:
    for mode, m in modes.items():
        log.info("%s (%s, %s, %s split): mIoU %.2f%%, mean acc %.2f%%, pixel acc %.2f%%", file, checkpoint, mode,
                 split, 100 * m["miou"], 100 * m["macc"], 100 * m["pacc"])
