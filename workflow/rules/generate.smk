# One GPU job per (ensemble, method, shard of neurons): the batched engine over the shard's rows for
# every seed at once (one file per seed), then the held-out ensemble's scores of its MEIs (its own job,
# so changing held-out members reruns only scoring). A shard's spec file holds its slice of the objective
# table and is rewritten only when that slice changes, so adding neurons reruns only the new or changed
# shards. (Depending on the whole table, even as `ancient`, would rerun every shard: Snakemake masks jobs
# downstream of a rerun job.) Adding a seed reruns every shard's job, but its outputs are `update`d, not
# deleted first: the job keeps each file that already holds its seed's result (mei_core.pipeline.generate), so
# only the new seed is computed.
#
# `--worker {config[worker]}` (default auto): inside a SLURM allocation the jobs are thin clients of one
# worker process per allocation that imported torch once (mei_core.pipeline.worker), so the jobs of a group job
# (profiles/cluster groups them) pay Python/torch start-up once; elsewhere they run directly.
#
# `--forcerun generate_meis` (or score_heldout, `-F`, or an output named in --forcerun) recomputes
# every file of a job instead of keeping those that hold their result. Snakemake tells no job why it
# runs: the main process (which knows its command line once the DAG is built, when params are
# evaluated) puts what was forced in the environment, which local jobs and a SLURM job's own Snakemake
# (it parses this file again, submitted with the environment) inherit: mei_core.pipeline.plan.recompute_flag.
rule generate_meis:
    input:
        manifest=PATHS.manifest("{ensemble}", "members"),
        method=PATHS.method_spec("{ensemble}", "{method}"),
        shard=PATHS.shard_spec("{ensemble}", "{shard}"),
    output:
        [update(PATHS.shard_file("{ensemble}", "{method}", seed, "{shard}")) for seed in PLAN.seeds],
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("meis", "{ensemble}", "{method}", "shard{shard}"),
    wildcard_constraints:
        shard=r"\d+",
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.method_spec(wildcards.ensemble, wildcards.method), PATHS.shard_spec(wildcards.ensemble, wildcards.shard)]),
        device=config["device"],
        worker=config["worker"],
        seeds=PLAN.seeds,
        recompute=recompute_flag(workflow, "generate_meis"),
    threads: THREADS
    resources:
        mem_mb=4000,
    shell:
        "python -m mei_core generate --manifest {input.manifest:q}"
        " --method {input.method:q} --shard {input.shard:q} --seeds {params.seeds} --out {output:q}"
        " --device {params.device} --threads {threads} --worker {params.worker:q} {params.recompute} > {log:q} 2>&1"


rule score_heldout:
    input:
        manifest=PATHS.manifest("{ensemble}", "validation_members"),
        shard_spec=PATHS.shard_spec("{ensemble}", "{shard}"),
        shards=[PATHS.shard_file("{ensemble}", "{method}", seed, "{shard}") for seed in PLAN.seeds],
    output:
        [update(PATHS.heldout_file("{ensemble}", "{method}", seed, "{shard}")) for seed in PLAN.seeds],
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("heldout", "{ensemble}", "{method}", "shard{shard}"),
    wildcard_constraints:
        shard=r"\d+",
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.shard_spec(wildcards.ensemble, wildcards.shard)]),
        device=config["device"],
        worker=config["worker"],
        recompute=recompute_flag(workflow, "score_heldout"),
    threads: THREADS
    shell:
        "python -m mei_core score --manifest {input.manifest:q} --shard-spec {input.shard_spec:q}"
        " --shards {input.shards:q} --out {output:q} --device {params.device} --threads {threads}"
        " --worker {params.worker:q} {params.recompute} > {log:q} 2>&1"
