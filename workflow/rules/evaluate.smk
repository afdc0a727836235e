rule evaluate_teacher:
    input:
        *EVAL_CODE,
        data=DATA,
        hha=HHA,
        model=f"results/{PRESET}/models/teacher_{{modality}}/model.pt",
    output:
        metrics=f"results/{PRESET}/eval/teacher_{{modality}}.json",
        confusion=f"results/{PRESET}/eval/teacher_{{modality}}_confusion.csv",
    params:
        preset=PRESET,
        values=values("eval", "train.device", "train.bgr", "train.num_workers"),
    log:
        f"results/{PRESET}/logs/evaluate_teacher_{{modality}}.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd evaluate --params params.yaml --preset {params.preset} --model {input.model} --data {input.data} --hha {input.hha} "
        "--out {output.metrics} --confusion {output.confusion} --log {log}"


# The CMX baseline and every experiment: metrics averaged over the seed<k>/ models of the run.
rule evaluate_student:
    input:
        *EVAL_CODE,
        data=DATA,
        hha=HHA,
        model=f"results/{PRESET}/models/{{student}}",
    output:
        metrics=f"results/{PRESET}/eval/{{student}}.json",
        confusion=f"results/{PRESET}/eval/{{student}}_confusion.csv",
    params:
        preset=PRESET,
        values=values("eval", "train.device", "train.bgr", "train.num_workers"),
    log:
        f"results/{PRESET}/logs/evaluate_{{student}}.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd evaluate --params params.yaml --preset {params.preset} --model {input.model} --data {input.data} --hha {input.hha} "
        "--out {output.metrics} --confusion {output.confusion} --log {log}"
