"""Calibrate the synthetic dataset's modality balance with single-modality models and CMX (docs/calibration.md).

One *round* = one set of ``data.synthetic`` knobs: generate the demo dataset with them, encode HHA, train the RGB
teacher, the depth (HHA) teacher and the CMX baseline for each seed on the demo preset, evaluate each on the test
split and (last epoch, single scale) on its train split, and write ``<out>/<round>/result.json`` (knobs, per model and
seed the test mIoU, train mIoU, train − test and per-class test IoU, wall times, load averages; ``summary``: the
round's means over seeds and its targets). PrimKD students are trained only when asked (``models`` lists ``primkd``),
never for calibration.

    python bench/calibrate_synthetic.py run docs/calibration/r6.yaml --out results/calibration
    python bench/calibrate_synthetic.py plot docs/calibration --out docs/calibration.png

A round file is YAML: ``name``, ``knobs`` (data.synthetic keys, ``num_train`` included), optional ``preset`` (demo
preset overrides: any key of params.yaml's sections, one level of nesting merged, e.g. ``{model: {pretrained:
path/to/encoder.pth}, data: {synthetic: {num_train: 40}}, train: {epochs: 120, batch_size: 4}}``; params.yaml's
schema checks them when the round prepares its data), ``seeds`` (default [0, 1, 2]), ``models`` (default [rgb, depth,
cmx]), ``parallel`` (trainings at once, default 2), ``note``. Trainings run with one torch thread each and no
DataLoader workers, so two fit a 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from primkd.engine.metrics import seed_spread
from primkd.engine.results import Evaluation

REPO = Path(__file__).resolve().parents[1]
STUDENTS = ("cmx", "primkd")
TARGET_RATIO = (0.85, 0.97)  # RGB teacher / CMX, from NYU Depth V2's balance (issue 10)
TARGET_GAP = -5.0  # depth teacher − RGB teacher, mIoU points, at most
TARGET_TRAIN_GAP = 15.0  # CMX train − test split mIoU, points, at least: the data-limited regime of NYU (issue 23)


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())  # as `uptime` prints it


def _sh(cmd: str, log: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    start = time.time()
    with open(log, "w") as f:
        if subprocess.call(cmd, shell=True, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO):
            raise RuntimeError(f"{cmd}\nfailed; see {log}")
    return time.time() - start


def _params(spec: dict) -> dict:
    """params.yaml with the round's knobs and preset overrides, trainings pinned to one core each."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["data"]["synthetic"].update(spec.get("knobs", {}))
    base["data"]["workers"] = base["hha"]["workers"] = 1
    base["train"]["num_workers"] = 0
    demo = base["presets"]["demo"]
    demo["train"]["eval_every"] = 0  # the final test evaluation is all a round reads
    for section, over in spec.get("preset", {}).items():
        for key, value in over.items():
            target = demo.setdefault(section, {})
            target[key] = {**target.get(key, {}), **value} if isinstance(value, dict) else value
    return base


