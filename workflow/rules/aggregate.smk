# Shards → one Zarr store per ensemble and per-ensemble tables → the combined Parquet tables.


# The store and the tables are `update` outputs: Snakemake does not delete them before the job (it
# keeps a backup and restores it if the job fails), and the job builds its store beside the old one
# and swaps it in only when complete, under a lock shared with any other run writing the same store
# (mei_core.pipeline.results). Every shard file must hold its slot's result (the method and shard
# specs and the device give each slot's key): another file in its place is refused by name.
rule aggregate:
    input:
        manifest=PATHS.manifest("{ensemble}", "members"),
        table=PATHS.objective_table("{ensemble}"),
        shards=lambda wildcards: PLAN.shard_files(wildcards.ensemble),
        heldout=lambda wildcards: PLAN.heldout_files(wildcards.ensemble),
        method_specs=lambda wildcards: [PATHS.method_spec(wildcards.ensemble, m) for m in PLAN.methods_of_ensemble[wildcards.ensemble]],
        shard_specs=lambda wildcards: [PATHS.shard_spec(wildcards.ensemble, i) for i in range(PLAN.shard_counts[wildcards.ensemble])],
    output:
        zarr=update(directory(PATHS.zarr("{ensemble}"))),
        scores=update(PATHS.ensemble_table("{ensemble}", "scores")),
        traces=update(PATHS.ensemble_table("{ensemble}", "traces")),
    params:
        methods=lambda wildcards: PLAN.methods_of_ensemble[wildcards.ensemble],
        seeds=PLAN.seeds,
        device=config["device"],
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("aggregate", "{ensemble}"),
    shell:
        "python -m mei_core aggregate --manifest {input.manifest:q} --table {input.table:q}"
        " --shards {input.shards:q} --heldout {input.heldout:q} --methods {params.methods:q} --seeds {params.seeds}"
        " --method-specs {input.method_specs:q} --shard-specs {input.shard_specs:q} --device {params.device:q}"
        " --zarr {output.zarr:q} --scores {output.scores:q} --traces {output.traces:q} > {log:q} 2>&1"


rule validate:
    input:
        manifest=PATHS.manifest("{ensemble}", "members"),
        validation_manifest=PATHS.manifest("{ensemble}", "validation_members"),
        table=PATHS.objective_table("{ensemble}"),
        zarr=PATHS.zarr("{ensemble}"),
        scores=PATHS.ensemble_table("{ensemble}", "scores"),
        # ground truth is read here alone: a new truth file reruns validation, nothing before it
        truth=lambda wildcards: PLAN.ground_truth_files(wildcards.ensemble),
    output:
        validation=PATHS.ensemble_table("{ensemble}", "validation"),
        activations=PATHS.ensemble_table("{ensemble}", "activations"),
    params:
        truth_kind=lambda wildcards: (PLAN.ground_truths.get(wildcards.ensemble) or {}).get("kind", "none"),
        content=lambda wildcards: PLAN.input_digest(PLAN.ground_truth_files(wildcards.ensemble)),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("validate", "{ensemble}"),
    shell:
        "python -m mei_core validate --manifest {input.manifest:q} --validation-manifest {input.validation_manifest:q}"
        " --table {input.table:q} --zarr {input.zarr:q} --scores {input.scores:q} --out {output.validation:q}"
        " --activations {output.activations:q} --truth-kind {params.truth_kind:q} --truth {input.truth:q} > {log:q} 2>&1"


# each table's job records its sha256; `checksums` gathers the records and refuses a file changed
# since its job wrote it (so a rerun never records an edited result as intact). Its output is
# `update`: when it refuses, the previous checksums.json stays, and `verify` still names the file.
rule combine_tables:
    input:
        lambda wildcards: [PATHS.ensemble_table(ensemble, wildcards.table) for ensemble in PLAN.ensembles],
    output:
        table=PATHS.table("{table}"),
        record=PATHS.checksum_record(PATHS.table("{table}")),
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("tables", "{table}"),
    shell:
        "python -m mei_core concat --inputs {input:q} --out {output.table:q} --record {output.record:q} > {log:q} 2>&1"


rule checksums:
    input:
        tables=[PATHS.table(table) for table in TABLES],
        records=[PATHS.checksum_record(PATHS.table(table)) for table in TABLES],
        stores=[PATHS.zarr(ensemble) for ensemble in PLAN.ensembles],
    output:
        update(PATHS.checksums()),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("tables", "checksums"),
    shell:
        "python -m mei_core checksums --tables {input.tables:q} --records {input.records:q} --stores {input.stores:q}"
        " --out {output:q} > {log:q} 2>&1"
