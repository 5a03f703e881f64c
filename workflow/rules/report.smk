# PNG grids of MEIs per (ensemble, method), also collected by `snakemake --report`.
#
# The store and the validation table hold every method of an ensemble and are rewritten whenever any
# method changes: figures read them as `ancient` and depend on their own methods' MEI and held-out
# files (Plan.method_result_files) and the ground truth, so adding or changing a method draws only its
# figures, and the grid figures of the grids it belongs to.


rule mei_grid:
    input:
        zarr=ancient(PATHS.zarr("{ensemble}")),
        validation=ancient(PATHS.ensemble_table("{ensemble}", "validation")),
        results=lambda wildcards: PLAN.method_result_files(wildcards.ensemble, wildcards.method),
        truth=lambda wildcards: PLAN.ground_truth_files(wildcards.ensemble),
    output:
        report(
            PATHS.figure("{ensemble}", "{method}"),
            caption="../report/mei_grid.rst",
            category="MEIs",
            subcategory="{ensemble}",
            labels={"ensemble": "{ensemble}", "method": "{method}"},
        ),
    params:
        content=lambda wildcards: PLAN.input_digest(PLAN.ground_truth_files(wildcards.ensemble)),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("report", "{ensemble}", "{method}"),
    shell:
        "python -m mei_core report --zarr {input.zarr:q} --method {wildcards.method:q}"
        " --validation {input.validation:q} --out {output:q} > {log:q} 2>&1"


rule grid_figure:
    input:
        validation=ancient(PATHS.ensemble_table("{ensemble}", "validation")),
        results=lambda wildcards: [f for m in PLAN.grids_of(wildcards.ensemble)[wildcards.grid] for f in PLAN.method_result_files(wildcards.ensemble, m)],
        truth=lambda wildcards: PLAN.ground_truth_files(wildcards.ensemble),
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
        content=lambda wildcards: PLAN.input_digest(PLAN.ground_truth_files(wildcards.ensemble)),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("report", "{ensemble}", "grid_{grid}"),
    shell:
        "python -m mei_core grid-figure --validation {input.validation:q} --methods {params.methods:q}"
        " --labels {params.labels:q} --title {wildcards.grid:q} --out {output:q} > {log:q} 2>&1"


rule video_gifs:
    input:
        zarr=ancient(PATHS.zarr("{ensemble}")),
        shards=lambda wildcards: PLAN.method_shard_files(wildcards.ensemble, wildcards.method),
    output:
        directory(PATHS.video_folder("{ensemble}", "{method}")),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("report", "{ensemble}", "{method}_gifs"),
    shell:
        "python -m mei_core video-gifs --zarr {input.zarr:q} --method {wildcards.method:q} --out-dir {output:q} > {log:q} 2>&1"
