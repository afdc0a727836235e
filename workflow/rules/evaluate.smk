rule evaluate_teacher:
    input:
        stage_input("evaluate_teacher"),
    output:
        stage_output("evaluate_teacher"),
    params:
        **stage_params("evaluate_teacher"),
    log:
        stage_log("evaluate_teacher"),
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("evaluate_teacher")


# The CMX baseline and every experiment: metrics averaged over the seed<k>/ models of the run.
rule evaluate_cmx:
    input:
        stage_input("evaluate_cmx"),
    output:
        stage_output("evaluate_cmx"),
    params:
        **stage_params("evaluate_cmx"),
    log:
        stage_log("evaluate_cmx"),
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("evaluate_cmx")


rule evaluate_student:
    input:
        stage_input("evaluate_student"),
    output:
        stage_output("evaluate_student"),
    params:
        **stage_params("evaluate_student"),
    log:
        stage_log("evaluate_student"),
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        stage_shell("evaluate_student")
