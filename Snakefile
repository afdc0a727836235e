# The PrimKD pipeline for Snakemake: the rules take their commands, inputs, outputs and parameters from the stage
# table in src/primkd/stages.py, which dvc.yaml is generated from (tests/test_pipelines.py checks both agree).
#   snakemake --cores all                              # everything for the preset in params.yaml
#   snakemake --cores all --config preset=nyuv2_b4     # another preset
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "params.yaml"
from primkd.config import numbers_as_read; numbers_as_read(config)  # 6e-05 (as DVC writes it) a number: primkd #25


validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Everything: both teachers, the CMX baseline, every experiment, the analysis and the report.
rule all:
    input:
        f"results/{PRESET}/REPORT.md",
        ST.fill(ST.EFFECTIVE_PARAMS, PRESET, ST.stage("resolve_params")),


# The main comparison only (`snakemake --cores all main`): RGB teacher, CMX baseline, PrimKD.
rule main:
    input:
        expand("results/{preset}/eval/{model}.json", preset=PRESET, model=MAIN_MODELS),
