rule train_teacher:
    input:
        stage_input("train_teacher"),
    output:
        stage_output("train_teacher"),
    params:
        **stage_params("train_teacher"),
    log:
        stage_log("train_teacher"),
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("train_teacher")


# Students write one seed<k>/ folder per entry of `seeds`.
rule train_cmx:
    input:
        stage_input("train_cmx"),
    output:
        stage_output("train_cmx"),
    params:
        **stage_params("train_cmx"),
    log:
        stage_log("train_cmx"),
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("train_cmx")


rule train_student:
    input:
        stage_input("train_student"),
    output:
        stage_output("train_student"),
    params:
        **stage_params("train_student"),
    log:
        stage_log("train_student"),
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("train_student")
