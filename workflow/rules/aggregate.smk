# Shards → one Zarr store per ensemble and per-ensemble tables → the combined Parquet tables.


rule aggregate:
    input:
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
        table=f"{RESOURCES}/objectives/{{ensemble}}.parquet",
        shards=lambda wildcards: PLAN.shard_files(wildcards.ensemble),
    output:
        zarr=directory(f"{RESULTS}/{{ensemble}}.zarr"),
        scores=f"{RESOURCES}/tables/{{ensemble}}.scores.parquet",
        traces=f"{RESOURCES}/tables/{{ensemble}}.traces.parquet",
    params:
        methods=lambda wildcards: " ".join(PLAN.methods_of_ensemble[wildcards.ensemble]),
        seeds=" ".join(map(str, PLAN.seeds)),
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/aggregate/{{ensemble}}.log",
    shell:
        "python -m mei_core aggregate --manifest {input.manifest} --table {input.table}"
        " --shards {input.shards} --methods {params.methods} --seeds {params.seeds}"
        " --zarr {output.zarr} --scores {output.scores} --traces {output.traces} > {log} 2>&1"


rule validate:
    input:
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
        table=f"{RESOURCES}/objectives/{{ensemble}}.parquet",
        zarr=f"{RESULTS}/{{ensemble}}.zarr",
        scores=f"{RESOURCES}/tables/{{ensemble}}.scores.parquet",
    output:
        validation=f"{RESOURCES}/tables/{{ensemble}}.validation.parquet",
        activations=f"{RESOURCES}/tables/{{ensemble}}.activations.parquet",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/validate/{{ensemble}}.log",
    shell:
        "python -m mei_core validate --manifest {input.manifest} --table {input.table} --zarr {input.zarr}"
        " --scores {input.scores} --out {output.validation} --activations {output.activations} > {log} 2>&1"


rule combine_tables:
    input:
        expand(f"{RESOURCES}/tables/{{ensemble}}.{{{{table}}}}.parquet", ensemble=PLAN.ensembles),
    output:
        f"{RESULTS}/{{table}}.parquet",
    wildcard_constraints:
        table="scores|traces|validation|activations",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/tables/{{table}}.log",
    shell:
        "python -m mei_core concat --inputs {input} --out {output} > {log} 2>&1"
