# Effective parameters of the active preset, resolved by the same code the stage commands use.
import json

from primkd.config import experiment_kd, resolve

CFG = resolve(config)
PRESET = CFG["preset"]
EXPERIMENTS = list(CFG["experiments"])
MODELS = ["teacher_rgb", "cmx", *EXPERIMENTS]
DATA = f"data/{PRESET}/prepared"
HHA = f"data/{PRESET}/hha"
TRAIN_CODE = ["src/primkd/models", "src/primkd/engine", "src/primkd/distill"]
EVAL_CODE = ["src/primkd/engine/evaluate.py", "src/primkd/engine/metrics.py"]


wildcard_constraints:
    preset=PRESET,
    modality="rgb|depth",
    exp="|".join(EXPERIMENTS) or "^$",


def values(*keys):
    """Effective values of the given dotted keys as a JSON string: a rule's params, so Snakemake reruns a rule
    when (and only when) a value it reads changes, as DVC does with its `params:` lists."""
    out = {}
    for key in keys:
        node = CFG
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return json.dumps(out, sort_keys=True)
