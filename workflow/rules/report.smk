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


rule grid_figure:
    input:
        validation=PATHS.ensemble_table("{ensemble}", "validation"),
    output:
        report(
            PATHS.grid_figure("{ensemble}", "{grid}"),
            caption="../report/grid_figure.rst",
            category="Grids",
            subcategory="{ensemble}",
            labels={"ensemble": "{ensemble}", "grid": "{grid}"},
        ),
    params:
        methods=lambda wildcards: PLAN.grids_of(wildcards.ensemble)[wildcards.grid],
        labels=lambda wildcards: PLAN.grid_labels(PLAN.grids_of(wildcards.ensemble)[wildcards.grid]),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("report", "{ensemble}", "grid_{grid}"),
    shell:
        "python -m mei_core grid-figure --validation {input.validation:q} --methods {params.methods:q}"
        " --labels {params.labels:q} --title {wildcards.grid:q} --out {output:q} > {log:q} 2>&1"


rule video_gifs:
    input:
        zarr=PATHS.zarr("{ensemble}"),
    output:
        directory(PATHS.video_folder("{ensemble}", "{method}")),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("report", "{ensemble}", "{method}_gifs"),
    shell:
        "python -m mei_core video-gifs --zarr {input.zarr:q} --method {wildcards.method:q} --out-dir {output:q} > {log:q} 2>&1"
