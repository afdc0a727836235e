# GENERATED from the stage table (src/primkd/stages/table.py) by `python -m primkd.stages --write`, as dvc.yaml is:
# edit the table, not this file (tests/test_pipelines.py fails when the two differ). The lists (EXPERIMENTS, SEEDS,
# MODALITIES), CFG, effective() and job_resources() come from common.smk.


# The demo's ImageNet-1K: the MiT encoder trained on patch classification of a synthetic corpus of its own
# (params.yaml pretrain). Its outputs are committed with the repository (`make pretrain` regenerates them), so a
# fresh clone finds it up to date; the presets whose model.pretrained names pretrain/encoder.pt (the demo) start
# every network from it.
rule pretrain:
    input:
        ancient("src/primkd/__init__.py"),
        ancient("src/primkd/cli/__init__.py"),
        ancient("src/primkd/cli/options.py"),
        ancient("src/primkd/cli/pretrain.py"),
        ancient("src/primkd/config.py"),
        ancient("src/primkd/data/__init__.py"),
        ancient("src/primkd/data/dataset.py"),
        ancient("src/primkd/data/layout.py"),
        ancient("src/primkd/data/synthetic.py"),
        ancient("src/primkd/data/viz.py"),
        ancient("src/primkd/data/workers.py"),
        ancient("src/primkd/engine/__init__.py"),
        ancient("src/primkd/engine/optim.py"),
        ancient("src/primkd/engine/pretrain.py"),
        ancient("src/primkd/engine/runtime.py"),
        ancient("src/primkd/io.py"),
        ancient("src/primkd/models/__init__.py"),
        ancient("src/primkd/models/convert.py"),
        ancient("src/primkd/models/decoder.py"),
        ancient("src/primkd/models/fusion.py"),
        ancient("src/primkd/models/io.py"),
        ancient("src/primkd/models/mit.py"),
        ancient("src/primkd/models/ops.py"),
        ancient("src/primkd/models/segmentors.py"),
        ancient("src/primkd/pretrained.py"),
        ancient("src/primkd/resources.py"),
        ancient("src/primkd/runlog.py"),
        lambda w: shipped_outdated("pretrain"),
    output:
        "pretrain/encoder.pt",
        "pretrain/pretrain.json",
        "pretrain/curve.csv",
    params:
        values=lambda w: effective(
            w,
            [
                "pretrain.backbone",
                "pretrain.seed",
                "pretrain.num_images",
                "pretrain.num_heldout",
                "pretrain.height",
                "pretrain.width",
                "pretrain.patch",
                "pretrain.epochs",
                "pretrain.batch_size",
                "pretrain.lr",
                "pretrain.weight_decay",
                "pretrain.betas",
                "pretrain.warmup_epochs",
                "pretrain.warmup_ratio",
                "pretrain.poly_power",
                "pretrain.drop_path_rate",
                "pretrain.flip",
                "pretrain.threads",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "pretrain/encoder.pt",
                "pretrain/pretrain.json",
                "pretrain/curve.csv",
            ],
        ),
    log:
        "results/pretrain.log",
    threads: value_at(CFG, "pretrain.threads")
    conda:
        "../../environment.yml"
    shell:
        "primkd pretrain --params params.yaml --out-dir pretrain --log {log}"


