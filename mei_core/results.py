"""Aggregation of shard files into the user-facing results, and readers for them.

Per ensemble a Zarr v3 store readable by ``xr.open_zarr`` with dims
``(method, seed, neuron[, mei], channel[, time], y, x)``; one Parquet row per MEI in
``scores.parquet`` and tracked traces in long format in ``traces.parquet``. Shards are read one at a
time and written straight into their Zarr region and the Parquet writers, so memory stays bounded by
one shard whatever the run's size.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr
import zarr

from .files import atomic_path, read_json

SCORE_SCHEMA = pa.schema([
    ("ensemble", pa.string()),
    ("method", pa.string()),
    ("method_hash", pa.string()),
    ("seed", pa.int64()),
    ("neuron_id", pa.int64()),
    ("output_unit", pa.int64()),
    ("mei_index", pa.int32()),
    ("score", pa.float32()),
    ("heldout_score", pa.float32()),
    ("n_iterations", pa.int32()),
    ("stop_reason", pa.string()),
    ("status", pa.string()),
    ("runtime_s", pa.float32()),
    ("device", pa.string()),
    ("mei_norm", pa.float32()),
    ("shard", pa.int32()),
    ("ensemble_hash", pa.string()),
])
TRACE_SCHEMA = pa.schema([
    ("ensemble", pa.string()),
    ("method", pa.string()),
    ("seed", pa.int64()),
    ("neuron_id", pa.int64()),
    ("mei_index", pa.int32()),
    ("tracker", pa.string()),
    ("step", pa.int32()),
    ("value", pa.float32()),
])


def spatial_dims(input_shape: Sequence[int]) -> list[str]:
    """Names of an input's dims: images, videos, or connectome inputs (sensory neurons × layers)."""
    return {2: ["sensory", "layer"], 3: ["channel", "y", "x"], 4: ["channel", "time", "y", "x"]}[len(input_shape)]


def ensemble_hash(manifest: dict[str, Any]) -> str:
    import hashlib

    from .config import canonical_json

    members = [{k: v for k, v in m.items()} for m in manifest["members"]]
    return hashlib.sha256(canonical_json(members).encode()).hexdigest()


