"""Aggregation of shard files into the user-facing results, and readers for them.

Per ensemble a Zarr v3 store readable by ``xr.open_zarr`` with dims
``(method, seed, neuron[, mei_index], channel[, time], y, x)``, and, when a method makes
transparency MEIs, their ``opacity`` (the same dims without ``channel``; NaN for other methods);
one Parquet row per MEI in
``scores.parquet`` and tracked traces in long format in ``traces.parquet``. Shards are read one at a
time and written straight into their Zarr region and the Parquet writers, so memory stays bounded by
one shard whatever the run's size.

Aggregation trusts no file for being where it is: every shard and held-out file must hold the arrays
its content hash was written for, and the key of its slot (``shards.shard_key``: ensemble, method,
rows, seed, device); anything else is refused by name. The store is built beside the old one under
a lock (two runs sharing a results folder take turns) and replaces it only when complete, with a
record of every file in it (``verify``).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr
import zarr

from ..files import atomic_path, read_json, remove_stale_temporaries
from ..modality import Modality
from .shards import ShardData, ShardFileError, read_heldout, read_metadata, read_shard, shard_key
from .verify import write_store_record

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
    # label-free quality (mei_core.pipeline.quality; NaN where it does not apply, e.g. without input_stats)
    ("mean_response", pa.float32()),
    ("noise_response", pa.float32()),
    ("gain", pa.float32()),
    ("clip_fraction", pa.float32()),
    ("sample_best", pa.float32()),
    ("sample_ratio", pa.float32()),
    ("seed_agreement", pa.float32()),
    ("quality_flags", pa.string()),
])
#: the columns computed from a whole ensemble (every seed) after its shards are read
LATE_COLUMNS = ("seed_agreement", "quality_flags")
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
    return Modality.of(input_shape).dims


@dataclass
class StoreLayout:
    """Where every MEI of an ensemble goes: ``(method, seed, neuron[, mei_index])`` then the input dims.
    The ``mei_index`` dim (named like the Parquet column) exists when a method asks for ``n_meis > 1``."""

    methods: list[str]
    seeds: list[int]
    neuron_ids: np.ndarray
    input_shape: list[int]
    n_meis: int
    shard_items: int
    opacity: bool = False  # some method makes transparency MEIs

    @property
    def item_dims(self) -> list[str]:
        return ["method", "seed", "neuron"] + (["mei_index"] if self.n_meis > 1 else [])

    @property
    def item_shape(self) -> list[int]:
        return [len(self.methods), len(self.seeds), len(self.neuron_ids)] + ([self.n_meis] if self.n_meis > 1 else [])

    @property
    def item_chunks(self) -> list[int]:
        return [1, 1, min(self.shard_items, len(self.neuron_ids))] + ([self.n_meis] if self.n_meis > 1 else [])

    def coords(self) -> dict[str, Any]:
        coords: dict[str, Any] = {"method": np.asarray(self.methods, dtype=str), "seed": np.asarray(self.seeds, dtype=np.int64), "neuron": self.neuron_ids}
        if self.n_meis > 1:
            coords["mei_index"] = np.arange(self.n_meis)
        for name, size in zip(spatial_dims(self.input_shape), self.input_shape):
            coords[name] = np.arange(size)
        return coords


def _layout(manifest: dict[str, Any], table: pd.DataFrame, shard_paths: Sequence[str], methods: Sequence[str], seeds: Sequence[int]) -> StoreLayout:
    metadata = [read_metadata(path) for path in shard_paths]
    return StoreLayout(list(methods), [int(s) for s in seeds], table["neuron_id"].to_numpy(np.int64), list(manifest["input_shape"]),
                       n_meis=max((int(m["n_meis"]) for m in metadata), default=1),
                       shard_items=max((int(m["n_items"]) for m in metadata), default=1),
                       opacity=any(m.get("transparency", False) for m in metadata))


def checked_compressors() -> list[Any]:
    """Zstd, then a crc32c checksum of every chunk: a corrupted chunk fails to read (and ``verify``
    finds it) instead of returning wrong numbers."""
    return [zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec()]


def _create_store(staging: Path, layout: StoreLayout, manifest: dict[str, Any], table: pd.DataFrame) -> dict[str, zarr.Array]:
    """An empty store (NaN / −1 where a shard is missing) with the item arrays to fill."""
    attrs = {"ensemble": manifest["name"], "ensemble_hash": manifest["ensemble_hash"]}
    if manifest.get("input_stats"):  # figures draw MEIs in the stimulus's units around its mean
        attrs["input_stats"] = manifest["input_stats"]
    xr.Dataset(coords=layout.coords(), attrs=attrs).to_zarr(
        staging, mode="w", zarr_format=3, consolidated=False
    )
    group = zarr.open_group(staging, mode="a")
    dims = spatial_dims(layout.input_shape)
    arrays = {"mei": group.create_array("mei", shape=layout.item_shape + layout.input_shape, chunks=layout.item_chunks + layout.input_shape,
                                        dtype="float32", fill_value=np.nan, dimension_names=layout.item_dims + dims, compressors=checked_compressors())}
    arrays["mei"].attrs["description"] = "the optimised inputs (MEIs; of a transparency MEI its image channels); NaN where a shard is missing"
    if layout.opacity:
        arrays["opacity"] = group.create_array("opacity", shape=layout.item_shape + layout.input_shape[1:], chunks=layout.item_chunks + layout.input_shape[1:],
                                               dtype="float32", fill_value=np.nan, dimension_names=layout.item_dims + dims[1:], compressors=checked_compressors())
        arrays["opacity"].attrs["description"] = ("opacity of a transparency MEI (1 opaque, 0 transparent: its alpha channel as AlphaBlend reads it); the model saw "
                                                  "mei·opacity + background·(1 − opacity). NaN for methods without transparency")
    for name, dtype, fill in [("score", "float32", np.nan), ("heldout_score", "float32", np.nan), ("n_iterations", "int32", -1)]:
        arrays[name] = group.create_array(name, shape=layout.item_shape, chunks=layout.item_chunks, dtype=dtype, fill_value=fill,
                                          dimension_names=layout.item_dims, compressors=checked_compressors())
    unit = group.create_array("output_unit", shape=(len(layout.neuron_ids),), dtype="int64", fill_value=-1, dimension_names=["neuron"],
                              compressors=checked_compressors())
    unit[:] = table["output_unit"].to_numpy(np.int64)
    return arrays


def _quality_columns(shard: ShardData, scores: np.ndarray, input_stats: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """The label-free columns one shard file holds the data for (``quality``): its stored baselines,
    the gain and sample ratio they give, and the share of pixels at the clip bounds."""
    from .quality import clip_fraction

    n = len(shard)
    missing = np.full(n, np.nan, np.float32)
    columns = {name: shard.arrays.get(name, missing).astype(np.float32) for name in ("mean_response", "noise_response", "sample_best")}
    with np.errstate(divide="ignore", invalid="ignore"):
        # a ratio to a baseline that is not positive says nothing (objectives that may be negative)
        columns["gain"] = np.where(columns["noise_response"] > 0, scores / columns["noise_response"], np.nan).astype(np.float32)
        columns["sample_ratio"] = np.where(columns["sample_best"] > 0, scores / columns["sample_best"], np.nan).astype(np.float32)
    stats = {k: input_stats[k] for k in ("mean", "std", "range") if k in input_stats} if input_stats else None
    columns["clip_fraction"] = clip_fraction(shard["meis"], stats) if stats and shard["meis"].ndim in (4, 5) else missing
    return columns


def _score_table(shard: ShardData, heldout: np.ndarray, ensemble_hash: str, input_stats: dict[str, Any] | None = None) -> pa.Table:
    """One row per MEI of a shard; ``LATE_COLUMNS`` are null until ``_with_flags`` fills them."""
    metadata, n = shard.metadata, len(shard)
    flat = shard["meis"].reshape(n, -1)
    quality = _quality_columns(shard, shard["scores"], input_stats)
    return pa.table({
        "ensemble": [metadata["ensemble"]] * n,
        "method": [metadata["method"]] * n,
        "method_hash": [metadata["method_hash"]] * n,
        "seed": np.full(n, metadata["seed"], np.int64),
        "neuron_id": shard["neuron_id"],
        "output_unit": shard["output_unit"],
        "mei_index": shard["mei_index"].astype(np.int32),
        "score": shard["scores"],
        "heldout_score": heldout,
        "n_iterations": shard["n_iterations"],
        "stop_reason": shard["stop_reason"].astype(str),
        "status": np.where(np.isfinite(shard["scores"]) & np.isfinite(flat).all(1), "ok", "non_finite"),
        "runtime_s": np.full(n, metadata["runtime_s"] / max(n, 1), np.float32),
        "device": [metadata["device"]] * n,
        "mei_norm": np.linalg.norm(flat, axis=1).astype(np.float32),
        "shard": np.full(n, metadata["shard"], np.int32),
        "ensemble_hash": [ensemble_hash] * n,
        **quality,
        "seed_agreement": np.full(n, np.nan, np.float32),
        "quality_flags": [""] * n,
    }, schema=SCORE_SCHEMA)


def _with_flags(table: pa.Table, agreement: np.ndarray) -> pa.Table:
    """A shard's score rows with their seed agreement, their quality flags and, for a flagged MEI
    that is otherwise ok, the status ``suspect``."""
    from .quality import quality_flags

    columns = {name: table[name].to_numpy(zero_copy_only=False) for name in ("gain", "sample_ratio", "clip_fraction")}
    columns["seed_agreement"] = agreement.astype(np.float32)
    flags = quality_flags(columns)
    status = table["status"].to_numpy(zero_copy_only=False)
    status = np.where((status == "ok") & (flags != ""), "suspect", status)
    for name, values in (("seed_agreement", columns["seed_agreement"]), ("quality_flags", flags), ("status", status)):
        table = table.set_column(table.schema.get_field_index(name), SCORE_SCHEMA.field(name), pa.array(values, SCORE_SCHEMA.field(name).type))
    return table


def _seed_agreements(mei: zarr.Array, layout: StoreLayout) -> np.ndarray | None:
    """``quality.seed_agreement`` of every MEI of the store (``item_shape``), read one method and one
    chunk of neurons at a time; ``None`` for connectome inputs (no image to compare)."""
    from .quality import seed_agreement

    if len(layout.input_shape) not in (3, 4):
        return None
    agreement = np.full(layout.item_shape, np.nan, np.float32)
    step = layout.item_chunks[2]
    for m in range(len(layout.methods)):
        for start in range(0, len(layout.neuron_ids), step):
            block = np.asarray(mei[m, :, start : start + step])  # seeds × neurons(× mei_index) × input
            items = block.reshape(block.shape[0], -1, *layout.input_shape)
            agreement[m, :, start : start + step] = seed_agreement(items).reshape(block.shape[: len(layout.item_shape) - 1])
    return agreement


def _trace_table(shard: ShardData) -> pa.Table:
    rows, metadata = shard["trace_row"], shard.metadata
    return pa.table({
        "ensemble": [metadata["ensemble"]] * len(rows),
        "method": [metadata["method"]] * len(rows),
        "seed": np.full(len(rows), metadata["seed"], np.int64),
        "neuron_id": shard["neuron_id"][rows],
        "mei_index": shard["mei_index"][rows].astype(np.int32),
        "tracker": shard["trace_name"].astype(str),
        "step": shard["trace_step"],
        "value": shard["trace_value"],
    }, schema=TRACE_SCHEMA)


@dataclass(frozen=True)
class Slot:
    """Where a shard file belongs: method, seed and shard positions, and the key its file must record."""

    method: int
    seed: int
    shard: int
    key: str


def _slots(manifest: dict[str, Any], method_specs: Sequence[dict[str, Any]], shard_specs: Sequence[dict[str, Any]], seeds: Sequence[int], device: str) -> list[Slot]:
    """The slots of an ensemble's shard files, in the plan's order (``Plan.planned_shards``: method,
    then seed, then shard)."""
    return [Slot(m, s, i, shard_key(manifest, method, shard, seed, device))
            for m, method in enumerate(method_specs) for s, seed in enumerate(seeds) for i, shard in enumerate(shard_specs)]


def _check_slot(path: str, shard: ShardData, slot: Slot, methods: Sequence[str], seeds: Sequence[int]) -> None:
    """Refuse a shard file that holds another slot's result, saying what it holds instead."""
    if shard.metadata.get("shard_key") == slot.key:
        return
    metadata = shard.metadata
    expected = f"method {methods[slot.method]!r}, seed {seeds[slot.seed]}, shard {slot.shard}"
    found = f"method {metadata.get('method')!r}, seed {metadata.get('seed')}, shard {metadata.get('shard')}"
    why = f"it holds {found}" if found != expected else "it was written for another version of this method, ensemble, rows or device"
    raise ShardFileError(f"{path}: not the result of its slot ({expected}): {why}; delete it and rerun snakemake to make it again")


