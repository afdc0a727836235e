# GENERATED from the stage table (src/primkd/stages/table.py) by `python -m primkd.stages --write`, as dvc.yaml is:
# edit the table, not this file (tests/test_pipelines.py fails when the two differ). The lists (EXPERIMENTS, SEEDS,
# MODALITIES), CFG, effective() and job_resources() come from common.smk.


# Table 8 (CKA), Figure 4 (feature histograms), Figure 3 (predictions): CMX and PrimKD against both teachers.
rule analyze:
    input:
        "src/primkd/__init__.py",
        "src/primkd/analysis/__init__.py",
        "src/primkd/analysis/cka.py",
        "src/primkd/analysis/features.py",
        "src/primkd/analysis/histograms.py",
        "src/primkd/analysis/qualitative.py",
        "src/primkd/analysis/run.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/report.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/dataset.py",
        "src/primkd/data/layout.py",
        "src/primkd/data/viz.py",
        "src/primkd/engine/__init__.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/metrics.py",
        "src/primkd/engine/results.py",
        "src/primkd/engine/runtime.py",
        "src/primkd/engine/seeds.py",
        "src/primkd/io.py",
        "src/primkd/models/__init__.py",
        "src/primkd/models/convert.py",
        "src/primkd/models/decoder.py",
        "src/primkd/models/fusion.py",
        "src/primkd/models/io.py",
        "src/primkd/models/mit.py",
        "src/primkd/models/ops.py",
        "src/primkd/models/segmentors.py",
        "src/primkd/pretrained.py",
        "src/primkd/resources.py",
        "src/primkd/runlog.py",
        "data/{preset}/prepared",
        "data/{preset}/hha",
        expand("results/{{preset}}/models/cmx/seed{seed}", seed=SEEDS),
        expand("results/{{preset}}/models/primkd/seed{seed}", seed=SEEDS),
        "results/{preset}/models/teacher_rgb/model.pt",
        "results/{preset}/models/teacher_depth/model.pt",
    output:
        report(
            directory("results/{preset}/analysis"),
            caption="../report/analysis.rst",
            category="Figures",
            patterns=["{name}.png"],
            labels={"figure": "{name}"},
        ),
    params:
        values=lambda w: effective(
            w,
            [
                "train.device",
                "train.bgr",
                "seeds",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/analysis",
            ],
        ),
    log:
        "results/{preset}/logs/analyze.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd analyze --params params.yaml --preset {wildcards.preset} --student "
        "cmx=results/{wildcards.preset}/models/cmx --student primkd=results/{wildcards.preset}/models/primkd "
        "--rgb-model results/{wildcards.preset}/models/teacher_rgb/model.pt --depth-model "
        "results/{wildcards.preset}/models/teacher_depth/model.pt --data data/{wildcards.preset}/prepared --hha "
        "data/{wildcards.preset}/hha --out-dir results/{wildcards.preset}/analysis --log {log}"


