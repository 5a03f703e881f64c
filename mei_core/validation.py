"""Validation of MEIs: held-out ensemble responses, and ground-truth metrics where the truth is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from .files import atomic_path, read_json


def validate_ensemble(manifest_path: str, zarr_path: str, scores_path: str, out_path: str) -> pd.DataFrame:
    """One row per MEI: its score and held-out score, and for demo ensembles the correlation of the
    MEI to the true filter (phase-invariant for complex cells) and the true neuron's activation
    relative to its optimum at the same norm. Reads one (method, seed) slab of MEIs at a time."""
    manifest = read_json(manifest_path)
    columns = ["ensemble", "method", "seed", "neuron_id", "output_unit", "mei_index", "score", "heldout_score"]
    table = pd.read_parquet(scores_path, columns=columns)
    truth = manifest.get("ground_truth")
    if truth:
        from .models.demo import GroundTruthV1, filter_correlation, relative_activation

        population = GroundTruthV1.from_dict(read_json(truth["file"])["population"])
        dataset = xr.open_zarr(zarr_path)
        neuron_position = {int(n): i for i, n in enumerate(dataset["neuron"].values)}
        correlation = np.full(len(table), np.nan, dtype=np.float32)
        activation = np.full(len(table), np.nan, dtype=np.float32)
        for (method, seed), group in table.groupby(["method", "seed"], sort=False):
            slab = np.asarray(dataset["mei"].sel({"method": method, "seed": seed}).values)
            for row, neuron, unit, mei_index in zip(group.index, group["neuron_id"], group["output_unit"], group["mei_index"]):
                mei = slab[neuron_position[int(neuron)]]
                if "mei" in dataset.dims:
                    mei = mei[int(mei_index)]
                mei = torch.from_numpy(np.ascontiguousarray(mei))
                correlation[row] = filter_correlation(mei, population, int(unit))
                activation[row] = relative_activation(mei, population, int(unit))
        table["cell_type"] = [population.cell_types[int(u)] for u in table["output_unit"]]
        table["filter_correlation"] = correlation
        table["relative_activation"] = activation
    with atomic_path(out_path, suffix=".parquet") as temporary:
        table.to_parquet(temporary, index=False)
    return table
