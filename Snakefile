# The PrimKD pipeline for Snakemake. The rules in workflow/rules/{data,train,evaluate,report}.smk are generated from
# the stage table in src/primkd/stages/table.py, as dvc.yaml is (tests/test_pipelines.py checks both agree).
#   snakemake --cores all                              # everything for the preset in params.yaml
#   snakemake --cores all --config preset=nyuv2_b4     # another preset
#   snakemake --report report.html                     # then: the results as one page (workflow/report/)
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "params.yaml"
# Snakemake reads params.yaml with YAML 1.1 rules, which make 6e-05 (as `dvc exp run -S` writes it) a string.
from primkd.config import numbers_as_read

numbers_as_read(config)


validate(config, "workflow/schemas/params.schema.yaml")


# The introduction of `snakemake --report`; the outputs it shows, their categories and captions are in the stage table.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Everything: both teachers, the CMX baseline, every experiment, the analysis and the report.
rule all:
    input:
        f"results/{PRESET}/REPORT.md",
        f"results/{PRESET}/effective_params.yaml",


# The main comparison only (`snakemake --cores all main`): RGB teacher, CMX baseline, PrimKD.
rule main:
    input:
        expand("results/{preset}/eval/{model}.json", preset=PRESET, model=MAIN_MODELS),

