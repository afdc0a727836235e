"""The Snakemake rules (``workflow/rules/{data,train,evaluate,report}.smk``), generated from the stage table
(:mod:`primkd.stages.table`) and checked in like dvc.yaml, so that each rule's inputs, outputs, parameters, log,
threads and command read as plain Snakemake.

The preset and the loop variables are wildcards (``{preset}``, ``{modality}``, ``{exp}``, ``{seed}``); an input that
is a folder of other stages' outputs (``results/<preset>/eval``, a student's run folder of seed<k>/ outputs) is
listed as those outputs, with ``expand`` over the lists of workflow/rules/common.smk; a student's own teacher is
looked up from its experiment. The values of ``params`` (the rerun trigger of Snakemake, as DVC's params) come from
common.smk's ``effective`` at parse time, since they depend on the preset; the keys are written here.
"""

from __future__ import annotations

import json
import re
import textwrap

from primkd.stages.closure import code_closure
from primkd.stages.dvc import wrap
from primkd.stages.table import LOOPS, STAGES, Out, Stage, param_keys, substitute

# Rule file -> its stages, in the table's order.
RULE_FILES = {"data": ("resolve_params", "download", "prepare", "hha"),
              "train": ("pretrain", "train_teacher", "train_cmx", "train_student"),
              "evaluate": ("evaluate_teacher", "evaluate_cmx", "evaluate_student", "evaluate_released"),
              "report": ("analyze", "report")}
LOCAL_RULES = ("resolve_params", "download")
LOCAL_COMMENT = """\
# Run where Snakemake runs, not as cluster jobs: compute nodes often have no internet access (download), and
# resolve_params takes a fraction of a second.
"""
HEADER = """\
# GENERATED from the stage table (src/primkd/stages/table.py) by `python -m primkd.stages --write`, as dvc.yaml is:
# edit the table, not this file (tests/test_pipelines.py fails when the two differ). The lists (EXPERIMENTS, SEEDS,
# MODALITIES), CFG, effective() and job_resources() come from common.smk.
"""


def _q(text: str) -> str:
    return json.dumps(text)


def _components(path: str) -> list[str]:
    return path.split("/")


def _match(dep: str, out: str) -> dict | None:
    """Whether the outputs of template ``out`` lie under (or are) the input template ``dep``: the values ``dep``
    gives to ``out``'s variables (a concrete ``primkd`` for ``{exp}``), or None."""
    bound: dict[str, str] = {}
    d, o = _components(dep), _components(out)
    if len(d) > len(o):
        return None
    for dc, oc in zip(d, o):
        if dc == oc:
            continue
        if "{" in dc or "{" not in oc:
            return None
        pattern = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p)
                          for p in re.split(r"(\{\w+\})", oc) if p)
        found = re.fullmatch(pattern, dc)
        if found is None:
            return None
        bound.update(found.groupdict())
    return bound


def _expand(template: str, keep: set[str], bound: dict[str, str]) -> str:
    """A Snakemake input for the output template ``template``: variables in ``keep`` stay wildcards, ``bound`` ones
    are filled in, the others are expanded over their lists."""
    path = substitute(template, bound)
    free = [v for v in LOOPS if f"{{{v}}}" in path and v not in keep]
    if not free:
        return _q(path)
    path = substitute(path, {v: f"{{{{{v}}}}}" for v in keep | {"preset"}})
    return f"expand({_q(path)}, {', '.join(f'{v}={LOOPS[v].smk}' for v in free)})"


def rule_inputs(s: Stage) -> list[str]:
    """A rule's inputs, as Snakemake expressions: code files, other files, the stage's inputs. A shipped stage's are
    ``ancient()`` (a clone writes files in any order), with the input common.smk's ``shipped_outdated`` gives it
    when its outputs are not what the current code and parameters make (:mod:`primkd.stages.shipped`); a stage
    reading ``inputs.pretrained`` also gets the pretrain stage's encoder when ``model.pretrained`` names it
    (common.smk's ``pretrained_input``), so that it runs after that stage (DVC orders them through resolve_params,
    which depends on the encoder)."""
    lines = [_q(f) for f in (*code_closure(s.entry), *s.files)]
    outputs = [o.path for t in STAGES for o in t.outs]
    keep = set(s.loop)
    for dep in s.deps:
        if s.group_by and f"{{{s.group_by}}}" in dep:  # looked up from the experiment: the student's own teacher
            path = substitute(dep, {"preset": "{w.preset}", **{v: f"{{w.{v}}}" for v in s.loop},
                                    s.group_by: f"{{CFG['experiments'][w.exp][{s.group_by!r}]}}"})
            lines.append(f"lambda w: f{_q(path)}")
            continue
        matches = [(o, m) for o in dict.fromkeys(outputs) if (m := _match(dep, o)) is not None]
        if any(not m for _, m in matches):  # a name in the path (models/cmx) is that stage's, not a pattern's value
            matches = [(o, m) for o, m in matches if not m]
        if any(len(_components(o)) == len(_components(dep)) for o, _ in matches) or not matches:
            lines.append(_q(dep))
        else:
            lines += [_expand(o, keep, m) for o, m in matches]
    if s.shipped:
        return [*(f"ancient({line})" for line in lines), f"lambda w: shipped_outdated({_q(s.name)})"]
    if "inputs.pretrained" in s.params:
        lines.append("pretrained_input")
    return lines