# Resumable checkpoints live in results/<preset>/checkpoints/<run>, deliberately not declared as outputs: the
# tools delete outputs before a rerun, which is exactly when a checkpoint is needed. When kd.teachers names a file
# for the modality (the official presets: PrimKD's released RGB teacher) and it is there, the stage imports it
# instead of training; while it is missing it trains the teacher and says so.
rule train_teacher:
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
        "src/primkd/engine/checkpoint.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/evaluate_run.py",
        "src/primkd/engine/metrics.py",
        "src/primkd/engine/optim.py",
        "src/primkd/engine/precision.py",
        "src/primkd/engine/released.py",
        "src/primkd/engine/results.py",
        "src/primkd/engine/runtime.py",
        "src/primkd/engine/seeds.py",
        "src/primkd/engine/train.py",
        "src/primkd/engine/usage.py",
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
        pretrained_input,
    output:
        "results/{preset}/models/teacher_{modality}/model.pt",
        "results/{preset}/models/teacher_{modality}/model_best.pt",
        "results/{preset}/models/teacher_{modality}/train.json",
        "results/{preset}/models/teacher_{modality}/curves.csv",
        "results/{preset}/models/teacher_{modality}/eval_curve.csv",
    params:
        values=lambda w: effective(
            w,
            [
                "model.backbone",
                "model.decoder_embed_dim",
                "model.drop_path_rate",
                "model.drop_path_stage2",
                "model.decoder_dropout",
                "model.decoder_bn_eps",
                "model.teacher_decoder_bn_eps",
                "model.decoder_bias_init",
                "model.pretrained",
                "model.pretrained_dir",
                "train.epochs",
                "train.batch_size",
                "train.lr",
                "train.weight_decay",
                "train.betas",
                "train.warmup_epochs",
                "train.warmup_ratio",
                "train.first_step_full_lr",
                "train.poly_power",
                "train.crop",
                "train.scales",
                "train.flip",
                "train.fill_last_batch",
                "train.fusion_bn",
                "train.ce_reduction",
                "train.seed",
                "train.eval_every",
                "train.eval_from",
                "train.device",
                "train.bgr",
                "train.deterministic",
                "train.micro_batch",
                "train.amp",
                "train.channels_last",
                "train.compile",
                "train.cudnn_benchmark",
                "eval.windows",
                "inputs.pretrained",
                "kd.teachers.{modality}",
                "inputs.teachers.{modality}",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/models/teacher_{modality}/model.pt",
                "results/{preset}/models/teacher_{modality}/model_best.pt",
                "results/{preset}/models/teacher_{modality}/train.json",
                "results/{preset}/models/teacher_{modality}/curves.csv",
                "results/{preset}/models/teacher_{modality}/eval_curve.csv",
            ],
        ),
    log:
        "results/{preset}/logs/train_teacher_{modality}.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        "primkd train --params params.yaml --preset {wildcards.preset} --role teacher --modality "
        "{wildcards.modality} --data data/{wildcards.preset}/prepared --hha data/{wildcards.preset}/hha --out-dir "
        "results/{wildcards.preset}/models/teacher_{wildcards.modality} --checkpoint-dir "
        "results/{wildcards.preset}/checkpoints/teacher_{wildcards.modality} --log {log}"


# Each seed of `seeds` trains the CMX baseline once, into seed<k>/ (model.pt, train.json, curves.csv,
# eval_curve.csv); the seed replaces train.seed.
rule train_cmx:
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
        "src/primkd/engine/checkpoint.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/evaluate_run.py",
        "src/primkd/engine/metrics.py",
        "src/primkd/engine/optim.py",
        "src/primkd/engine/precision.py",
        "src/primkd/engine/released.py",
        "src/primkd/engine/results.py",
        "src/primkd/engine/runtime.py",
        "src/primkd/engine/seeds.py",
        "src/primkd/engine/train.py",
        "src/primkd/engine/usage.py",
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
        pretrained_input,
    output:
        directory("results/{preset}/models/cmx/seed{seed}"),
    params:
        values=lambda w: effective(
            w,
            [
                "model.backbone",
                "model.decoder_embed_dim",
                "model.drop_path_rate",
                "model.drop_path_stage2",
                "model.decoder_dropout",
                "model.decoder_bn_eps",
                "model.teacher_decoder_bn_eps",
                "model.decoder_bias_init",
                "model.pretrained",
                "model.pretrained_dir",
                "train.epochs",
                "train.batch_size",
                "train.lr",
                "train.weight_decay",
                "train.betas",
                "train.warmup_epochs",
                "train.warmup_ratio",
                "train.first_step_full_lr",
                "train.poly_power",
                "train.crop",
                "train.scales",
                "train.flip",
                "train.fill_last_batch",
                "train.fusion_bn",
                "train.ce_reduction",
                "train.eval_every",
                "train.eval_from",
                "train.device",
                "train.bgr",
                "train.deterministic",
                "train.micro_batch",
                "train.amp",
                "train.channels_last",
                "train.compile",
                "train.cudnn_benchmark",
                "eval.windows",
                "inputs.pretrained",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/models/cmx/seed{seed}",
            ],
        ),
    log:
        "results/{preset}/logs/train_cmx_seed{seed}.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        "primkd train --params params.yaml --preset {wildcards.preset} --role student --seed {wildcards.seed} "
        "--data data/{wildcards.preset}/prepared --hha data/{wildcards.preset}/hha --out-dir "
        "results/{wildcards.preset}/models/cmx/seed{wildcards.seed} --checkpoint-dir "
        "results/{wildcards.preset}/checkpoints/cmx/seed{wildcards.seed} --log {log}"


