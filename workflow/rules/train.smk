def train_outputs(name):
    folder = f"results/{PRESET}/models/{name}"
    return {"model": f"{folder}/model.pt", "summary": f"{folder}/train.json", "curves": f"{folder}/curves.csv",
            "eval_curve": f"{folder}/eval_curve.csv"}


rule train_teacher:
    input:
        *TRAIN_CODE,
        DATA,
        HHA,
    output:
        **train_outputs("teacher_{modality}"),
    params:
        values=values("model", "train", "eval"),
        out_dir=lambda w: f"results/{PRESET}/models/teacher_{w.modality}",
    log:
        f"results/{PRESET}/logs/train_teacher_{{modality}}.log",
    shell:
        "primkd train --params params.yaml --preset {PRESET} --role teacher --modality {wildcards.modality} "
        "--data {DATA} --hha {HHA} --out-dir {params.out_dir} --log {log}"


rule train_cmx:
    input:
        *TRAIN_CODE,
        DATA,
        HHA,
    output:
        **train_outputs("cmx"),
    params:
        values=values("model", "train", "eval"),
    log:
        f"results/{PRESET}/logs/train_cmx.log",
    shell:
        "primkd train --params params.yaml --preset {PRESET} --role student --data {DATA} --hha {HHA} "
        "--out-dir results/{PRESET}/models/cmx --log {log}"


rule train_student:
    input:
        *TRAIN_CODE,
        DATA,
        HHA,
        teacher=f"results/{PRESET}/models/teacher_rgb/model.pt",
    output:
        **train_outputs("{exp}"),
    params:
        values=lambda w: values("model", "train", "eval") + json.dumps(experiment_kd(CFG, w.exp), sort_keys=True),
        out_dir=lambda w: f"results/{PRESET}/models/{w.exp}",
    log:
        f"results/{PRESET}/logs/train_{{exp}}.log",
    shell:
        "primkd train --params params.yaml --preset {PRESET} --role student --experiment {wildcards.exp} "
        "--teacher {input.teacher} --data {DATA} --hha {HHA} --out-dir {params.out_dir} --log {log}"