# Tables 1-8 beside the paper's numbers, Figure 1, REPORT.md: every evaluated run and the analysis.
rule report:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/report.py",
        "src/primkd/config.py",
        "src/primkd/engine/__init__.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/metrics.py",
        "src/primkd/engine/results.py",
        "src/primkd/engine/seeds.py",
        "src/primkd/io.py",
        "src/primkd/models/__init__.py",
        "src/primkd/models/convert.py",
        "src/primkd/models/decoder.py",
        "src/primkd/models/fusion.py",
        "src/primkd/models/io.py",
        "src/primkd/models/mit.py",
        "src/primkd/models/ops.py",
        "src/primkd/models/segmentors.py",
        "src/primkd/pretrained.py",
        "src/primkd/report/__init__.py",
        "src/primkd/report/compare.py",
        "src/primkd/report/curves.py",
        "src/primkd/report/figures.py",
        "src/primkd/report/run.py",
        "src/primkd/report/significance.py",
        "src/primkd/report/tables.py",
        "src/primkd/resources.py",
        "src/primkd/runlog.py",
        "src/primkd/report/paper.yaml",
        expand("results/{{preset}}/eval/teacher_{modality}_confusion.csv", modality=MODALITIES),
        expand("results/{{preset}}/eval/teacher_{modality}_per_image.npz", modality=MODALITIES),
        expand("results/{{preset}}/eval/teacher_{modality}.json", modality=MODALITIES),
        expand("results/{{preset}}/eval/teacher_{modality}.train.json", modality=MODALITIES),
        "results/{preset}/eval/cmx_confusion.csv",
        "results/{preset}/eval/cmx_per_image.npz",
        "results/{preset}/eval/cmx.json",
        "results/{preset}/eval/cmx.train.json",
        expand("results/{{preset}}/eval/{exp}_confusion.csv", exp=EXPERIMENTS),
        expand("results/{{preset}}/eval/{exp}_per_image.npz", exp=EXPERIMENTS),
        expand("results/{{preset}}/eval/{exp}.json", exp=EXPERIMENTS),
        expand("results/{{preset}}/eval/{exp}.train.json", exp=EXPERIMENTS),
        "results/{preset}/eval/released_teacher_rgb.json",
        "results/{preset}/eval/released_cmx.json",
        "results/{preset}/analysis",
        expand("results/{{preset}}/models/teacher_{modality}/model.pt", modality=MODALITIES),
        expand("results/{{preset}}/models/teacher_{modality}/model_best.pt", modality=MODALITIES),
        expand("results/{{preset}}/models/teacher_{modality}/train.json", modality=MODALITIES),
        expand("results/{{preset}}/models/teacher_{modality}/curves.csv", modality=MODALITIES),
        expand("results/{{preset}}/models/teacher_{modality}/eval_curve.csv", modality=MODALITIES),
        expand("results/{{preset}}/models/cmx/seed{seed}", seed=SEEDS),
        expand("results/{{preset}}/models/{exp}/seed{seed}", exp=EXPERIMENTS, seed=SEEDS),
    output:
        report(
            directory("results/{preset}/report/tables"),
            caption="../report/tables.rst",
            category="Tables",
            patterns=["{name}.{ext,(md|csv)}"],
            labels={"table": "{name}", "format": "{ext}"},
        ),
        report(
            "results/{preset}/report/figure1.png",
            caption="../report/figure1.rst",
            category="Figures",
            labels={"figure": "figure1"},
        ),
        "results/{preset}/report/figure1.pdf",
        report(
            directory("results/{preset}/report/curves"),
            caption="../report/curves.rst",
            category="Training",
            patterns=["{run}.png"],
            labels={"run": "{run}"},
        ),
        report(
            "results/{preset}/REPORT.md",
            caption="../report/report_md.rst",
            category="Tables",
            labels={"table": "REPORT.md: every table, with notes", "format": "md"},
        ),
        report(
            "results/{preset}/summary.json",
            caption="../report/summary.rst",
            category="Per run",
            labels={"run": "all runs (summary.json)"},
        ),
    params:
        values=lambda w: effective(
            w,
            [
                "model.decoder_embed_dim",
                "model.backbone",
                "data.source",
                "train.epochs",
                "train.batch_size",
                "train.lr",
                "kd.alpha",
                "kd.beta",
                "kd.rule",
                "kd.aligner",
                "kd.mask_lambda",
                "kd.per_sample",
                "kd.kl_direction",
                "kd.temperature",
                "kd.teachers.rgb",
                "kd.teachers.depth",
                "seeds",
                "eval.checkpoint",
                "eval.scales",
                "eval.flip",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/report/tables",
                "results/{preset}/report/figure1.png",
                "results/{preset}/report/figure1.pdf",
                "results/{preset}/report/curves",
                "results/{preset}/REPORT.md",
                "results/{preset}/summary.json",
            ],
        ),
    log:
        "results/{preset}/logs/report.log",
    conda:
        "../../environment.yml"
    shell:
        "primkd report --params params.yaml --preset {wildcards.preset} --results results/{wildcards.preset} "
        "--out-dir results/{wildcards.preset}/report --report results/{wildcards.preset}/REPORT.md --summary "
        "results/{wildcards.preset}/summary.json --curves results/{wildcards.preset}/report/curves --log {log}"
