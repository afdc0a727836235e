"""dvc.yaml, generated from the stage table (:mod:`primkd.stages.table`), and the check that the file lists the
experiments of params.yaml.

DVC's matrix cannot look up a value of the experiment it loops over (``${experiments.${item.exp}.teacher}`` does
not parse), so ``dvc.yaml`` gets one student stage per teacher modality, each over the experiments of params.yaml
with that teacher, written out when the file is generated: ``train_student`` (RGB teacher, the method) and
``train_student_depth`` (depth teacher), see :func:`dvc_name`. The ``resolve_params`` stage, which every DVC run
starts with, fails with one line when that grouping no longer matches params.yaml (:func:`check_dvc_groups`, run by
``primkd params --dvc-yaml dvc.yaml``, a flag that only dvc.yaml's command passes: a Snakemake run does not wait for
dvc.yaml to be regenerated).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from primkd.config import ConfigError
from primkd.stages.closure import code_closure
from primkd.stages.table import EFFECTIVE_PARAMS, LOOPS, MODALITIES, MODELS, STAGES, Stage, param_keys, substitute

# Training curves of the first seed (`dvc plots show`); the teachers' are declared with their stages.
DVC_PLOTS = [
    {f"{MODELS}/cmx/seed0/curves.csv": {"x": "epoch", "y": ["loss", "seg"]}},
    {f"{MODELS}/primkd/seed0/curves.csv": {"x": "epoch", "y": ["loss", "seg", "pred", "feat"]}},
    {f"{MODELS}/primkd/seed0/eval_curve.csv": {"x": "epoch", "y": "miou"}},
]


def dvc_name(s: Stage, group: str | None = None) -> str:
    """The name in dvc.yaml of a stage, or of one of its groups: the stage's own name for the RGB teacher (the
    method's, and the demo's), ``<name>_<value>`` for the others (``train_student_depth``)."""
    return s.name if group is None or group == MODALITIES[0] else f"{s.name}_{group}"


def dvc_groups(s: Stage, cfg: dict) -> dict[str, list[str]]:
    """A grouped stage's entries in dvc.yaml (each named :func:`dvc_name`): group value (a teacher modality) -> the
    experiments with that value, in params.yaml's order (only values that have experiments; the RGB teacher's
    first)."""
    groups = {value: [e for e, entry in cfg["experiments"].items() if entry[s.group_by] == value]
              for value in MODALITIES}
    return {value: exps for value, exps in groups.items() if exps}


def instance_name(s: Stage, item: dict | None) -> str:
    """DVC's name of one stage instance (its matrix naming): ``train_student@primkd-0``,
    ``train_student_depth@kd_teacher_depth-0``."""
    if item is None:
        return s.name
    return f"{dvc_name(s, item.get(s.group_by))}@{'-'.join(str(item[v]) for v in s.loop)}"


def check_dvc_groups(dvc_yaml: str | Path, cfg: dict, params: str | Path = "params.yaml") -> None:
    """Fail with one line when the student groups written into ``dvc_yaml`` (see :func:`dvc_groups`) differ from the
    experiments of the parameters ``cfg`` (read from ``params``): after adding an experiment or changing its
    teacher (also with ``dvc exp run -S``) DVC would otherwise skip its training or give it the wrong teacher."""
    stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {})
    problems = []
    for s in (s for s in STAGES if s.group_by):
        names = {dvc_name(s, value): value for value in MODALITIES}
        written = {}
        for name in (n for n in names if isinstance(stages.get(n), dict)):
            exps = stages[name].get("matrix", {}).get("exp")
            if not isinstance(exps, list):  # written by a version that did not group the students
                problems.append(f"{name} does not list its experiments")
            written.update(dict.fromkeys(exps if isinstance(exps, list) else [], name))
        wanted = {e: dvc_name(s, value) for value, exps in dvc_groups(s, cfg).items() for e in exps}
        missing: dict[str, list[str]] = {}
        for exp in cfg["experiments"]:
            if exp not in written:
                missing.setdefault(wanted[exp], []).append(exp)
            elif written[exp] != wanted[exp]:
                problems.append(f"{written[exp]} lists {exp}, but experiments.{exp}.{s.group_by} is "
                                f"{names[wanted[exp]]}: it belongs in {wanted[exp]}")
        problems += [f"{name} lacks {', '.join(exps)} ({s.group_by} {names[name]})" for name, exps in missing.items()]
        extra: dict[str, list[str]] = {}
        for exp in (e for e in written if e not in wanted):
            extra.setdefault(written[exp], []).append(exp)
        problems += [f"{name} lists {', '.join(exps)}, not in experiments" for name, exps in extra.items()]
    if problems:
        raise ConfigError(f"{dvc_yaml} does not match the experiments of {params}: {'; '.join(problems)}; "
                          f"regenerate {Path(dvc_yaml).name} with `python -m primkd.stages --write`")


DVC_HEADER = """\
# GENERATED from the stage table (src/primkd/stages/table.py) by `python -m primkd.stages --write`: edit the table,
# not this file (tests/test_pipelines.py fails when the two differ). workflow/rules/*.smk are generated from the same
# table: the same commands, inputs, outputs and parameters.
#
# Code dependencies are the source files each stage's command may execute (the import closure of its CLI
# function). Parameter dependencies are the exact leaf keys each stage reads, taken from
# results/<preset>/effective_params.yaml, which the resolve_params stage writes from params.yaml with the preset's
# and each experiment's overrides applied: every preset has every key there, so DVC never meets a missing key, and
# `dvc exp run -S preset=smoke`, `-S kd.beta=0.1` or `-S presets.smoke.train.lr=0.01` all work. After editing
# params.yaml, `dvc status` lists resolve_params only; `dvc repro resolve_params && dvc status` shows exactly
# which stages the edit reaches, and `dvc repro` reruns just those.
#
# Input files whose path is a parameter (the ImageNet weights of model.pretrained, the data.folder.path tree) enter
# as digests: effective_params.yaml `inputs`, on which the training stages and prepare depend. resolve_params is
# always_changed, so `dvc status` always lists it and every `dvc repro` recomputes the digests; a stage reruns only
# when one it depends on changed.
"""


def _dvc(template: str, s: Stage, group: str | None = None) -> str:
    """A template in DVC's syntax: ``${preset}``, ``${item.<loop variable>}``, the group's value written out."""
    values = {"preset": "${preset}", **{v: f"${{item.{v}}}" for v in LOOPS}}
    if s.group_by:
        values[s.group_by] = group
    values["log"] = substitute(s.log, values)
    return substitute(template, values)


def dvc_stage(s: Stage, effective: dict, group: tuple[str, list[str]] | None = None) -> dict:
    """The ``dvc.yaml`` entry of a stage, or of one group of a grouped stage: (group value, its experiments)."""
    value = group[0] if group else None
    body: dict = {"cmd": _dvc(" ".join(filter(None, (s.cmd, s.dvc_flags))), s, value),
                  "deps": [*code_closure(s.entry), *s.files, *(_dvc(d, s, value) for d in s.deps)]}
    keys = [_dvc(k, s) for k in param_keys(s, effective)]
    if keys:  # a shipped stage's keys are params.yaml's own (its output is an input of resolve_params)
        body["params"] = [{"params.yaml" if s.shipped else _dvc(EFFECTIVE_PARAMS, s): keys}]
    for kind, section in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
        entries = []
        for out in (o for o in s.outs if o.kind == kind):
            options = {**({} if out.cache else {"cache": False}), **(out.plot or {})}
            entries.append({_dvc(out.path, s, value): options} if options else _dvc(out.path, s, value))
        if entries:
            body[section] = entries
    if s.always_changed:
        body["always_changed"] = True
    if s.shipped:  # run from the repository root, as the stages of dvc.yaml
        body = {"wdir": "/".join(".." for _ in Path(s.shipped).parts), **body}
    if s.loop:
        loops = {v: LOOPS[v].dvc for v in s.loop}  # a grouped stage's experiments are written out
        if group:
            loops["exp"] = list(group[1])
        return {"matrix": loops, **body}
    return body


def render_dvc(params_path: str | Path = "params.yaml") -> str:
    """The text of ``dvc.yaml``: the header, each stage (its comment above it), the global plots."""
    from primkd.config import effective_params, load_params

    cfg = load_params(params_path)
    effective = effective_params(cfg)
    parts = [DVC_HEADER, "stages:\n"]
    for s in (s for s in STAGES if not s.shipped):
        entries = [(s.name, dvc_stage(s, effective), s.comment)]
        if s.group_by:
            entries = [(dvc_name(s, value), dvc_stage(s, effective, (value, exps)),
                        s.comment if i == 0 else f"As {s.name}, for the experiments whose {s.group_by} is {value}.")
                       for i, (value, exps) in enumerate(dvc_groups(s, cfg).items())]
        for name, body, comment in entries:
            text = yaml.safe_dump({name: body}, sort_keys=False, width=120)
            text = "".join(f"  {line}\n" for line in text.splitlines())
            comment = "".join(f"  # {line}\n" for line in wrap(comment)) if comment else ""
            parts.append(f"\n{comment}{text}")
    parts.append("\n# Training curves of the first seed (`dvc plots show`); the teachers' are declared with their "
                 "stages.\n")
    parts.append(yaml.safe_dump({"plots": [{_dvc(k, STAGES[0]): v for k, v in p.items()} for p in DVC_PLOTS]},
                                sort_keys=False, width=120))
    return "".join(parts)


SHIPPED_HEADER = """\
# GENERATED from the stage table (src/primkd/stages/table.py) by `python -m primkd.stages --write`, as ../dvc.yaml is.
# A stage whose outputs are committed with the repository, in a dvc.yaml of its own so that its dvc.lock is committed
# with them (the main dvc.lock is not): a fresh clone finds it up to date. `make pretrain` reruns it; commit the
# outputs and this folder's dvc.lock afterwards. Its parameters are params.yaml's own keys (no preset overrides them).
"""


def render_shipped_dvc(folder: str, params_path: str | Path = "params.yaml") -> str:
    """The text of ``<folder>/dvc.yaml``: the shipped stages of ``folder`` (:attr:`Stage.shipped`)."""
    from primkd.config import effective_params, load_params

    effective = effective_params(load_params(params_path))
    parts = [SHIPPED_HEADER, "stages:\n"]
    for s in (s for s in STAGES if s.shipped == folder):
        text = yaml.safe_dump({s.name: dvc_stage(s, effective)}, sort_keys=False, width=120)
        comment = "".join(f"  # {line}\n" for line in wrap(s.comment)) if s.comment else ""
        parts.append(f"\n{comment}" + "".join(f"  {line}\n" for line in text.splitlines()))
    return "".join(parts)


def wrap(text: str, width: int = 112) -> list[str]:
    """``text`` as comment lines (dvc.yaml, the Snakemake rules)."""
    return textwrap.wrap(text, width)


def check_dvc_yaml(dvc_yaml: str | Path, params: str | Path) -> None:
    """Fail with one line when ``dvc_yaml`` is not what :func:`render_dvc` generates from ``params`` (the stage
    table, params.yaml's experiments and keys, the package's imports), naming the experiments first when those
    differ (:func:`check_dvc_groups`)."""
    from primkd.config import load_params

    check_dvc_groups(dvc_yaml, load_params(params), params)
    if Path(dvc_yaml).read_text() != render_dvc(params):
        raise ConfigError(f"{dvc_yaml} is out of date with the stage table (src/primkd/stages/table.py), the keys of "
                          f"{params} or the package's imports; regenerate it with `python -m primkd.stages --write`")
