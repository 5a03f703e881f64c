# The embedded ground-truth demos (mei_core.demo): simulated data, and the members trained on it.
from mei_core.demo import DEMO_KINDS
from mei_core.demo.v1 import KIND as V1

DEMO = PATHS.demo_folder("{demo}")


rule demo_dataset:
    input:
        spec=PATHS.demo_spec("{demo}"),
    output:
        dataset=f"{DEMO}/{V1.files['dataset']}",
        truth=f"{DEMO}/{V1.files['truth']}",
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.demo_spec(wildcards.demo)]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("demo", "{demo}", "dataset"),
    threads: 1
    shell:
        "python -m mei_core demo-dataset --spec {input.spec:q} --dataset {output.dataset:q}"
        " --truth {output.truth:q} --threads {threads} > {log:q} 2>&1"


rule demo_member:
    input:
        spec=PATHS.demo_spec("{demo}"),
        dataset=f"{DEMO}/{V1.files['dataset']}",
        truth=f"{DEMO}/{V1.files['truth']}",
    output:
        checkpoint=f"{DEMO}/{V1.files['member']}",
        metrics=f"{DEMO}/{V1.files['metrics']}",
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.demo_spec(wildcards.demo)]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("demo", "{demo}", "member_{seed}"),
    wildcard_constraints:
        seed=r"\d+",
    threads: 1
    shell:
        "python -m mei_core demo-member --spec {input.spec:q} --dataset {input.dataset:q}"
        " --truth {input.truth:q} --seed {wildcards.seed} --checkpoint {output.checkpoint:q}"
        " --metrics {output.metrics:q} --threads {threads} > {log:q} 2>&1"


# one rule per one-step demo kind (mei_core.demo.DemoKind.one_step): a new kind needs no rule here
for _demo_kind in [entry.value for entry in DEMO_KINDS if entry.value.one_step]:

    rule:
        name:
            f"demo_{_demo_kind.name}"
        input:
            spec=PATHS.demo_spec("{demo}"),
        output:
            [f"{DEMO}/{name}" for name in _demo_kind.files.values()],
        conda:
            "../envs/mei_core.yaml"
        params:
            # a directive's value is read here, in the loop; the shell line is formatted when the job
            # runs, after the loop has moved on, so it reads the kind from params
            kind=_demo_kind.name,
            content=lambda wildcards: PLAN.input_digest([PATHS.demo_spec(wildcards.demo)]),
        log:
            PATHS.log("demo", "{demo}", _demo_kind.name),
        shell:
            "python -m mei_core demo-make --kind {params.kind} --spec {input.spec:q} --outputs {output:q} > {log:q} 2>&1"
