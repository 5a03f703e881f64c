# Ensemble manifests (checked members + checksums + identity), one per member group, and the
# objective table of each ensemble.


rule assemble_ensemble:
    input:
        spec=PATHS.member_spec("{ensemble}", "{group}"),
        members=lambda wildcards: PLAN.member_files(wildcards.ensemble, wildcards.group),
    output:
        manifest=PATHS.manifest("{ensemble}", "{group}"),
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.member_spec(wildcards.ensemble, wildcards.group), *PLAN.member_files(wildcards.ensemble, wildcards.group)]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("ensembles", "{ensemble}", "{group}"),
    wildcard_constraints:
        group="|".join(MEMBER_GROUPS),
    shell:
        "python -m mei_core assemble --spec {input.spec:q} --manifest {output.manifest:q} > {log:q} 2>&1"


rule build_objective_table:
    input:
        spec=PATHS.objective_spec("{ensemble}"),
    output:
        table=PATHS.objective_table("{ensemble}"),
    params:
        content=lambda wildcards: PLAN.input_digest([PATHS.objective_spec(wildcards.ensemble)]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("objectives", "{ensemble}"),
    shell:
        "python -m mei_core objective-table --spec {input.spec:q} --out {output.table:q} > {log:q} 2>&1"
