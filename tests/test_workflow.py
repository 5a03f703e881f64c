"""The workflow, run for real with Snakemake on a tiny project in a temporary folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from workflow_support import (
    edited, make_project, method, planned_outputs, read_config, save_member, snakemake, tiny_config, write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete run of the tiny project; tests copy it before changing anything."""
    folder = make_project(tmp_path_factory.mktemp("tiny") / "project", tiny_config(demo=True))
    snakemake(folder)
    return folder


def generated(planned):
    return sorted(planned.get("generate_meis", []))


def test_a_run_writes_zarr_and_parquet_that_pandas_and_xarray_read(finished):
    scores = pd.read_parquet(finished / "results" / "scores.parquet")
    assert len(scores) == 4 * 2  # neurons × methods × 1 seed
    assert set(scores["method"]) == {"fast", "slow"}
    assert scores.groupby("method")["n_iterations"].first().to_dict() == {"fast": 6, "slow": 10}
    assert (scores["status"] == "ok").all() and (scores["stop_reason"] == "num_iterations").all()
    assert scores["heldout_score"].notna().all() and (scores["score"] > 0).all()
    assert scores["method_hash"].str.len().eq(64).all() and scores["ensemble_hash"].nunique() == 1
    assert str(scores["seed"].dtype) == "int64" and str(scores["score"].dtype) == "float32"

    dataset = xr.open_zarr(finished / "results" / "tiny.zarr")
    assert dataset["mei"].dims == ("method", "seed", "neuron", "channel", "y", "x")
    assert dataset["mei"].shape == (2, 1, 4, 1, 12, 12)
    assert list(dataset["method"].values) == ["fast", "slow"] and list(dataset["neuron"].values) == [0, 1, 2, 3]
    # every MEI in the store has the norm its method fixed, and its score is the one in the table
    norms = np.linalg.norm(dataset["mei"].values.reshape(8, -1), axis=1)
    np.testing.assert_allclose(norms, 6.0, rtol=1e-4)
    row = scores[(scores["method"] == "slow") & (scores["neuron_id"] == 3)].iloc[0]
    assert float(dataset["score"].sel({"method": "slow", "seed": 0, "neuron": 3})) == pytest.approx(row["score"])

    traces = pd.read_parquet(finished / "results" / "traces.parquet")
    fast = traces[(traces["method"] == "fast") & (traces["neuron_id"] == 0)]
    assert fast["step"].tolist() == [0, 4] and fast["tracker"].eq("evaluation").all()
    validation = pd.read_parquet(finished / "results" / "validation.parquet")
    assert len(validation) == 8 and validation["heldout_score"].notna().all()
    # the demo's ground truth: neurons 0-1 simple, 2-3 complex; correlations are real numbers in [-1, 1]
    assert validation.sort_values("neuron_id")["cell_type"].tolist()[::2] == ["simple", "simple", "complex", "complex"]
    assert validation["filter_correlation"].between(-1, 1).all() and validation["relative_activation"].notna().all()
    metrics = (finished / "resources" / "demo" / "tinyv1" / "member_1.metrics.json").read_text()
    assert "mean_test_correlation_by_type" in metrics
    assert (finished / "results" / "figures" / "tiny" / "fast.png").stat().st_size > 1000


def test_the_score_is_the_ensembles_response_to_the_stored_mei(finished):
    from mei_core.pipeline.ensembles import load_ensemble
    from mei_core.files import read_json

    manifests = {g: read_json(finished / "resources" / "ensembles" / "tiny" / f"{g}.manifest.json") for g in ("members", "validation_members")}
    import os

    cwd = os.getcwd()
    os.chdir(finished)
    try:
        model = load_ensemble(manifests["members"])
        held_out = load_ensemble(manifests["validation_members"])
    finally:
        os.chdir(cwd)
    dataset = xr.open_zarr(finished / "results" / "tiny.zarr")
    meis = torch.from_numpy(dataset["mei"].sel({"method": "fast", "seed": 0}).values)
    with torch.no_grad():
        responses = model(meis)[torch.arange(4), torch.arange(4)]
        held_out_responses = held_out(meis)[torch.arange(4), torch.arange(4)]
    np.testing.assert_allclose(dataset["score"].sel({"method": "fast", "seed": 0}).values, responses.numpy(), rtol=1e-4)
    np.testing.assert_allclose(dataset["heldout_score"].sel({"method": "fast", "seed": 0}).values, held_out_responses.numpy(), rtol=1e-4)


def test_touching_nothing_reruns_nothing(project):
    assert planned_outputs(project) == {}


