# Ensemble manifests (checked members + checksums) and the objective table of each ensemble.


rule assemble_ensemble:
    input:
        spec=f"{RESOURCES}/ensembles/{{ensemble}}.spec.json",
        members=lambda wildcards: PLAN.member_files(wildcards.ensemble),
    output:
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/ensembles/{{ensemble}}.log",
    shell:
        "python -m mei_core assemble --spec {input.spec} --manifest {output.manifest} > {log} 2>&1"


rule build_objective_table:
    input:
        spec=f"{RESOURCES}/objectives/{{ensemble}}.spec.json",
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
    output:
        table=f"{RESOURCES}/objectives/{{ensemble}}.parquet",
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/objectives/{{ensemble}}.log",
    shell:
        "python -m mei_core objective-table --spec {input.spec} --manifest {input.manifest}"
        " --out {output.table} > {log} 2>&1"
