# The embedded ground-truth demo: simulated V1 responses and the CNN members trained on them.


rule demo_dataset:
    input:
        spec=f"{RESOURCES}/demo/{{demo}}/spec.json",
    output:
        dataset=f"{RESOURCES}/demo/{{demo}}/dataset.pt",
        truth=f"{RESOURCES}/demo/{{demo}}/ground_truth.json",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/demo/{{demo}}/dataset.log",
    threads: 1
    shell:
        "python -m mei_core demo-dataset --spec {input.spec} --dataset {output.dataset}"
        " --truth {output.truth} --threads {threads} > {log} 2>&1"


rule demo_member:
    input:
        spec=f"{RESOURCES}/demo/{{demo}}/spec.json",
        dataset=f"{RESOURCES}/demo/{{demo}}/dataset.pt",
        truth=f"{RESOURCES}/demo/{{demo}}/ground_truth.json",
    output:
        checkpoint=f"{RESOURCES}/demo/{{demo}}/member_{{seed}}.pt",
        metrics=f"{RESOURCES}/demo/{{demo}}/member_{{seed}}.metrics.json",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/demo/{{demo}}/member_{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    threads: 1
    shell:
        "python -m mei_core demo-member --spec {input.spec} --dataset {input.dataset}"
        " --truth {input.truth} --seed {wildcards.seed} --checkpoint {output.checkpoint}"
        " --metrics {output.metrics} --threads {threads} > {log} 2>&1"


rule demo_connectome:
    input:
        spec=f"{RESOURCES}/demo/{{demo}}/spec.json",
    output:
        weights=f"{RESOURCES}/demo/{{demo}}/weights.npz",
        network=f"{RESOURCES}/demo/{{demo}}/network.json",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/demo/{{demo}}/connectome.log",
    shell:
        "python -m mei_core demo-connectome --spec {input.spec} --weights {output.weights}"
        " --network {output.network} > {log} 2>&1"


rule demo_retina:
    input:
        spec=f"{RESOURCES}/demo/{{demo}}/spec.json",
    output:
        f"{RESOURCES}/demo/{{demo}}/retina.json",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/demo/{{demo}}/retina.log",
    shell:
        "python -m mei_core demo-retina --spec {input.spec} --description {output} > {log} 2>&1"
