"""A connectome ensemble through the real workflow: target activations in, achieved activations out."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from quality import at_least, at_most
import xarray as xr
import yaml

from mei_core.demo.connectome import KIND as CONNECTOME_DEMO
from workflow_support import REPO, snakemake, write_config

pytestmark = pytest.mark.slow

DEMO = {"kind": "connectome", "n_neurons": 300, "n_synapses": 4000, "n_sensory": 20, "num_layers": 3, "population_seed": 0}


def connectome_config() -> dict:
    folder = "resources/demo/tinyconnectome"
    return {
        "device": "cpu",
        "shard_size": 8,
        "seeds": [0],
        "demo": {"tinyconnectome": DEMO},
        "ensembles": {
            "fly": {
                "input_shape": [20, 3],
                "outputs": 300,
                "members": [{
                    "builder": "mei_core.models.connectome.load_network",
                    "builder_kwargs": {"weights": f"{folder}/weights.npz", "network": f"{folder}/network.json", "num_layers": 3},
                    "files": [f"{folder}/weights.npz", f"{folder}/network.json"],
                }],
            }
        },
        "objectives": {"fly": {"kind": "targets", "targets": {"file": "targets.csv"}, "kwargs": {"activation_penalty": {"l1": 0.001, "l2": 0.001}}}},
        "methods": {
            "targets": {
                "config": {
                    "initial": {"path": "RandomUniform", "kwargs": {"low": 0.0, "high": 1.0}},
                    "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
                    "stopper": {"path": "LossRange", "kwargs": {"n_runs": 10, "threshold": 1.0e-5, "max_iterations": 300}},
                    "regularization": {"path": "L1L2", "kwargs": {"l1": 0.001, "l2": 0.001}},
                    "postprocessing": {"path": "ClipRange", "kwargs": {"x_min": 0.0, "x_max": 1.0}},
                    "objectives": {"target_loss": {"path": "ObjectiveTerm", "kwargs": {"term": "target_loss", "interval": 5}}},
                }
            }
        },
    }


@pytest.mark.quality
def test_connectome_targets_are_reached_and_reported(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    CONNECTOME_DEMO.targets(DEMO, n_items=6, per_item=2).to_csv(folder / "targets.csv", index=False)
    write_config(folder, connectome_config())
    snakemake(folder)

    dataset = xr.open_zarr(folder / "results" / "fly.zarr")
    assert dataset["mei"].dims == ("method", "seed", "neuron", "sensory", "layer")
    assert dataset["mei"].shape == (1, 1, 6, 20, 3)
    inputs = dataset["mei"].values
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0  # the optimised input itself, not a squashed copy

    validation = pd.read_parquet(folder / "results" / "validation.parquet")
    assert len(validation) == 6
    at_most("median target rmse", validation["target_rmse"].median(), 0.05)
    scores = pd.read_parquet(folder / "results" / "scores.parquet")
    assert set(scores["stop_reason"]) <= {"loss_range", "max_iterations"}

    activations = pd.read_parquet(folder / "results" / "activations.parquet")
    assert len(activations) == 6 * 300 * 3 and {"item", "neuron", "layer", "group", "activation"} <= set(activations.columns)
    targets = pd.read_csv(folder / "targets.csv")
    reached = targets.merge(activations, on=["item", "neuron", "layer"])
    assert len(reached) == len(targets)
    at_most("median |activation − target|", np.median(np.abs(reached["activation"] - reached["value"])), 0.05)

    traces = pd.read_parquet(folder / "results" / "traces.parquet")
    first = traces[(traces["neuron_id"] == 0) & (traces["tracker"] == "target_loss")].sort_values("step")
    assert first["value"].iloc[-1] < first["value"].iloc[0]


def test_the_committed_demo_targets_are_the_ones_the_demo_generates():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    committed = pd.read_csv(REPO / "config" / "demo_connectome_targets.csv")
    regenerated = CONNECTOME_DEMO.targets(config["demo"]["connectome"])
    pd.testing.assert_frame_equal(committed, regenerated, check_dtype=False, atol=1e-4)
