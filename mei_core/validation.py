"""Validation of MEIs: held-out ensemble responses, and ground-truth metrics where the truth is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from .files import atomic_path, read_json


ACTIVATION_COLUMNS = {"ensemble": "string", "method": "string", "seed": "int64", "item": "int64", "neuron": "int64", "layer": "int64", "group": "string", "activation": "float32"}


def validate_ensemble(manifest_path: str, zarr_path: str, scores_path: str, out_path: str,
                      table_path: str | None = None, activations_path: str | None = None) -> pd.DataFrame:
    """One row per MEI: its score and held-out score, and for demo ensembles the correlation of the
    MEI to the true filter (phase-invariant for complex cells) and the true neuron's activation
    relative to its optimum at the same norm. Reads one (method, seed) slab of MEIs at a time."""
    manifest = read_json(manifest_path)
    columns = ["ensemble", "method", "seed", "neuron_id", "output_unit", "mei_index", "score", "heldout_score"]
    table = pd.read_parquet(scores_path, columns=columns)
    truth = manifest.get("ground_truth")
    if truth and truth["kind"] == "retina":
        table = _validate_retina(truth["file"], zarr_path, table, pd.read_parquet(table_path) if table_path else None)
    elif truth:
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
    activations = pd.DataFrame({k: pd.Series(dtype=v) for k, v in ACTIVATION_COLUMNS.items()})
    if table_path is not None:
        objectives = pd.read_parquet(table_path)
        if len(objectives) and (objectives["kind"] == "targets").all():
            table, activations = _validate_targets(manifest, zarr_path, objectives, table)
    with atomic_path(out_path, suffix=".parquet") as temporary:
        table.to_parquet(temporary, index=False)
    if activations_path is not None:
        with atomic_path(activations_path, suffix=".parquet") as temporary:
            activations.astype(ACTIVATION_COLUMNS).to_parquet(temporary, index=False)
    return table


def _validate_targets(manifest: dict, zarr_path: str, objectives: pd.DataFrame, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Target-activation items: achieved vs target activations (RMSE and worst error per MEI, with the
    generation and the held-out ensemble), and the tidy activation table of every MEI."""
    import json

    from .ensembles import load_ensemble

    model = load_ensemble(manifest, "members")
    held_out = load_ensemble(manifest, "validation_members")
    groups = getattr(model.members[0], "neuron_groups", None)
    targets = {int(n): json.loads(k)["targets"] for n, k in zip(objectives["neuron_id"], objectives["kwargs"])}
    dataset = xr.open_zarr(zarr_path)
    neuron_position = {int(n): i for i, n in enumerate(dataset["neuron"].values)}
    columns = {name: np.full(len(table), np.nan, dtype=np.float32) for name in ("target_rmse", "max_abs_target_error", "heldout_target_rmse")}
    tidy = []
    for (method, seed), group in table.groupby(["method", "seed"], sort=False):
        slab = torch.from_numpy(np.asarray(dataset["mei"].sel({"method": method, "seed": seed}).values))
        with torch.no_grad():
            reached_all = model(slab)
            held_all = held_out(slab) if held_out is not None else None
        for row, item in zip(group.index, group["neuron_id"]):
            position = neuron_position[int(item)]
            layer, neuron, value = (np.asarray(v) for v in zip(*targets[int(item)]))
            errors = reached_all[position].numpy()[neuron, layer] - value
            columns["target_rmse"][row] = np.sqrt(np.mean(errors**2))
            columns["max_abs_target_error"][row] = np.abs(errors).max()
            if held_all is not None:
                columns["heldout_target_rmse"][row] = np.sqrt(np.mean((held_all[position].numpy()[neuron, layer] - value) ** 2))
            activation = reached_all[position].numpy()  # N×L
            n_neurons, n_layers = activation.shape
            tidy.append(pd.DataFrame({
                "ensemble": manifest["name"], "method": method, "seed": int(seed), "item": int(item),
                "neuron": np.repeat(np.arange(n_neurons), n_layers), "layer": np.tile(np.arange(n_layers), n_neurons),
                "group": np.repeat(np.asarray(groups, dtype=object), n_layers) if groups is not None else None,
                "activation": activation.reshape(-1),
            }))
    for name, values in columns.items():
        table[name] = values
    activations = pd.concat(tidy, ignore_index=True) if tidy else pd.DataFrame(columns=list(ACTIVATION_COLUMNS))
    return table, activations


def _window(objectives: pd.DataFrame | None, frames: int) -> tuple[int, int]:
    """The response frames the objective averaged (slice_mean reducer), else all of them."""
    import json

    if objectives is not None and len(objectives):
        reducer = json.loads(objectives["kwargs"].iloc[0] or "{}").get("reducer")
        if isinstance(reducer, dict) and "slice_mean" in reducer:
            return int(reducer["slice_mean"]["start"]), int(reducer["slice_mean"]["length"])
    return 0, frames


def _validate_retina(truth_file: str, zarr_path: str, table: pd.DataFrame, objectives: pd.DataFrame | None) -> pd.DataFrame:
    """Video MEIs of known ganglion cells: the MEI's leading space-time component (SVD of T × C·H·W)
    against the cell's spatial filter, and its time course against the stimulus that maximises the
    cell's linear response over the objective's frame window (the window-summed, time-reversed kernel).
    Correlations are absolute: the SVD leaves the sign to either component."""
    from .models.retina import load_retina

    model = load_retina(truth_file)
    dataset = xr.open_zarr(zarr_path)
    neuron_position = {int(n): i for i, n in enumerate(dataset["neuron"].values)}
    frames = dataset.sizes["time"]
    start, length = _window(objectives, frames)
    spatial_r = np.full(len(table), np.nan, dtype=np.float32)
    temporal_r = np.full(len(table), np.nan, dtype=np.float32)
    for (method, seed), group in table.groupby(["method", "seed"], sort=False):
        slab = np.asarray(dataset["mei"].sel({"method": method, "seed": seed}).values)  # neurons×C×T×H×W
        for row, neuron, unit in zip(group.index, group["neuron_id"], group["output_unit"]):
            mei = slab[neuron_position[int(neuron)]]
            movie = np.moveaxis(mei, 1, 0).reshape(frames, -1)  # T × C·H·W
            u, _, vt = np.linalg.svd(movie - movie.mean(), full_matrices=False)
            true_spatial = model.spatial_filter(int(unit)).detach().numpy().reshape(-1)
            kernel = model.temporal_kernel(int(unit)).detach().numpy()
            expected = np.zeros(frames)
            for t in range(frames):  # Σ over window frames τ of k[τ − t]
                lags = np.arange(start, start + length) - t
                lags = lags[(lags >= 0) & (lags < len(kernel))]
                expected[t] = kernel[lags].sum()
            spatial_r[row] = abs(np.corrcoef(vt[0], true_spatial)[0, 1])
            temporal_r[row] = abs(np.corrcoef(u[:, 0], expected)[0, 1]) if expected.std() > 0 else np.nan
    cells = model.describe()["cells"]
    table["cell_type"] = [cells[int(u)]["type"] for u in table["output_unit"]]
    table["spatial_correlation"] = spatial_r
    table["temporal_correlation"] = temporal_r
    return table
