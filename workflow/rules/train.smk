rule train_teacher:
    input:
        *TRAIN_CODE,
        DATA,
        HHA,
    output:
        model=f"results/{PRESET}/models/teacher_{{modality}}/model.pt",
        summary=f"results/{PRESET}/models/teacher_{{modality}}/train.json",
        curves=f"results/{PRESET}/models/teacher_{{modality}}/curves.csv",
        eval_curve=f"results/{PRESET}/models/teacher_{{modality}}/eval_curve.csv",
    params:
        values=values("model", "train", "eval"),
        out_dir=lambda w: f"results/{PRESET}/models/teacher_{w.modality}",
    log:
        f"results/{PRESET}/logs/train_teacher_{{modality}}.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    shell:
        "primkd train --params params.yaml --preset {PRESET} --role teacher --modality {wildcards.modality} "
        "--data {DATA} --hha {HHA} --out-dir {params.out_dir} --log {log}"


# Students write one seed<k>/ folder per entry of `seeds`.
rule train_cmx:
    input:
        *TRAIN_CODE,
        DATA,
        HHA,
    output:
        directory(f"results/{PRESET}/models/cmx"),
    params:
        values=values("seeds", "model", "train", "eval"),
    log:
        f"results/{PRESET}/logs/train_cmx.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    shell:
        "primkd train --params params.yaml --preset {PRESET} --role student --data {DATA} --hha {HHA} "
        "--out-dir {output} --log {log}"


rule train_student:
    input:
        *TRAIN_CODE,
        DATA,
        HHA,
        teacher=lambda w: f"results/{PRESET}/models/teacher_{CFG['experiments'][w.exp]['teacher']}/model.pt",
    output:
        directory(f"results/{PRESET}/models/{{exp}}"),
    params:
        values=lambda w: values("seeds", "model", "train", "eval") + json.dumps(experiment_kd(CFG, w.exp)),
    log:
        f"results/{PRESET}/logs/train_{{exp}}.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    shell:
        "primkd train --params params.yaml --preset {PRESET} --role student --experiment {wildcards.exp} "
        "--teacher {input.teacher} --data {DATA} --hha {HHA} --out-dir {output} --log {log}"