# One stage per experiment and seed, in one matrix per teacher modality: train_student for the experiments
# distilled from the RGB teacher, train_student_depth for the depth teacher's, each depending on its teacher's
# model only. DVC's matrix cannot look up experiments.<exp>.teacher, so the experiments of each group are written
# out from params.yaml (`python -m primkd.stages --write` after adding an experiment or changing its teacher;
# resolve_params fails until then).
rule train_student:
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
        "src/primkd/engine/checkpoint.py",
        "src/primkd/engine/counts.py",
        "src/primkd/engine/distributed.py",
        "src/primkd/engine/evaluate.py",
        "src/primkd/engine/evaluate_run.py",
        "src/primkd/engine/metrics.py",
        "src/primkd/engine/optim.py",
        "src/primkd/engine/precision.py",
        "src/primkd/engine/released.py",
        "src/primkd/engine/results.py",
        "src/primkd/engine/runtime.py",
        "src/primkd/engine/seeds.py",
        "src/primkd/engine/train.py",
        "src/primkd/engine/usage.py",
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
        lambda w: f"results/{w.preset}/models/teacher_{CFG['experiments'][w.exp]['teacher']}/model.pt",
        pretrained_input,
    output:
        directory("results/{preset}/models/{exp}/seed{seed}"),
    params:
        values=lambda w: effective(
            w,
            [
                "model.backbone",
                "model.decoder_embed_dim",
                "model.drop_path_rate",
                "model.drop_path_stage2",
                "model.decoder_dropout",
                "model.decoder_bn_eps",
                "model.teacher_decoder_bn_eps",
                "model.decoder_bias_init",
                "model.pretrained",
                "model.pretrained_dir",
                "train.epochs",
                "train.batch_size",
                "train.lr",
                "train.weight_decay",
                "train.betas",
                "train.warmup_epochs",
                "train.warmup_ratio",
                "train.first_step_full_lr",
                "train.poly_power",
                "train.crop",
                "train.scales",
                "train.flip",
                "train.fill_last_batch",
                "train.fusion_bn",
                "train.ce_reduction",
                "train.eval_every",
                "train.eval_from",
                "train.device",
                "train.bgr",
                "train.deterministic",
                "train.micro_batch",
                "train.amp",
                "train.channels_last",
                "train.compile",
                "train.cudnn_benchmark",
                "eval.windows",
                "inputs.pretrained",
                "experiments.{exp}.teacher",
                "experiments.{exp}.kd.alpha",
                "experiments.{exp}.kd.beta",
                "experiments.{exp}.kd.rule",
                "experiments.{exp}.kd.aligner",
                "experiments.{exp}.kd.mask_lambda",
                "experiments.{exp}.kd.per_sample",
                "experiments.{exp}.kd.kl_direction",
                "experiments.{exp}.kd.temperature",
                "experiments.{exp}.teacher_source",
                "experiments.{exp}.teacher_file",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/models/{exp}/seed{seed}",
            ],
        ),
    log:
        "results/{preset}/logs/train_{exp}_seed{seed}.log",
    threads: CFG["resources"]["train"]["cpus_per_task"]
    resources:
        **job_resources("train"),
    conda:
        "../../environment.yml"
    shell:
        "primkd train --params params.yaml --preset {wildcards.preset} --role student --experiment {wildcards.exp} "
        "--seed {wildcards.seed} --teacher-dir results/{wildcards.preset}/models --data "
        "data/{wildcards.preset}/prepared --hha data/{wildcards.preset}/hha --out-dir "
        "results/{wildcards.preset}/models/{wildcards.exp}/seed{wildcards.seed} --checkpoint-dir "
        "results/{wildcards.preset}/checkpoints/{wildcards.exp}/seed{wildcards.seed} --log {log}"