def rule_shell(s: Stage) -> list[str]:
    """The rule's command (the table's, as DVC runs it but for :attr:`Stage.dvc_flags`), as string literals of at
    most about 110 characters."""
    cmd = substitute(s.cmd, {"preset": "{wildcards.preset}", **{v: f"{{wildcards.{v}}}" for v in LOOPS},
                             "log": "{log}"})
    lines = textwrap.wrap(cmd, 106, break_long_words=False, break_on_hyphens=False)
    return [_q(line + (" " if i < len(lines) - 1 else "")) for i, line in enumerate(lines)]


def rule_output(o: Out) -> list[str]:
    """An output's lines: its path (``directory()`` for a folder), in ``report()`` when the Snakemake report shows it
    (captions are workflow/report/ files, named relative to the rule files)."""
    path = f"directory({_q(o.path)})" if o.folder else _q(o.path)
    if o.report is None:
        return [f"{path},"]
    r = o.report
    args = [path, f"caption={_q(f'../report/{r.caption}')}", f"category={_q(r.category)}"]
    if r.patterns:
        args.append(f"patterns=[{', '.join(map(_q, r.patterns))}]")
    if r.labels:
        args.append(f"labels={{{', '.join(f'{_q(k)}: {_q(v)}' for k, v in r.labels)}}}")
    return ["report(", *(f"    {a}," for a in args), "),"]


def render_rule(s: Stage, effective: dict) -> str:
    keys = [*param_keys(s, effective), *(["inputs"] if s.always_changed else [])]
    out = [f"# {line}" for line in wrap(s.comment)] if s.comment else []
    out += [f"rule {s.name}:", "    input:", *(f"        {line}," for line in rule_inputs(s)), "    output:"]
    out += [f"        {line}" for o in s.outs for line in rule_output(o)]
    # the values of the keys it reads: Snakemake reruns a job when one of them changes
    out += ["    params:", "        values=lambda w: effective(", "            w,", "            ["]
    out += [f"                {_q(k)}," for k in keys]
    out += ["            ],", "        ),"]
    # a token that changes when an output was edited outside the pipeline (content, not time: common.smk)
    out += ["        outputs=lambda w: outputs_token(", "            w,", "            ["]
    out += [f"                {_q(o.path)}," for o in s.outs]
    out += ["            ],", "        ),", "    log:", f"        {_q(s.log)},"]
    if s.threads:
        out += [f"    threads: value_at(CFG, {_q(s.threads)})"]
    if s.resources and s.name not in LOCAL_RULES:
        out += [f"    threads: CFG[\"resources\"][{_q(s.resources)}][\"cpus_per_task\"]", "    resources:",
                f"        **job_resources({_q(s.resources)}),"]
    out += ["    conda:", '        "../../environment.yml"', "    shell:"]
    out += [f"        {line}" for line in rule_shell(s)]
    return "\n".join(out) + "\n"


def render_smk(effective: dict) -> dict[str, str]:
    """The text of each generated rule file (``workflow/rules/<name>.smk``), for the effective parameters of any
    preset (every preset has the same keys)."""
    by_name = {s.name: s for s in STAGES}
    files = {}
    for name, stages in RULE_FILES.items():
        parts = [HEADER]
        local = [n for n in stages if n in LOCAL_RULES]
        if local:
            parts.append(f"\n{LOCAL_COMMENT}localrules:\n" + "".join(f"    {n},\n" for n in local))
        parts += [f"\n\n{render_rule(by_name[n], effective)}" for n in stages]
        files[f"workflow/rules/{name}.smk"] = "".join(parts)
    return files
