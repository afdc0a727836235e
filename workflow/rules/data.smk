rule prepare:
    input:
        "src/primkd/data",
    output:
        directory(DATA),
    params:
        values=values("data"),
    log:
        f"results/{PRESET}/logs/prepare.log",
    threads: CFG["resources"]["prepare"]["cpus_per_task"]
    resources:
        **job_resources("prepare"),
    shell:
        "primkd prepare --params params.yaml --preset {PRESET} --out {output} --log {log}"


rule hha:
    input:
        "src/primkd/data/hha.py",
        DATA,
    output:
        directory(HHA),
    params:
        values=values("hha"),
    log:
        f"results/{PRESET}/logs/hha.log",
    threads: CFG["resources"]["hha"]["cpus_per_task"]
    resources:
        **job_resources("hha"),
    shell:
        "primkd hha --params params.yaml --preset {PRESET} --data {DATA} --out {output} --log {log}"
