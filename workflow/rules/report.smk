# PNG grids of MEIs per (ensemble, method), also collected by `snakemake --report`.


rule mei_grid:
    input:
        zarr=f"{RESULTS}/{{ensemble}}.zarr",
        validation=f"{RESOURCES}/tables/{{ensemble}}.validation.parquet",
    output:
        report(
            f"{RESULTS}/figures/{{ensemble}}/{{method}}.png",
            caption="../report/mei_grid.rst",
            category="MEIs",
            subcategory="{ensemble}",
            labels={"ensemble": "{ensemble}", "method": "{method}"},
        ),
    conda:
        "../envs/mei_core.yaml"
    log:
        f"{RESOURCES}/logs/report/{{ensemble}}/{{method}}.log",
    shell:
        "python -m mei_core report --zarr {input.zarr} --method {wildcards.method}"
        " --validation {input.validation} --out {output} > {log} 2>&1"
