rule analyze:
    input:
        stage_input("analyze"),
    output:
        stage_output("analyze"),
    params:
        **stage_params("analyze"),
    log:
        stage_log("analyze"),
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("analyze")


rule report:
    input:
        stage_input("report"),
    output:
        stage_output("report"),
    params:
        **stage_params("report"),
    log:
        stage_log("report"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("report")
