# PNG grids of MEIs per (ensemble, method), also collected by `snakemake --report`.


rule mei_grid:
    input:
        zarr=PATHS.zarr("{ensemble}"),
        validation=PATHS.ensemble_table("{ensemble}", "validation"),
    output:
        report(
            PATHS.figure("{ensemble}", "{method}"),
            caption="../report/mei_grid.rst",
            category="MEIs",
            subcategory="{ensemble}",
            labels={"ensemble": "{ensemble}", "method": "{method}"},
        ),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("report", "{ensemble}", "{method}"),
    shell:
        "python -m mei_core report --zarr {input.zarr:q} --method {wildcards.method:q}"
        " --validation {input.validation:q} --out {output:q} > {log:q} 2>&1"
