# Run where Snakemake runs, not as cluster jobs: compute nodes often have no internet access (download), and
# resolve_params takes a fraction of a second.
localrules:
    resolve_params,
    download,


rule resolve_params:
    input:
        stage_input("resolve_params"),
    output:
        stage_output("resolve_params"),
    params:
        **stage_params("resolve_params"),
    log:
        stage_log("resolve_params"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("resolve_params")


rule download:
    input:
        stage_input("download"),
    output:
        stage_output("download"),
    params:
        **stage_params("download"),
    log:
        stage_log("download"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("download")


rule prepare:
    input:
        stage_input("prepare"),
    output:
        stage_output("prepare"),
    params:
        **stage_params("prepare"),
    log:
        stage_log("prepare"),
    threads: CFG["resources"]["prepare"]["cpus_per_task"]
    resources:
        **job_resources("prepare"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("prepare")


rule hha:
    input:
        stage_input("hha"),
    output:
        stage_output("hha"),
    params:
        **stage_params("hha"),
    log:
        stage_log("hha"),
    threads: CFG["resources"]["hha"]["cpus_per_task"]
    resources:
        **job_resources("hha"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("hha")
