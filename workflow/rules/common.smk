# Effective parameters of the active preset, resolved by the same code the stage commands use, and the stage table
# (src/primkd/stages.py) that dvc.yaml is generated from: every rule takes its command, inputs, outputs, log and
# parameter values from it, so the two tools cannot drift apart.
import json
import re

from primkd import stages as ST
from primkd.config import effective_params, resolve

CFG = resolve(config)
PRESET = CFG["preset"]
EFFECTIVE = effective_params(CFG)
EXPERIMENTS = list(CFG["experiments"])
MAIN_MODELS = ["teacher_rgb", "cmx", "primkd"]

# primkd #25 hook, content not time: an output edited in place (an image in a folder output) or replaced by an older
# file (a teacher model.pt) gets a new `outputs` parameter in stage_params, so its job and everything after it rerun.
from primkd.io import OutputRecords; RECORDS = OutputRecords(".snakemake/primkd-outputs.json")  # noqa
if workflow.is_main_process:
    RECORDS.changed(ST.fill(o.path, PRESET, s, i) for s in ST.STAGES for i in ST.loop_items(s, CFG) for o in s.outs)
    workflow.onsuccess(lambda log: RECORDS.record_rewritten())
    workflow.onerror(lambda log: RECORDS.record_rewritten())


wildcard_constraints:
    preset=PRESET,
    modality="|".join(ST.MODALITIES),
    exp="|".join(map(re.escape, EXPERIMENTS)),
    seed="|".join(map(str, CFG["seeds"])),


def stage_input(name):
    """Code files, other files and the stage's inputs (see primkd.stages.smk_inputs)."""
    return ST.smk_inputs(ST.stage(name), PRESET, CFG)


def stage_output(name):
    return [directory(path) if folder else path for path, folder in ST.smk_outputs(ST.stage(name), PRESET)]


def stage_params(name):
    """`values`: the effective values of the keys the stage reads, as JSON, so Snakemake reruns a job when (and only
    when) one of them changes, as DVC does with its params. EFFECTIVE is computed when the Snakefile is read, so its
    `inputs` digests (ImageNet weights, a folder source) are current on every run."""
    s = ST.stage(name)
    item = lambda w: {v: getattr(w, v) for v in s.loop} if s.loop else None  # noqa: E731
    # `outputs` (primkd #25 hook): RECORDS.token, new when an output of the job was changed by someone else
    return {"values": lambda w: json.dumps(ST.smk_values(s, EFFECTIVE, item(w)), sort_keys=True),
            "outputs": lambda w: RECORDS.token(p.format(**dict(w.items())) for p, _ in ST.smk_outputs(s, PRESET))}


def stage_log(name):
    return ST.smk_log(ST.stage(name), PRESET)


def stage_shell(name):
    return ST.smk_shell(ST.stage(name), PRESET)


def job_resources(stage):
    """Resources of a `stage` job (prepare, hha, train, evaluate) from params.yaml `resources` (preset applied), in the
    names the SLURM executor plugin reads: mem_mb (--mem, MiB), runtime (-t, minutes), cpus_per_task
    (--cpus-per-task) and gpu (--gpus, left out when the stage asks for 0 GPUs so no GPU is requested).
    Local runs ignore them except threads, which the rules take from cpus_per_task."""
    res = CFG["resources"][stage]
    out = {"mem_mb": res["mem_mb"], "runtime": res["runtime"], "cpus_per_task": res["cpus_per_task"]}
    if res["gpus"] > 0:
        out["gpu"] = res["gpus"]
    return out
