rule analyze:
    input:
        "src/primkd/analysis",
        data=DATA,
        hha=HHA,
        cmx=f"results/{PRESET}/models/cmx",
        primkd=f"results/{PRESET}/models/primkd",
        rgb=f"results/{PRESET}/models/teacher_rgb/model.pt",
        depth=f"results/{PRESET}/models/teacher_depth/model.pt",
    output:
        directory(f"results/{PRESET}/analysis"),
    params:
        preset=PRESET,
        values=values("eval.batch_size", "train.device", "train.bgr", "train.num_workers"),
    log:
        f"results/{PRESET}/logs/analyze.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd analyze --params params.yaml --preset {params.preset} --student cmx={input.cmx} --student primkd={input.primkd} "
        "--rgb-model {input.rgb} --depth-model {input.depth} --data {input.data} --hha {input.hha} --out-dir {output} --log {log}"


rule report:
    input:
        "src/primkd/report",
        # the whole eval/ folder, as DVC depends on it: metrics and confusion matrices
        expand("results/{preset}/eval/{model}{suffix}", preset=PRESET, model=MODELS, suffix=[".json", "_confusion.csv"]),
        analysis=f"results/{PRESET}/analysis",
    output:
        tables=directory(f"results/{PRESET}/report"),
        report=f"results/{PRESET}/REPORT.md",
    params:
        preset=PRESET,
        values=values("model.decoder_embed_dim"),
    log:
        f"results/{PRESET}/logs/report.log",
    conda:
        "../../environment.yml"
    shell:
        "primkd report --params params.yaml --preset {params.preset} --results results/{params.preset} --out-dir {output.tables} "
        "--report {output.report} --log {log}"