def run_round(spec: dict, out_root: Path) -> dict:
    out = out_root / spec["name"]
    out.mkdir(parents=True, exist_ok=True)
    base = _params(spec)
    (out / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    data, hha = out / "prepared", out / "hha"
    result = {"name": spec["name"], "note": spec.get("note", ""), "knobs": base["data"]["synthetic"],
              "preset": spec.get("preset", {}), "seeds": spec.get("seeds", [0, 1, 2]), "load_start": _load(),
              "runs": {}}
    if not (data / "meta.json").exists():
        _sh(f"primkd prepare --params {out}/params.yaml --out {data} --no-progress", out / "prepare.log")
        _sh(f"primkd hha --params {out}/params.yaml --data {data} --out {hha} --no-progress", out / "hha.log")
    jobs = [(m, s) for s in result["seeds"] for m in spec.get("models", ["rgb", "depth", "cmx"])]

    def work(job: tuple[str, int]) -> tuple[str, dict]:
        model, seed = job
        params = copy.deepcopy(base)
        params["train"]["seed"], params["seeds"] = seed, [seed]
        pfile = out / f"params_{model}_{seed}.yaml"
        pfile.write_text(yaml.safe_dump(params, sort_keys=False))
        run = out / f"{model}_s{seed}"
        student = model in STUDENTS
        role = {"cmx": "--role student",
                "primkd": f"--role student --experiment primkd --teacher {out}/rgb_s0/model.pt"}  # one teacher
        role = role.get(model, f"--role teacher --modality {model}")
        done = run / (f"seed{seed}/train.json" if student else "train.json")
        if not done.exists():
            _sh(f"primkd train --params {pfile} {role} --seed {seed} --data {data} --hha {hha} --out-dir {done.parent} "
                f"--checkpoint-dir {out}/ckpt_{model}_{seed} --no-progress", out / f"train_{model}_{seed}.log")
        load = _load()
        model_path = run if student else run / "model.pt"
        # the evaluate stages' command: the test split in both modes, the train split single-scale beside it
        _sh(f"primkd evaluate --params {pfile} --model {model_path} --data {data} --hha {hha} --out {run}/eval.json "
            f"--train-out {run}/eval.train.json --no-progress", out / f"eval_{model}_{seed}.log")
        ev = Evaluation.read(run / "eval.json").get("last", "single")
        (miou, _, _), (train, _, _) = ev.spread("miou"), Evaluation.read(run / "eval.train.json").get().spread("miou")
        return f"{model}_s{seed}", {"miou": miou, "train_miou": train, "train_gap": train - miou,
                                    "wall_s": json.loads(done.read_text())["train_seconds"], "load_end": load,
                                    "iou": {k: v for k, v in ev.iou.items() if v is not None}}

    with ThreadPoolExecutor(spec.get("parallel", 2)) as pool:
        for key, res in pool.map(work, jobs):
            result["runs"][key] = res
            print(spec["name"], key, f"test {100 * res['miou']:.1f}", f"train {100 * res['train_miou']:.1f}",
                  f"{res['wall_s']:.0f}s", res["load_end"], flush=True)
    result["load_end"] = _load()
    result["summary"] = summarize(result)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(summary_text(result), end="", flush=True)
    return result


def summarize(result: dict) -> dict:
    """``models``: per model ``test``, ``train`` (where measured) and ``train_gap`` (train − test, seed by seed), each
    the mIoU (points) mean, sample std and count over seeds; per round, of the means: ``ratio`` RGB / CMX, ``gap``
    depth − RGB, ``cmx_train_gap`` CMX's train − test."""
    values: dict[str, dict[str, list[float]]] = {}
    for key, run in result["runs"].items():
        model = values.setdefault(key.rsplit("_s", 1)[0], {})
        model.setdefault("test", []).append(100 * run["miou"])
        if "train_miou" in run:  # rounds before issue 23 scored the test split only
            model.setdefault("train", []).append(100 * run["train_miou"])
            model.setdefault("train_gap", []).append(100 * run["train_gap"])
    # one seed has no spread: 0 here, where the tables print it as a number
    models = {m: {split: (mean, std or 0.0, n) for split, v in by.items() for mean, std, n in [seed_spread(v)]}
              for m, by in values.items()}
    out: dict = {"models": models}
    if "rgb" in models and "cmx" in models:
        out["ratio"] = models["rgb"]["test"][0] / models["cmx"]["test"][0]
    if "rgb" in models and "depth" in models:
        out["gap"] = models["depth"]["test"][0] - models["rgb"]["test"][0]
    if "train_gap" in models.get("cmx", {}):
        out["cmx_train_gap"] = models["cmx"]["train_gap"][0]
    return out


# The round's targets (docs/calibration.md): label, key of summarize(), target as printed, value format, test.
TARGETS = (("RGB / CMX", "ratio", f"{TARGET_RATIO[0]}-{TARGET_RATIO[1]}", ".3f",
            lambda v: TARGET_RATIO[0] <= v <= TARGET_RATIO[1]),
           ("depth − RGB", "gap", f"<= {TARGET_GAP:+g}", "+.1f", lambda v: v <= TARGET_GAP),
           ("CMX train − test", "cmx_train_gap", f">= {TARGET_TRAIN_GAP:+g}", "+.1f", lambda v: v >= TARGET_TRAIN_GAP))


def _spread(stat: tuple[float, float, int], sign: str = "") -> str:
    return f"{stat[0]:{sign}.1f} ± {stat[1]:.1f}"


def summary_text(result: dict) -> str:
    """What a round prints at its end: per model and seed the test and train mIoU and train − test, per model their
    means over seeds, and the round's targets, each marked met or not."""
    s = summarize(result)
    lines = [f"round {result['name']}: mIoU (points), last epoch, single scale",
             "  model   seed   test   train  train − test"]
    for key, run in result["runs"].items():
        model, seed = key.rsplit("_s", 1)
        train = (f"{100 * run['train_miou']:6.1f}  {100 * run['train_gap']:+6.1f}" if "train_miou" in run
                 else "     —       —")
        lines.append(f"  {model:<7}{seed:>5} {100 * run['miou']:6.1f}  {train}")
    for model, stats in s["models"].items():
        train = (f", train {_spread(stats['train'])}, train − test {_spread(stats['train_gap'], '+')}"
                 if "train" in stats else "")
        lines.append(f"  {model}: test {_spread(stats['test'])} (n = {stats['test'][2]}){train}")
    for label, key, target, fmt, met in TARGETS:
        value = f"{s[key]:{fmt}} ({'met' if met(s[key]) else 'NOT met'})" if key in s else "not measured"
        lines.append(f"  {label}: {value}; target {target}")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], out_png: Path) -> None:
    """mIoU per model, RGB/CMX ratio and depth − RGB gap per round (targets shaded); per-class IoU of the last round."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.2), dpi=110)
    ax_miou, ax_ratio, ax_gap, ax_cls = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 2.2]})
    names = [r["name"] for r in results]
    stats = [summarize(r) for r in results]
    x = np.arange(len(results))
    for model, color in (("rgb", "tab:blue"), ("depth", "tab:orange"), ("cmx", "tab:green")):
        mean = [s["models"][model]["test"][0] if model in s["models"] else np.nan for s in stats]
        std = [s["models"][model]["test"][1] if model in s["models"] else np.nan for s in stats]
        ax_miou.errorbar(x, mean, yerr=std, fmt="o", color=color, capsize=3, label=model)
    ax_miou.set(xticks=x, xticklabels=names, title="mIoU (points; mean ± std over seeds)")
    ax_miou.legend(fontsize=8)
    ax_ratio.axhspan(*TARGET_RATIO, color="tab:green", alpha=0.15, label="target")
    ax_ratio.plot(x, [s.get("ratio", np.nan) for s in stats], "o", color="tab:blue")
    ax_ratio.set(xticks=x, xticklabels=names, title="RGB teacher / CMX", ylim=(0.6, 1.05))
    ax_ratio.legend(loc="upper left", fontsize=8)
    ax_gap.axhspan(-30, TARGET_GAP, color="tab:green", alpha=0.15, label="target")
    ax_gap.plot(x, [s.get("gap", np.nan) for s in stats], "o", color="tab:red")
    ax_gap.set(xticks=x, xticklabels=names, title="depth − RGB teacher (points)", ylim=(-25, 5))
    ax_gap.legend(loc="upper right", fontsize=8)
    # rounds from r7 on run the official recipe (mean-colour crop padding), which moved the RGB teacher by 6-7 points
    if "r7" in names:
        for ax in (ax_miou, ax_ratio, ax_gap):
            ax.axvline(names.index("r7") - 0.5, color="grey", ls=":", lw=1)
        ax_ratio.text(names.index("r7") - 0.4, 0.62, "official\nrecipe →", fontsize=7, color="grey")
    last = results[-1]
    classes = list(next(iter(last["runs"].values()))["iou"])
    width = 0.27
    for i, model in enumerate(("rgb", "depth", "cmx")):
        runs = [r for k, r in last["runs"].items() if k.rsplit("_s", 1)[0] == model]
        if runs:
            iou = [np.mean([r["iou"].get(c, np.nan) for r in runs]) for c in classes]
            ax_cls.bar(np.arange(len(classes)) + (i - 1) * width, iou, width, label=model)
    ax_cls.set_xticks(np.arange(len(classes)), classes, rotation=60, fontsize=7)
    ax_cls.set(title=f"per-class IoU, round {last['name']} (mean over seeds)", ylim=(0, 1.12))
    ax_cls.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(out_png)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Run one calibration round.")
    run.add_argument("spec", type=Path, help="Round file (YAML).")
    run.add_argument("--out", type=Path, default=REPO / "results" / "calibration", help="Folder of the rounds' runs.")
    fig = sub.add_parser("plot", help="Plot the rounds found in a folder (in name order).")
    fig.add_argument("runs", type=Path, help="Folder of <round>/result.json files.")
    fig.add_argument("--out", type=Path, required=True, help="PNG to write.")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_round(yaml.safe_load(args.spec.read_text()), args.out)
        return
    results = [json.loads(p.read_text()) for p in sorted(args.runs.glob("*/result.json"))]
    if not results:
        sys.exit(f"{args.runs}: no <round>/result.json; run a round first")
    plot(results, args.out)


if __name__ == "__main__":
    main()