def aggregate_ensemble(
    manifest_path: str,
    table_path: str,
    shard_paths: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    zarr_path: str,
    scores_path: str,
    traces_path: str,
) -> None:
    """Stream the shards of one ensemble into its Zarr store and its score/trace tables."""
    manifest = read_json(manifest_path)
    table = pd.read_parquet(table_path)
    neuron_ids = table["neuron_id"].to_numpy(np.int64)
    neuron_position = {int(n): i for i, n in enumerate(neuron_ids)}
    method_position = {m: i for i, m in enumerate(methods)}
    seed_position = {int(s): i for i, s in enumerate(seeds)}
    input_shape = list(manifest["input_shape"])
    dims = spatial_dims(input_shape)
    n_meis = max((_n_meis(path) for path in shard_paths), default=1)
    item_dims = ["method", "seed", "neuron"] + (["mei"] if n_meis > 1 else [])
    item_shape = [len(methods), len(seeds), len(neuron_ids)] + ([n_meis] if n_meis > 1 else [])
    hash_of_ensemble = ensemble_hash(manifest)

    target = Path(zarr_path)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    coords: dict[str, Any] = {
        "method": np.asarray(methods, dtype=str),
        "seed": np.asarray(seeds, dtype=np.int64),
        "neuron": neuron_ids,
    }
    if n_meis > 1:
        coords["mei"] = np.arange(n_meis)
    for name, size in zip(dims, input_shape):
        coords[name] = np.arange(size)
    xr.Dataset(coords=coords, attrs={"ensemble": manifest["name"], "ensemble_hash": hash_of_ensemble}).to_zarr(
        staging, mode="w", zarr_format=3, consolidated=False
    )
    group = zarr.open_group(staging, mode="a")
    shard_chunk = max(1, max((_n_items(path) for path in shard_paths), default=1))
    chunks_items = [1, 1, min(shard_chunk, len(neuron_ids))] + ([n_meis] if n_meis > 1 else [])
    meis = group.create_array("mei", shape=item_shape + input_shape, chunks=chunks_items + input_shape, dtype="float32", fill_value=np.nan, dimension_names=item_dims + dims)
    per_item = {
        name: group.create_array(name, shape=item_shape, chunks=chunks_items, dtype=dtype, fill_value=fill, dimension_names=item_dims)
        for name, dtype, fill in [("score", "float32", np.nan), ("heldout_score", "float32", np.nan), ("n_iterations", "int32", -1)]
    }
    unit = group.create_array("output_unit", shape=(len(neuron_ids),), dtype="int64", fill_value=-1, dimension_names=["neuron"])
    unit[:] = table["output_unit"].to_numpy(np.int64)
    meis.attrs["description"] = "the optimised inputs (MEIs); NaN where a shard is missing"

    with atomic_path(scores_path, suffix=".parquet") as scores_tmp, atomic_path(traces_path, suffix=".parquet") as traces_tmp:
        with pq.ParquetWriter(scores_tmp, SCORE_SCHEMA) as score_writer, pq.ParquetWriter(traces_tmp, TRACE_SCHEMA) as trace_writer:
            for path in shard_paths:
                with np.load(path) as shard:
                    metadata = json.loads(str(shard["metadata"]))
                    m, s = method_position[metadata["method"]], seed_position[metadata["seed"]]
                    positions = np.asarray([neuron_position[int(n)] for n in shard["neuron_id"]])
                    mei_index = shard["mei_index"]
                    data = shard["meis"]
                    sources = {"score": "scores", "heldout_score": "heldout_scores", "n_iterations": "n_iterations"}
                    _write_rows(meis, m, s, positions, mei_index, data, n_meis > 1)
                    for name, array in per_item.items():
                        _write_rows(array, m, s, positions, mei_index, shard[sources[name]], n_meis > 1)
                    n = len(data)
                    scores = shard["scores"]
                    score_writer.write_table(pa.table({
                        "ensemble": [metadata["ensemble"]] * n,
                        "method": [metadata["method"]] * n,
                        "method_hash": [metadata["method_hash"]] * n,
                        "seed": np.full(n, metadata["seed"], np.int64),
                        "neuron_id": shard["neuron_id"],
                        "output_unit": shard["output_unit"],
                        "mei_index": mei_index.astype(np.int32),
                        "score": scores,
                        "heldout_score": shard["heldout_scores"],
                        "n_iterations": shard["n_iterations"],
                        "stop_reason": shard["stop_reason"].astype(str),
                        "status": np.where(np.isfinite(scores) & np.isfinite(data.reshape(n, -1)).all(1), "ok", "non_finite"),
                        "runtime_s": np.full(n, metadata["runtime_s"] / max(n, 1), np.float32),
                        "device": [metadata["device"]] * n,
                        "mei_norm": np.linalg.norm(data.reshape(n, -1), axis=1).astype(np.float32),
                        "shard": np.full(n, metadata["shard"], np.int32),
                        "ensemble_hash": [hash_of_ensemble] * n,
                    }, schema=SCORE_SCHEMA))
                    if len(shard["trace_step"]):
                        rows = shard["trace_row"]
                        trace_writer.write_table(pa.table({
                            "ensemble": [metadata["ensemble"]] * len(rows),
                            "method": [metadata["method"]] * len(rows),
                            "seed": np.full(len(rows), metadata["seed"], np.int64),
                            "neuron_id": shard["neuron_id"][rows],
                            "mei_index": mei_index[rows].astype(np.int32),
                            "tracker": shard["trace_name"].astype(str),
                            "step": shard["trace_step"],
                            "value": shard["trace_value"],
                        }, schema=TRACE_SCHEMA))
        zarr.consolidate_metadata(str(staging))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def _write_rows(array: zarr.Array, m: int, s: int, positions: np.ndarray, mei_index: np.ndarray, values: np.ndarray, has_mei_dim: bool) -> None:
    """Write one shard's rows; a shard's neurons are contiguous in table order, so one slice suffices."""
    n_meis = int(mei_index.max()) + 1 if len(mei_index) else 1
    items = positions[::n_meis] if has_mei_dim else positions
    start, stop = int(items.min()), int(items.max()) + 1
    contiguous = np.array_equal(items, np.arange(start, stop))
    if has_mei_dim:
        contiguous &= np.array_equal(mei_index, np.tile(np.arange(n_meis), len(items)))
    if contiguous and has_mei_dim:
        array[m, s, start:stop, 0:n_meis] = values.reshape(len(items), n_meis, *values.shape[1:])
    elif contiguous:
        array[m, s, start:stop] = values
    else:  # a reordered table: item by item
        for row, position in enumerate(positions):
            key = (m, s, int(position), int(mei_index[row])) if has_mei_dim else (m, s, int(position))
            array[key] = values[row]


def _n_meis(path: str) -> int:
    with np.load(path) as shard:
        return int(json.loads(str(shard["metadata"]))["n_meis"])


def _n_items(path: str) -> int:
    with np.load(path) as shard:
        return len(np.unique(shard["neuron_id"]))


def concatenate_tables(paths: Sequence[str], out_path: str) -> None:
    """Stream per-ensemble Parquet tables into one file, row group by row group. Ensembles of different
    kinds may have different columns (e.g. filter correlations, target errors): the result has the
    union, with nulls where an ensemble has no such column."""
    schema = pa.unify_schemas([pq.read_schema(path) for path in paths])
    with atomic_path(out_path, suffix=".parquet") as temporary:
        with pq.ParquetWriter(temporary, schema) as writer:
            for path in paths:
                file = pq.ParquetFile(path)
                for group in range(file.num_row_groups):
                    table = file.read_row_group(group)
                    for field in schema:
                        if field.name not in table.column_names:
                            table = table.append_column(field, pa.nulls(len(table), field.type))
                    writer.write_table(table.select(schema.names).cast(schema))


def open_meis(results: str | Path, ensemble: str) -> xr.Dataset:
    """``xr.open_zarr`` of one ensemble's MEIs (select methods with ``ds.sel({"method": name})``)."""
    return xr.open_zarr(Path(results) / f"{ensemble}.zarr")


def read_scores(results: str | Path = "results") -> pd.DataFrame:
    return pd.read_parquet(Path(results) / "scores.parquet")
