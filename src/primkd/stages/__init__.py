"""The pipeline's stage graph: one table (:mod:`primkd.stages.table`) from which ``dvc.yaml``
(:mod:`primkd.stages.dvc`) and the Snakemake rules ``workflow/rules/{data,train,evaluate,report}.smk``
(:mod:`primkd.stages.snakemake`) are generated, and the code dependencies of each stage, the import closure of the
CLI function its command runs (:mod:`primkd.stages.closure`).

Parameters: a stage depends on the *effective* values it reads (top level with the active preset's overrides and, for
students, the experiment's ``kd`` overrides applied), which the ``resolve_params`` stage writes to
``results/<preset>/effective_params.yaml`` (:func:`primkd.config.effective_params`). Why not list
``presets.${preset}.train.lr`` in ``dvc.yaml`` directly: DVC fails on a listed key that params.yaml lacks, and which
keys a preset overrides changes from preset to preset and with every ``dvc exp run -S presets.<p>.<key>=...``; the
effective file has every key for every preset, so exact leaf keys can be listed, ``-S preset=smoke`` and
``-S kd.beta=0.1`` keep working, and a key that a preset starts to override is followed automatically. Snakemake
computes the same effective values in the Snakefile and compares them itself (its ``params`` rerun trigger).

Input files whose location is itself a parameter (the ImageNet weights ``model.pretrained`` resolves to, the tree at
``data.folder.path``) cannot be file dependencies of a dvc.yaml shared by every preset; the effective parameters
hold their content digests instead (``inputs``, :func:`primkd.config.input_digests`), on which the training stages
and ``prepare`` depend like on any key. ``resolve_params`` is ``always_changed`` in dvc.yaml so that every
``dvc repro`` reads those files again; Snakemake computes them each time it reads the Snakefile.

The package imports nothing beyond the standard library and PyYAML, so the Snakefile and ``primkd --help`` stay
light. ``python -m primkd.stages --write`` regenerates dvc.yaml and the rule files of the repository in the current
folder; ``--check`` fails when one is out of date.
"""

from primkd.stages.closure import PACKAGE_DIR, REPO_ROOT, code_closure
from primkd.stages.dvc import check_dvc_groups, check_dvc_yaml, dvc_groups, dvc_name, instance_name, render_dvc
from primkd.stages.generate import generated_files, main
from primkd.stages.shipped import ShippedState, output_digests, record, shipped_state
from primkd.stages.snakemake import render_smk
from primkd.stages.table import (
    EFFECTIVE_PARAMS,
    LOOPS,
    MODALITIES,
    PRETRAINED,
    STAGES,
    TRAIN_PARAMS,
    Out,
    Stage,
    effective_values,
    fill,
    leaf_keys,
    loop_items,
    param_keys,
    stage,
    value_at,
    with_group,
)

__all__ = [
    "EFFECTIVE_PARAMS", "LOOPS", "MODALITIES", "PACKAGE_DIR", "PRETRAINED", "REPO_ROOT", "STAGES", "TRAIN_PARAMS",
    "Out", "ShippedState", "Stage", "check_dvc_groups", "check_dvc_yaml", "code_closure", "dvc_groups", "dvc_name",
    "effective_values", "fill", "generated_files", "instance_name", "leaf_keys", "loop_items", "main",
    "output_digests", "param_keys", "record", "render_dvc", "render_smk", "shipped_state", "stage", "value_at",
    "with_group",
]
