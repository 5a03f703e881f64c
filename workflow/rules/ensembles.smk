# Ensemble manifests (checked members + checksums) and the objective table of each ensemble.


def member_files(wildcards):
    ensemble = config["ensembles"][wildcards.ensemble]
    files = []
    for group in ("members", "validation_members"):
        for member in ensemble.get(group) or []:
            files.append(member.get("checkpoint") or member["torchscript"])
    truth = ensemble.get("ground_truth")
    if truth:
        files.append(truth["file"])
    return files


rule assemble_ensemble:
    input:
        spec=f"{RESOURCES}/ensembles/{{ensemble}}.spec.json",
        members=member_files,
    output:
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
    log:
        f"{RESOURCES}/logs/ensembles/{{ensemble}}.log",
    shell:
        "{PYTHON} -m mei_core assemble --spec {input.spec} --manifest {output.manifest} > {log} 2>&1"


rule build_objective_table:
    input:
        spec=f"{RESOURCES}/objectives/{{ensemble}}.spec.json",
        manifest=f"{RESOURCES}/ensembles/{{ensemble}}.manifest.json",
    output:
        table=f"{RESOURCES}/objectives/{{ensemble}}.parquet",
    log:
        f"{RESOURCES}/logs/objectives/{{ensemble}}.log",
    shell:
        "{PYTHON} -m mei_core objective-table --spec {input.spec} --manifest {input.manifest}"
        " --out {output.table} > {log} 2>&1"
