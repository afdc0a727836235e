rule train_teacher:
    input:
        *TRAIN_CODE,
        data=DATA,
        hha=HHA,
    output:
        model=f"results/{PRESET}/models/teacher_{{modality}}/model.pt",
        summary=f"results/{PRESET}/models/teacher_{{modality}}/train.json",
        curves=f"results/{PRESET}/models/teacher_{{modality}}/curves.csv",
        eval_curve=f"results/{PRESET}/models/teacher_{{modality}}/eval_curve.csv",
    params:
        preset=PRESET,
        values=values("model", "train", "eval"),
        out_dir=lambda w: f"results/{PRESET}/models/teacher_{w.modality}",
    log:
        f"results/{PRESET}/logs/train_teacher_{{modality}}.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        "primkd train --params params.yaml --preset {params.preset} --role teacher --modality {wildcards.modality} "
        "--data {input.data} --hha {input.hha} --out-dir {params.out_dir} "
        "--checkpoint-dir results/{params.preset}/checkpoints/teacher_{wildcards.modality} --log {log}"


# Students write one seed<k>/ folder per entry of `seeds`.
rule train_cmx:
    input:
        *TRAIN_CODE,
        data=DATA,
        hha=HHA,
    output:
        directory(f"results/{PRESET}/models/cmx"),
    params:
        preset=PRESET,
        values=values("seeds", "model", "train", "eval"),
    log:
        f"results/{PRESET}/logs/train_cmx.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        "primkd train --params params.yaml --preset {params.preset} --role student --data {input.data} --hha {input.hha} "
        "--out-dir {output} --checkpoint-dir results/{params.preset}/checkpoints/cmx --log {log}"


rule train_student:
    input:
        *TRAIN_CODE,
        data=DATA,
        hha=HHA,
        teacher=lambda w: f"results/{PRESET}/models/teacher_{CFG['experiments'][w.exp]['teacher']}/model.pt",
    output:
        directory(f"results/{PRESET}/models/{{exp}}"),
    params:
        preset=PRESET,
        values=lambda w: values("seeds", "model", "train", "eval") + json.dumps(experiment_kd(CFG, w.exp)),
    log:
        f"results/{PRESET}/logs/train_{{exp}}.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        "primkd train --params params.yaml --preset {params.preset} --role student --experiment {wildcards.exp} "
        "--teacher {input.teacher} --data {input.data} --hha {input.hha} --out-dir {output} "
        "--checkpoint-dir results/{params.preset}/checkpoints/{wildcards.exp} --log {log}"