def test_a_new_ground_truth_file_reruns_validation_and_nothing_before_it(project):
    import shutil

    config = edited(read_config(project))
    truth = config["ensembles"]["tiny"]["ground_truth"]
    shutil.copy(project / truth["file"], project / "truth_copy.json")
    truth["file"] = "truth_copy.json"
    write_config(project, config)
    planned = planned_outputs(project)
    assert "validate" in planned
    # validation and what reads it (tables, figures, the browser's page; not its thumbnails)
    assert set(planned) <= {"validate", "combine_tables", "checksums", "mei_grid", "grid_figure", "browse", "all"}


def test_changing_one_method_reruns_only_that_method(project):
    config = edited(read_config(project))
    config["methods"]["slow"]["config"]["stopper"]["kwargs"]["num_iterations"] = 11
    write_config(project, config)
    planned = planned_outputs(project)
    assert generated(planned) == [
        "resources/meis/tiny/slow/seed0/shard0.npz",
        "resources/meis/tiny/slow/seed0/shard1.npz",
    ]
    assert "demo_member" not in planned and "demo_dataset" not in planned and "assemble_ensemble" not in planned


def test_reordering_a_methods_keys_or_respelling_its_numbers_reruns_nothing(project):
    config = edited(read_config(project))
    slow = config["methods"]["slow"]["config"]
    config["methods"]["slow"]["config"] = dict(reversed(list(slow.items())))
    config["methods"]["slow"]["config"]["optimizer"]["kwargs"]["lr"] = 5e-1
    write_config(project, config)
    assert planned_outputs(project) == {}


def test_adding_a_seed_reruns_each_shards_job_which_keeps_the_old_seeds_files(project):
    config = edited(read_config(project))
    config["seeds"] = [0, 7]
    write_config(project, config)
    # one job per shard covers every seed; its outputs are updated, not deleted first, so the job keeps
    # the seed-0 files and computes seed 7 alone (run for real in test_faults: the seed-0 bytes stay)
    assert generated(planned_outputs(project)) == sorted(
        f"resources/meis/tiny/{m}/seed{s}/shard{k}.npz" for m in ("fast", "slow") for k in (0, 1) for s in (0, 7)
    )
    dry_run = snakemake(project, "--dry-run")
    assert "resources/meis/tiny/fast/seed0/shard0.npz (update)" in dry_run.stdout + dry_run.stderr


def test_adding_neurons_runs_only_the_changed_last_shard(project):
    config = edited(read_config(project))
    config["objectives"]["tiny"]["neurons"] = [0, 1, 2, 3, 4]  # shard 1 grows from [3] to [3, 4]
    write_config(project, config)
    assert generated(planned_outputs(project)) == [
        "resources/meis/tiny/fast/seed0/shard1.npz",
        "resources/meis/tiny/slow/seed0/shard1.npz",
    ]


def test_changing_a_member_checkpoint_reruns_that_ensemble(project):
    save_member(project, 2, weight_seed=99, demo=True)
    planned = planned_outputs(project)
    assert planned["assemble_ensemble"] == ["resources/ensembles/tiny/members.manifest.json"]
    assert len(generated(planned)) == 4


def test_a_new_run_after_adding_a_seed_keeps_old_meis_and_adds_new_ones(project, finished):
    config = edited(read_config(project))
    config["seeds"] = [0, 7]
    write_config(project, config)
    snakemake(project)
    scores = pd.read_parquet(project / "results" / "scores.parquet")
    assert sorted(scores["seed"].unique()) == [0, 7] and len(scores) == 16
    dataset = xr.open_zarr(project / "results" / "tiny.zarr")
    assert dataset["mei"].shape == (2, 2, 4, 1, 12, 12) and not np.isnan(dataset["mei"].values).any()
    # seed 0 was not recomputed: its MEIs are bitwise the earlier ones
    earlier = xr.open_zarr(finished / "results" / "tiny.zarr")
    np.testing.assert_array_equal(dataset["mei"].sel({"seed": 0}).values, earlier["mei"].sel({"seed": 0}).values)
    assert not np.array_equal(dataset["mei"].sel({"seed": 7}).values, earlier["mei"].sel({"seed": 0}).values)


def test_adding_a_method_draws_only_its_figures_and_the_cross_method_summaries(project):
    config = edited(read_config(project))
    config["methods"]["medium"] = method(8)
    write_config(project, config)
    planned = planned_outputs(project)
    assert planned["mei_grid"] == ["results/figures/tiny/medium.png"]
    assert planned["browse_thumbnails"] == ["results/browse/thumbnails/tiny/medium"]
    # the tables and the browser's page hold every method: they are made again (cheaply)
    assert set(planned) == {"generate_meis", "score_heldout", "aggregate", "validate", "combine_tables", "checksums",
                            "mei_grid", "browse_thumbnails", "browse", "all"}


def test_lint_is_clean(finished):
    result = snakemake(finished, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
