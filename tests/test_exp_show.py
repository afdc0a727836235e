"""`make exp-show`: the Makefile's `dvc exp show` flags, applied by DVC's own table code to columns named as this
pipeline's are, keep the params.yaml keys that differ between experiments and CMX's and PrimKD's mIoU, nothing else."""

import re
import shlex
from pathlib import Path

from dvc.commands.experiments.show import show_experiments
from dvc.compare import TabularData

REPO = Path(__file__).resolve().parents[1]

# The kinds of column `dvc exp show` lists on a preset (names as DVC gives them: a key found in one file only has no
# file prefix), each with its values in three experiments: the same value thrice is an unchanged column.
COLUMNS = {
    "Experiment": ["", "", "beta-2"], "rev": ["workspace", "main", "413b1fd"],
    "typ": ["baseline", "baseline", "branch_commit"], "Created": ["", "2026-12-07T23:03", "2026-12-07T23:11"],
    "parent": ["", "", ""], "State": ["-", "-", "-"], "Executor": ["-", "-", "-"],
    # metrics: the evaluations, the teachers' train.json, summary.json
    "results/smoke/eval/primkd.json:last.single.miou_pct": ["0.1", "0.2", "0.3"],
    "results/smoke/eval/primkd.json:last.single.iou_pct.wall": ["0.1", "0.2", "0.3"],
    "results/smoke/models/teacher_rgb/train.json:train_seconds": ["10", "11", "12"],
    "results/smoke/summary.json:preset": ["smoke", "smoke", "smoke"],
    "runs.cmx.miou_pct": ["40", "40", "40"], "runs.primkd.miou_pct": ["10", "20", "30"],
    "runs.primkd.macc_pct": ["10", "20", "30"], "runs.primkd.vs_cmx.delta_pct": ["-30", "-20", "-10"],
    "runs.kd_beta_1.miou_pct": ["50", "60", "70"], "params.kd.beta": ["2.0", "0.05", "0.5"],
    # params: the effective parameters (with the experiments' expanded kd keys and the input digests), params.yaml
    "results/smoke/effective_params.yaml:kd.beta": ["2.0", "0.05", "0.5"],
    "experiments.primkd.kd.beta": ["2.0", "0.05", "0.5"], "inputs.pretrained": ["ab", "cd", "ef"],
    "params.yaml:kd.beta": ["2.0", "0.05", "0.5"], "params.yaml:train.lr": ["0.001", "0.001", "0.001"],
    "params.yaml:experiments.kd_new.teacher": ["rgb", "-", "-"], "train.num_workers": ["0", "2", "2"],
    # deps: code, data, models, the parameter files
    "src/primkd/io.py": ["1a", "2b", "3c"], "data/smoke/prepared": ["1a", "2b", "3c"],
    "results/smoke/models/primkd": ["1a", "2b", "3c"], "params.yaml": ["1a", "2b", "3c"],
    "workflow/schemas/params.schema.yaml": ["1a", "2b", "3c"],
}


def makefile_flags() -> tuple[list[str], list[str]]:
    """The --drop and --keep patterns of EXP_SHOW_FLAGS, as the shell passes them to dvc."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    value = re.search(r"^EXP_SHOW_FLAGS := (.*)$", text, flags=re.M).group(1).replace("$$", "$")
    args = shlex.split(value)
    assert "--only-changed" in args
    return [args[i + 1] for i, a in enumerate(args) if a == "--drop"], \
        [args[i + 1] for i, a in enumerate(args) if a == "--keep"]


def test_exp_show_keeps_the_changed_user_parameters_and_the_headline_miou():
    drop, keep = makefile_flags()
    td = TabularData(list(COLUMNS), fill_value="-")
    for row in zip(*COLUMNS.values()):
        td.append(list(row))
    show_experiments(td, {"metrics": [], "params": [], "deps": []}, keep=keep, drop=drop, pager=False, csv=True,
                     only_changed=True)  # prints the table and leaves td with the columns shown
    assert td.keys() == ["Experiment", "rev", "typ", "Created", "runs.cmx.miou_pct", "runs.primkd.miou_pct",
                      "params.yaml:kd.beta", "params.yaml:experiments.kd_new.teacher", "train.num_workers"]
