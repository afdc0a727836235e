rule evaluate_teacher:
    input:
        *EVAL_CODE,
        DATA,
        HHA,
        model=f"results/{PRESET}/models/teacher_{{modality}}/model.pt",
    output:
        metrics=f"results/{PRESET}/eval/teacher_{{modality}}.json",
        confusion=f"results/{PRESET}/eval/teacher_{{modality}}_confusion.csv",
    params:
        values=values("eval", "train.device", "train.bgr", "train.num_workers"),
    log:
        f"results/{PRESET}/logs/evaluate_teacher_{{modality}}.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    shell:
        "primkd evaluate --params params.yaml --preset {PRESET} --model {input.model} --data {DATA} --hha {HHA} "
        "--out {output.metrics} --confusion {output.confusion} --log {log}"


# The CMX baseline and every experiment: metrics averaged over the seed<k>/ models of the run.
rule evaluate_student:
    input:
        *EVAL_CODE,
        DATA,
        HHA,
        model=f"results/{PRESET}/models/{{student}}",
    output:
        metrics=f"results/{PRESET}/eval/{{student}}.json",
        confusion=f"results/{PRESET}/eval/{{student}}_confusion.csv",
    params:
        values=values("eval", "train.device", "train.bgr", "train.num_workers"),
    log:
        f"results/{PRESET}/logs/evaluate_{{student}}.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    shell:
        "primkd evaluate --params params.yaml --preset {PRESET} --model {input.model} --data {DATA} --hha {HHA} "
        "--out {output.metrics} --confusion {output.confusion} --log {log}"
