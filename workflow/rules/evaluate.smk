rule evaluate:
    input:
        *EVAL_CODE,
        DATA,
        HHA,
        model=f"results/{PRESET}/models/{{model}}/model.pt",
    output:
        metrics=f"results/{PRESET}/eval/{{model}}.json",
        confusion=f"results/{PRESET}/eval/{{model}}_confusion.csv",
    params:
        values=values("eval", "train.device", "train.bgr", "train.num_workers"),
    log:
        f"results/{PRESET}/logs/evaluate_{{model}}.log",
    shell:
        "primkd evaluate --params params.yaml --preset {PRESET} --model {input.model} --data {DATA} --hha {HHA} "
        "--out {output.metrics} --confusion {output.confusion} --log {log}"
