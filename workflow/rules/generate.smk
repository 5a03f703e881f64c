# One GPU job per (ensemble, method, seed, shard of neurons): the batched engine over the shard.
# A shard's spec file holds its slice of the objective table and is rewritten only when that slice
# changes, so adding neurons reruns only the new or changed shards. (Depending on the whole table,
# even as `ancient`, would rerun every shard: Snakemake masks jobs downstream of a rerun job.)


rule generate_meis:
    input:
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
        method=f"{RESOURCES}/methods/{{method}}.json",
        shard=f"{RESOURCES}/objectives/{{ensemble}}/shard{{shard}}.json",
    output:
        f"{RESOURCES}/meis/{{ensemble}}/{{method}}/seed{{seed}}/shard{{shard}}.npz",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/meis/{{ensemble}}/{{method}}/seed{{seed}}/shard{{shard}}.log",
    wildcard_constraints:
        seed=r"\d+",
        shard=r"\d+",
    params:
        device=config["device"],
    threads: THREADS
    resources:
        mem_mb=4000,
    shell:
        "python -m mei_core generate --manifest {input.manifest}"
        " --method {input.method} --shard {input.shard} --seed {wildcards.seed} --out {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"