@contextlib.contextmanager
def store_lock(store: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a store's folder (``.<name>-lock`` beside it) while it is rebuilt:
    two runs that share a results folder (two working directories, one ``results:``) take turns
    instead of writing into each other's store. Released when the process ends, however it ends."""
    target = Path(store)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def aggregate_ensemble(
    manifest_path: str,
    table_path: str,
    shard_paths: Sequence[str],
    heldout_paths: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    zarr_path: str,
    scores_path: str,
    traces_path: str,
    method_spec_paths: Sequence[str],
    shard_spec_paths: Sequence[str],
    device: str,
) -> None:
    """Stream the shards of one ensemble (and their held-out scores, in the same order; none for an
    ensemble without held-out members) into its Zarr store and its score/trace tables. Shard files
    come in the plan's order (method, seed, shard; ``method_spec_paths`` in the order of ``methods``,
    ``shard_spec_paths`` by shard index), and each must record its slot's key (``device``: the
    requested one, part of the key). The store is built beside the old one and replaces it only when
    complete; a failing aggregation leaves the old one as it was."""
    manifest = read_json(manifest_path)
    method_specs = [read_json(path) for path in method_spec_paths]
    if [spec["name"] for spec in method_specs] != list(methods):
        raise ValueError(f"method specs {list(method_spec_paths)} are not those of methods {list(methods)}")
    slots = _slots(manifest, method_specs, [read_json(path) for path in shard_spec_paths], seeds, device)
    if len(slots) != len(shard_paths):
        raise ValueError(f"{len(shard_paths)} shard files for {len(slots)} slots ({len(methods)} methods × {len(seeds)} seeds × {len(shard_spec_paths)} shards)")
    table = pd.read_parquet(table_path)
    layout = _layout(manifest, table, shard_paths, methods, seeds)
    neuron_position = {int(n): i for i, n in enumerate(layout.neuron_ids)}

    target = Path(zarr_path)
    with store_lock(target):
        for output in (target, Path(scores_path), Path(traces_path)):
            remove_stale_temporaries(output)  # left by a killed aggregation (none runs now: we hold the lock)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
        try:
            consumed = _fill(staging, layout, manifest, table, shard_paths, heldout_paths, slots, neuron_position, scores_path, traces_path)
            write_store_record(staging, consumed)
            _replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _fill(staging: Path, layout: StoreLayout, manifest: dict[str, Any], table: pd.DataFrame, shard_paths: Sequence[str], heldout_paths: Sequence[str],
          slots: Sequence[Slot], neuron_position: dict[int, int], scores_path: str, traces_path: str) -> dict[str, str]:
    """Write every checked shard into the staging store and the tables; returns the content hash of
    every shard and held-out file it read (by path), for the store's record."""
    arrays = _create_store(staging, layout, manifest, table)
    sources = {"mei": "meis", "opacity": "opacity", "score": "scores", "n_iterations": "n_iterations"}
    # score rows wait (small: no MEIs) until every seed is in the store: seed agreement needs them all
    score_tables: list[tuple[pa.Table, tuple[Any, ...]]] = []
    consumed: dict[str, str] = {}
    with atomic_path(scores_path, suffix=".parquet") as scores_tmp, atomic_path(traces_path, suffix=".parquet") as traces_tmp:
        with pq.ParquetWriter(scores_tmp, SCORE_SCHEMA) as score_writer, pq.ParquetWriter(traces_tmp, TRACE_SCHEMA) as trace_writer:
            for shard_path, heldout_path, slot in zip(shard_paths, heldout_paths or [None] * len(shard_paths), slots, strict=True):
                shard = read_shard(shard_path)
                _check_slot(shard_path, shard, slot, layout.methods, layout.seeds)
                consumed[str(shard_path)] = shard.metadata["content_sha256"]
                if heldout_path:
                    heldout = read_heldout(heldout_path, shard, shard_path)
                    consumed[str(heldout_path)] = read_metadata(heldout_path)["content_sha256"]
                else:
                    heldout = np.full(len(shard), np.nan, np.float32)
                if len(heldout) != len(shard):
                    raise ShardFileError(f"{heldout_path}: {len(heldout)} held-out scores for the {len(shard)} MEIs of {shard_path}; delete it and rerun")
                positions = np.asarray([neuron_position[int(n)] for n in shard["neuron_id"]])
                values = {name: shard.arrays.get(source) for name, source in sources.items()} | {"heldout_score": heldout}
                for name, array in arrays.items():
                    if values[name] is None:  # opacity of a method without transparency: stays NaN
                        continue
                    _write_rows(array, slot.method, slot.seed, positions, shard["mei_index"], values[name], layout.n_meis > 1)
                where = (slot.method, slot.seed, positions) + ((shard["mei_index"],) if layout.n_meis > 1 else ())
                score_tables.append((_score_table(shard, heldout, manifest["ensemble_hash"], manifest.get("input_stats")), where))
                if len(shard["trace_step"]):
                    trace_writer.write_table(_trace_table(shard))
            agreement = _seed_agreements(arrays["mei"], layout)
            for table, where in score_tables:
                score_writer.write_table(_with_flags(table, agreement[where] if agreement is not None else np.full(len(table), np.nan, np.float32)))
        zarr.consolidate_metadata(str(staging))
    return consumed


def _replace(staging: Path, target: Path) -> None:
    """``staging`` in the place of ``target``: the old store is moved aside (a name a later
    aggregation cleans up if this one is killed in between), the new one renamed in, the old deleted."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        old.rmdir()
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


def summary(scores_path: str) -> str:
    """MEIs per status, per ensemble and method, and suspect MEIs per quality flag (printed at the end
    of a run; the flags' rules: ``quality.FLAG_RULES``, config/README.md "Stimulus statistics and quality flags")."""
    columns = ["ensemble", "method", "status"] + (["quality_flags"] if "quality_flags" in pq.read_schema(scores_path).names else [])
    scores = pd.read_parquet(scores_path, columns=columns)
    counts = scores.groupby(["ensemble", "method", "status"]).size().unstack("status", fill_value=0)
    bad = int(scores["status"].ne("ok").sum())
    suspect = int(scores["status"].eq("suspect").sum())
    headline = f"{len(scores)} MEIs, {bad} not ok" + (f" ({suspect} suspect)" if suspect else "")
    headline += " (see the status, stop_reason and quality_flags columns of scores.parquet)" if bad else ""
    text = f"{headline}\n{counts.to_string()}"
    if suspect:
        flagged = scores[scores["status"].eq("suspect")]
        by_flag = flagged.assign(flag=flagged["quality_flags"].str.split(",")).explode("flag")
        table = by_flag.groupby(["ensemble", "method", "flag"]).size().unstack("flag", fill_value=0)
        text += f"\nsuspect MEIs by quality flag (an MEI may have several; rules: config/README.md, \"Stimulus statistics and quality flags\"):\n{table.to_string()}"
    return text
