# The offline results browser, results/browse/index.html (mei_core/pipeline/browse.py): thumbnail
# sprites per (ensemble, method) and one page over the results tables.
import json


# A method's thumbnails depend on its own shards: the store is read, but it is rewritten whenever any
# method changes, so it is ancient here and only the changed methods are redrawn.
rule browse_thumbnails:
    input:
        zarr=ancient(PATHS.zarr("{ensemble}")),
        shards=lambda wildcards: PLAN.method_shard_files(wildcards.ensemble, wildcards.method),
    output:
        directory(PATHS.browse_thumbnails("{ensemble}", "{method}")),
    params:
        gifs=lambda wildcards: PATHS.video_folder(wildcards.ensemble, wildcards.method) if wildcards.ensemble in PLAN.video_ensembles else "",
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("browse", "{ensemble}", "{method}"),
    shell:
        "python -m mei_core browse-thumbnails --zarr {input.zarr:q} --method {wildcards.method:q}"
        " --gif-folder {params.gifs:q} --out-dir {output:q} > {log:q} 2>&1"


rule browse:
    input:
        scores=PATHS.table("scores"),
        validation=PATHS.table("validation"),
        traces=PATHS.table("traces"),
        thumbnails=[PATHS.browse_thumbnails(e, m) for e, m in PLAN.pairs()],
        # the page links the GIFs and grid figures: they are made first
        videos=[PATHS.video_folder(e, m) for e, m in PLAN.pairs() if e in PLAN.video_ensembles],
        grids=[PATHS.grid_figure(e, g) for e in PLAN.ensembles for g in PLAN.grids_of(e)],
    output:
        index=PATHS.browse_index(),
        data=PATHS.browse_data(),
        traces=directory(PATHS.browse_traces()),
    params:
        grids=json.dumps({e: {g: {"methods": methods, "labels": PLAN.grid_labels(methods), "figure": PATHS.grid_figure(e, g)}
                              for g, methods in PLAN.grids_of(e).items()} for e in PLAN.ensembles}),
    conda:
        "../envs/mei_core.yaml"
    log:
        PATHS.log("browse", "index"),
    shell:
        "python -m mei_core browse --scores {input.scores:q} --validation {input.validation:q} --traces {input.traces:q}"
        " --thumbnails {input.thumbnails:q} --grids {params.grids:q} --out {output.index:q} --data {output.data:q}"
        " --trace-dir {output.traces:q} > {log:q} 2>&1"
