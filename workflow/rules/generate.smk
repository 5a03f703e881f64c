# One GPU job per (ensemble, method, seed, shard of neurons): the batched engine over the shard.
# The shard's own spec file (rewritten only when its rows change) decides reruns; the full objective
# table is read as `ancient` so that adding neurons reruns only the shards that changed.


rule generate_meis:
    input:
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
        table=ancient(f"{RESOURCES}/objectives/{{ensemble}}.parquet"),
        method=f"{RESOURCES}/methods/{{method}}.json",
        shard=f"{RESOURCES}/objectives/{{ensemble}}/shard{{shard}}.json",
    output:
        f"{RESOURCES}/meis/{{ensemble}}/{{method}}/seed{{seed}}/shard{{shard}}.npz",
    log:
        f"{RESOURCES}/logs/meis/{{ensemble}}/{{method}}/seed{{seed}}/shard{{shard}}.log",
    wildcard_constraints:
        seed=r"\d+",
        shard=r"\d+",
    threads: THREADS
    resources:
        mem_mb=4000,
    shell:
        "{PYTHON} -m mei_core generate --manifest {input.manifest} --table {input.table}"
        " --method {input.method} --shard {input.shard} --seed {wildcards.seed} --out {output}"
        " --device {DEVICE} --threads {threads} > {log} 2>&1"
