rule prepare:
    input:
        "src/primkd/data",
    output:
        directory(DATA),
    params:
        preset=PRESET,
        values=values("data"),
    log:
        f"results/{PRESET}/logs/prepare.log",
    threads: CFG["resources"]["prepare"]["cpus_per_task"]
    resources:
        **job_resources("prepare"),
    conda:
        "../../environment.yml"
    shell:
        "primkd prepare --params params.yaml --preset {params.preset} --out {output} --log {log}"


rule hha:
    input:
        "src/primkd/data/hha.py",
        data=DATA,
    output:
        hha=directory(HHA),
        sheet=f"results/{PRESET}/contact_sheet.png",
    params:
        preset=PRESET,
        values=values("hha"),
    log:
        f"results/{PRESET}/logs/hha.log",
    threads: CFG["resources"]["hha"]["cpus_per_task"]
    resources:
        **job_resources("hha"),
    conda:
        "../../environment.yml"
    shell:
        "primkd hha --params params.yaml --preset {params.preset} --data {input.data} --out {output.hha} "
        "--contact-sheet {output.sheet} --log {log}"
