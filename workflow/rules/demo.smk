# The embedded ground-truth demos (mei_core.demo): simulated data, and the members trained on it.
from mei_core.demo.v1 import KIND as V1
from mei_core.demo.retina import KIND as RETINA
from mei_core.demo.vr import KIND as VIRTUAL_RETINA
from mei_core.demo.connectome import KIND as CONNECTOME

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


rule demo_connectome:
    input:
        spec=PATHS.demo_spec("{demo}"),
    output:
        weights=f"{DEMO}/{CONNECTOME.files['weights']}",
        network=f"{DEMO}/{CONNECTOME.files['network']}",
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.demo_spec(wildcards.demo)]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("demo", "{demo}", "connectome"),
    shell:
        "python -m mei_core demo-connectome --spec {input.spec:q} --weights {output.weights:q}"
        " --network {output.network:q} > {log:q} 2>&1"


rule demo_retina:
    input:
        spec=PATHS.demo_spec("{demo}"),
    output:
        f"{DEMO}/{RETINA.files['description']}",
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.demo_spec(wildcards.demo)]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("demo", "{demo}", "retina"),
    shell:
        "python -m mei_core demo-retina --spec {input.spec:q} --description {output:q} > {log:q} 2>&1"


rule demo_virtual_retina:
    input:
        spec=PATHS.demo_spec("{demo}"),
    output:
        f"{DEMO}/{VIRTUAL_RETINA.files['description']}",
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.demo_spec(wildcards.demo)]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("demo", "{demo}", "virtual_retina"),
    shell:
        "python -m mei_core demo-vr --spec {input.spec:q} --description {output:q} > {log:q} 2>&1"
