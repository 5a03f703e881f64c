# Shards → one Zarr store per ensemble and per-ensemble tables → the combined Parquet tables.


rule aggregate:
    input:
        manifest=PATHS.manifest("{ensemble}", "members"),
        table=PATHS.objective_table("{ensemble}"),
        shards=lambda wildcards: PLAN.shard_files(wildcards.ensemble),
        heldout=lambda wildcards: PLAN.heldout_files(wildcards.ensemble),
    output:
        zarr=directory(PATHS.zarr("{ensemble}")),
        scores=PATHS.ensemble_table("{ensemble}", "scores"),
        traces=PATHS.ensemble_table("{ensemble}", "traces"),
    params:
        methods=lambda wildcards: PLAN.methods_of_ensemble[wildcards.ensemble],
        seeds=PLAN.seeds,
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("aggregate", "{ensemble}"),
    shell:
        "python -m mei_core aggregate --manifest {input.manifest:q} --table {input.table:q}"
        " --shards {input.shards:q} --heldout {input.heldout:q} --methods {params.methods:q} --seeds {params.seeds}"
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


rule combine_tables:
    input:
        lambda wildcards: [PATHS.ensemble_table(ensemble, wildcards.table) for ensemble in PLAN.ensembles],
    output:
        PATHS.table("{table}"),
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("tables", "{table}"),
    shell:
        "python -m mei_core concat --inputs {input:q} --out {output:q} > {log:q} 2>&1"


rule checksums:
    input:
        [PATHS.table(table) for table in TABLES],
    output:
        PATHS.checksums(),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("tables", "checksums"),
    shell:
        "python -m mei_core checksums --tables {input:q} --out {output:q} > {log:q} 2>&1"
