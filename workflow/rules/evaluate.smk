# GENERATED from the stage table (src/primkd/stages/table.py) by `python -m primkd.stages --write`, as dvc.yaml is:
# edit the table, not this file (tests/test_pipelines.py fails when the two differ). The lists (EXPERIMENTS, SEEDS,
# MODALITIES), CFG, effective() and job_resources() come from common.smk.


rule evaluate_teacher:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/dataset.py",
        "src/primkd/data/layout.py",
        "src/primkd/engine/__init__.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/evaluate_run.py",
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
        "results/{preset}/models/teacher_{modality}/model.pt",
        "results/{preset}/models/teacher_{modality}/model_best.pt",
    output:
        "results/{preset}/eval/teacher_{modality}_confusion.csv",
        "results/{preset}/eval/teacher_{modality}_per_image.npz",
        report(
            "results/{preset}/eval/teacher_{modality}.json",
            caption="../report/evaluation.rst",
            category="Per run",
            labels={"run": "teacher_{modality}"},
        ),
        report(
            "results/{preset}/eval/teacher_{modality}.train.json",
            caption="../report/evaluation_train.rst",
            category="Per run",
            labels={"run": "teacher_{modality} (train split)"},
        ),
    params:
        values=lambda w: effective(
            w,
            [
                "eval.scales",
                "eval.flip",
                "eval.windows",
                "eval.checkpoint",
                "train.device",
                "train.crop",
                "train.bgr",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/eval/teacher_{modality}_confusion.csv",
                "results/{preset}/eval/teacher_{modality}_per_image.npz",
                "results/{preset}/eval/teacher_{modality}.json",
                "results/{preset}/eval/teacher_{modality}.train.json",
            ],
        ),
    log:
        "results/{preset}/logs/evaluate_teacher_{modality}.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd evaluate --params params.yaml --preset {wildcards.preset} --model "
        "results/{wildcards.preset}/models/teacher_{wildcards.modality}/model.pt --data "
        "data/{wildcards.preset}/prepared --hha data/{wildcards.preset}/hha --out "
        "results/{wildcards.preset}/eval/teacher_{wildcards.modality}.json --train-out "
        "results/{wildcards.preset}/eval/teacher_{wildcards.modality}.train.json --confusion "
        "results/{wildcards.preset}/eval/teacher_{wildcards.modality}_confusion.csv --log {log}"


rule evaluate_cmx:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/dataset.py",
        "src/primkd/data/layout.py",
        "src/primkd/engine/__init__.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/evaluate_run.py",
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
    output:
        "results/{preset}/eval/cmx_confusion.csv",
        "results/{preset}/eval/cmx_per_image.npz",
        report(
            "results/{preset}/eval/cmx.json",
            caption="../report/evaluation.rst",
            category="Per run",
            labels={"run": "cmx"},
        ),
        report(
            "results/{preset}/eval/cmx.train.json",
            caption="../report/evaluation_train.rst",
            category="Per run",
            labels={"run": "cmx (train split)"},
        ),
    params:
        values=lambda w: effective(
            w,
            [
                "eval.scales",
                "eval.flip",
                "eval.windows",
                "eval.checkpoint",
                "train.device",
                "train.crop",
                "train.bgr",
                "seeds",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/eval/cmx_confusion.csv",
                "results/{preset}/eval/cmx_per_image.npz",
                "results/{preset}/eval/cmx.json",
                "results/{preset}/eval/cmx.train.json",
            ],
        ),
    log:
        "results/{preset}/logs/evaluate_cmx.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd evaluate --params params.yaml --preset {wildcards.preset} --model "
        "results/{wildcards.preset}/models/cmx --data data/{wildcards.preset}/prepared --hha "
        "data/{wildcards.preset}/hha --out results/{wildcards.preset}/eval/cmx.json --train-out "
        "results/{wildcards.preset}/eval/cmx.train.json --confusion "
        "results/{wildcards.preset}/eval/cmx_confusion.csv --log {log}"


rule evaluate_student:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/dataset.py",
        "src/primkd/data/layout.py",
        "src/primkd/engine/__init__.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/evaluate_run.py",
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
        expand("results/{{preset}}/models/{{exp}}/seed{seed}", seed=SEEDS),
    output:
        "results/{preset}/eval/{exp}_confusion.csv",
        "results/{preset}/eval/{exp}_per_image.npz",
        report(
            "results/{preset}/eval/{exp}.json",
            caption="../report/evaluation.rst",
            category="Per run",
            labels={"run": "{exp}"},
        ),
        report(
            "results/{preset}/eval/{exp}.train.json",
            caption="../report/evaluation_train.rst",
            category="Per run",
            labels={"run": "{exp} (train split)"},
        ),
    params:
        values=lambda w: effective(
            w,
            [
                "eval.scales",
                "eval.flip",
                "eval.windows",
                "eval.checkpoint",
                "train.device",
                "train.crop",
                "train.bgr",
                "seeds",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/eval/{exp}_confusion.csv",
                "results/{preset}/eval/{exp}_per_image.npz",
                "results/{preset}/eval/{exp}.json",
                "results/{preset}/eval/{exp}.train.json",
            ],
        ),
    log:
        "results/{preset}/logs/evaluate_{exp}.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd evaluate --params params.yaml --preset {wildcards.preset} --model "
        "results/{wildcards.preset}/models/{wildcards.exp} --data data/{wildcards.preset}/prepared --hha "
        "data/{wildcards.preset}/hha --out results/{wildcards.preset}/eval/{wildcards.exp}.json --train-out "
        "results/{wildcards.preset}/eval/{wildcards.exp}.train.json --confusion "
        "results/{wildcards.preset}/eval/{wildcards.exp}_confusion.csv --log {log}"


# The published checkpoints of eval.released (PrimKD's RGB teacher, CMX's NYU Depth V2 MiT-B2 model) imported from
# their official files and scored as the runs are, in both modes; a missing file is one line in its JSON and the
# report. inputs.released: the files' digests.
rule evaluate_released:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/dataset.py",
        "src/primkd/data/layout.py",
        "src/primkd/distill/__init__.py",
        "src/primkd/distill/losses.py",
        "src/primkd/engine/__init__.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/evaluate_run.py",
        "src/primkd/engine/metrics.py",
        "src/primkd/engine/released.py",
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
        "src/primkd/weights.py",
        "data/{preset}/prepared",
        "data/{preset}/hha",
    output:
        "results/{preset}/eval/released_teacher_rgb.json",
        "results/{preset}/eval/released_cmx.json",
    params:
        values=lambda w: effective(
            w,
            [
                "eval.scales",
                "eval.flip",
                "eval.windows",
                "eval.checkpoint",
                "eval.released.teacher_rgb",
                "eval.released.cmx",
                "train.device",
                "train.crop",
                "inputs.released.teacher_rgb",
                "inputs.released.cmx",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/eval/released_teacher_rgb.json",
                "results/{preset}/eval/released_cmx.json",
            ],
        ),
    log:
        "results/{preset}/logs/evaluate_released.log",
    threads: CFG["resources"]["evaluate"]["cpus_per_task"]
    resources:
        **job_resources("evaluate"),
    conda:
        "../../environment.yml"
    shell:
        "primkd evaluate-released --params params.yaml --preset {wildcards.preset} --data "
        "data/{wildcards.preset}/prepared --hha data/{wildcards.preset}/hha --out-dir "
        "results/{wildcards.preset}/eval --log {log}"
