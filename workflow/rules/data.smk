rule prepare:
    input:
        "src/primkd/data",
    output:
        directory(DATA),
    params:
        values=values("data"),
    log:
        f"results/{PRESET}/logs/prepare.log",
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
    shell:
        "primkd hha --params params.yaml --preset {PRESET} --data {DATA} --out {output} --log {log}"
