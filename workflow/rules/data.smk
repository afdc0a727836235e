# GENERATED from the stage table (src/primkd/stages/table.py) by `python -m primkd.stages --write`, as dvc.yaml is:
# edit the table, not this file (tests/test_pipelines.py fails when the two differ). The lists (EXPERIMENTS, SEEDS,
# MODALITIES), CFG, effective() and job_resources() come from common.smk.

# Run where Snakemake runs, not as cluster jobs: compute nodes often have no internet access (download), and
# resolve_params takes a fraction of a second.
localrules:
    resolve_params,
    download,


# The effective parameters of the preset, whose keys the other stages depend on (see primkd.stages). Always run:
# its `inputs` are digests of files outside the pipeline (the ImageNet weights, a folder source), read anew each
# time; the stages that depend on them rerun only when a digest changes. It reads the pretrain stage's encoder
# after that stage: the demo's inputs.pretrained.
rule resolve_params:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/io.py",
        "src/primkd/pretrained.py",
        "src/primkd/resources.py",
        "src/primkd/runlog.py",
        "src/primkd/stages/__init__.py",
        "src/primkd/stages/closure.py",
        "src/primkd/stages/dvc.py",
        "src/primkd/stages/generate.py",
        "src/primkd/stages/shipped.py",
        "src/primkd/stages/snakemake.py",
        "src/primkd/stages/table.py",
        "params.yaml",
        "workflow/schemas/params.schema.yaml",
        "pretrain/encoder.pt",
    output:
        "results/{preset}/effective_params.yaml",
    params:
        values=lambda w: effective(
            w,
            [
                "inputs",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "results/{preset}/effective_params.yaml",
            ],
        ),
    log:
        "results/{preset}/logs/resolve_params.log",
    conda:
        "../../environment.yml"
    shell:
        "primkd params --params params.yaml --preset {wildcards.preset} --out "
        "results/{wildcards.preset}/effective_params.yaml --log {log}"


# Raw files of a real dataset (an empty folder for the synthetic and folder sources): downloaded into data.raw_dir
# (resumable, checksummed) and linked here. Cached like every output that is not committed, so that a pulled clone
# has it (`dvc push` carries the archives).
rule download:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/download.py",
        "src/primkd/data/layout.py",
        "src/primkd/data/prepare.py",
        "src/primkd/io.py",
        "src/primkd/resources.py",
        "src/primkd/runlog.py",
    output:
        directory("data/{preset}/raw"),
    params:
        values=lambda w: effective(
            w,
            [
                "data.source",
                "data.urls.nyuv2_labeled",
                "data.urls.nyuv2_splits",
                "data.urls.nyuv2_class_mapping",
                "data.urls.sunrgbd",
                "data.urls.sunrgbd_toolbox",
                "data.checksums.nyuv2_labeled",
                "data.checksums.nyuv2_splits",
                "data.checksums.nyuv2_class_mapping",
                "data.checksums.sunrgbd",
                "data.checksums.sunrgbd_toolbox",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "data/{preset}/raw",
            ],
        ),
    log:
        "results/{preset}/logs/download.log",
    conda:
        "../../environment.yml"
    shell:
        "primkd download --params params.yaml --preset {wildcards.preset} --out data/{wildcards.preset}/raw --log "
        "{log}"


rule prepare:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/download.py",
        "src/primkd/data/folder.py",
        "src/primkd/data/layout.py",
        "src/primkd/data/nyuv2.py",
        "src/primkd/data/prepare.py",
        "src/primkd/data/sunrgbd.py",
        "src/primkd/data/synthetic.py",
        "src/primkd/data/viz.py",
        "src/primkd/data/workers.py",
        "src/primkd/io.py",
        "src/primkd/resources.py",
        "src/primkd/runlog.py",
        "data/{preset}/raw",
    output:
        directory("data/{preset}/prepared"),
    params:
        values=lambda w: effective(
            w,
            [
                "data.source",
                "data.synthetic.num_train",
                "data.synthetic.num_test",
                "data.synthetic.height",
                "data.synthetic.width",
                "data.synthetic.seed",
                "data.synthetic.shared_appearance",
                "data.synthetic.depth_noise",
                "data.synthetic.disparity_step_px",
                "data.synthetic.dark_holes",
                "data.synthetic.glass_holes",
                "data.synthetic.edge_holes",
                "data.synthetic.max_range_m",
                "data.limit",
                "data.folder.path",
                "data.folder.num_classes",
                "data.folder.modality",
                "data.folder.intrinsics",
                "data.folder.intrinsics_file",
                "inputs.folder",
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "data/{preset}/prepared",
            ],
        ),
    log:
        "results/{preset}/logs/prepare.log",
    threads: CFG["resources"]["prepare"]["cpus_per_task"]
    resources:
        **job_resources("prepare"),
    conda:
        "../../environment.yml"
    shell:
        "primkd prepare --params params.yaml --preset {wildcards.preset} --raw data/{wildcards.preset}/raw --out "
        "data/{wildcards.preset}/prepared --log {log}"


rule hha:
    input:
        "src/primkd/__init__.py",
        "src/primkd/cli/__init__.py",
        "src/primkd/cli/options.py",
        "src/primkd/cli/pipeline.py",
        "src/primkd/config.py",
        "src/primkd/data/__init__.py",
        "src/primkd/data/download.py",
        "src/primkd/data/hha.py",
        "src/primkd/data/layout.py",
        "src/primkd/data/prepare.py",
        "src/primkd/data/viz.py",
        "src/primkd/data/workers.py",
        "src/primkd/io.py",
        "src/primkd/resources.py",
        "src/primkd/runlog.py",
        "data/{preset}/prepared",
    output:
        directory("data/{preset}/hha"),
        "results/{preset}/contact_sheet.png",
    params:
        values=lambda w: effective(
            w,
            [
            ],
        ),
        outputs=lambda w: outputs_token(
            w,
            [
                "data/{preset}/hha",
                "results/{preset}/contact_sheet.png",
            ],
        ),
    log:
        "results/{preset}/logs/hha.log",
    threads: CFG["resources"]["hha"]["cpus_per_task"]
    resources:
        **job_resources("hha"),
    conda:
        "../../environment.yml"
    shell:
        "primkd hha --params params.yaml --preset {wildcards.preset} --data data/{wildcards.preset}/prepared --out "
        "data/{wildcards.preset}/hha --contact-sheet results/{wildcards.preset}/contact_sheet.png --log {log}"
