"""Checksums of finished results, written by the jobs that produce them, and their check (``verify``).

- Each combined Parquet table: its sha256, recorded by the ``combine_tables`` job that wrote it
  (``Paths.checksum_record``).
- Each Zarr store: the sha256 of every file in it (metadata and chunks), and the content hash of
  every shard and held-out file it was built from, recorded by the aggregation inside the store
  (``STORE_RECORD``), so the record is swapped in with the store it describes.
- ``results/checksums.json`` (rule ``checksums``): the tables' and the stores' records gathered. It
  is written only after each file was checked against the record of the job that wrote it: a file
  changed since is refused by name, never recorded as if it were a result.

``verify`` checks every one of them again, and says what to rerun for anything that fails.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import MEIConfigError
from ..files import read_json, write_json
from ..hashing import sha256_file

#: inside each store: ``{"files": {path in the store: sha256}, "inputs": {shard or held-out file,
#: relative to the store's folder (so a project moves with its record): content_sha256}}``
STORE_RECORD = "mei_core.checksums.json"
#: files in a store that no record covers: the record itself, and the timestamp Snakemake writes into
#: a ``directory()`` output after its job
UNRECORDED = {STORE_RECORD, ".snakemake_timestamp"}


class ChangedOutputError(MEIConfigError):
    """A result that differs from what the job that wrote it recorded."""


def _tree(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): sha256_file(path) for path in sorted(folder.rglob("*"))
            if path.is_file() and path.relative_to(folder).as_posix() not in UNRECORDED}


def write_store_record(store: str | os.PathLike, inputs: Mapping[str, str]) -> None:
    """Record every file of a just-built store, and the content hash of each file it was built from."""
    store = Path(store)
    folder = store.parent.resolve()
    inputs = {os.path.relpath(Path(path).resolve(), folder): digest for path, digest in inputs.items()}
    write_json(store / STORE_RECORD, {"files": _tree(store), "inputs": inputs})


def write_table_record(table: str | os.PathLike, record_path: str | os.PathLike) -> None:
    """Record the sha256 of a table its job has just written."""
    write_json(record_path, {"file": str(table), "sha256": sha256_file(table)})


def write_checksums(tables: Sequence[str], out_path: str, records: Sequence[str] | None = None, stores: Sequence[str] = ()) -> dict[str, Any]:
    """``results/checksums.json`` (rule ``checksums``): each table's sha256 and each store's record's.
    With ``records`` (one per table, written by the table's job) and for every store, each file must
    still be what its job recorded: a changed one raises :class:`ChangedOutputError` naming it, so a
    rerun never records an edited result as intact."""
    problems: list[str] = []
    checksums: dict[str, Any] = {"tables": {}, "stores": {}}
    for table, record in zip(tables, records or [None] * len(tables), strict=True):
        digest = sha256_file(table)
        if record is not None and read_json(record)["sha256"] != digest:
            problems.append(f"{table}: changed since the job that wrote it (its sha256 differs from the one in {record}); delete it and rerun snakemake")
        checksums["tables"][Path(table).name] = digest
    for store in stores:
        store_problems = _store_problems(Path(store), check_inputs=False)
        problems.extend(store_problems)
        if not store_problems:
            checksums["stores"][Path(store).name] = sha256_file(Path(store) / STORE_RECORD)
    if problems:
        raise ChangedOutputError("\n".join(problems))
    write_json(out_path, checksums)
    return checksums


def verify(results: str | Path, checksums_path: str | Path | None = None) -> list[str]:
    """Problems found in a results folder (empty when everything is intact), each with what to do:
    every table and store recorded in ``checksums.json`` present and as recorded, every file of every
    store as its aggregation recorded it, and every shard and held-out file a store was built from
    still holding the content the store was built from."""
    results = Path(results)
    checksums_path = Path(checksums_path) if checksums_path else results / "checksums.json"
    problems = []
    recorded: dict[str, Any] = {"tables": {}, "stores": {}}
    if not checksums_path.exists():
        problems.append(f"{checksums_path}: missing; rerun snakemake to write it")
    else:
        recorded = read_json(checksums_path)
        if set(recorded) != {"tables", "stores"}:
            problems.append(f"{checksums_path}: written by an older version (no store records); delete it and rerun snakemake")
            recorded = {"tables": {}, "stores": {}}
    for name, digest in sorted(recorded["tables"].items()):
        table = results / name
        if not table.exists():
            problems.append(f"{table}: missing; rerun snakemake to make it again")
        elif sha256_file(table) != digest:
            problems.append(f"{table}: its sha256 differs from the one recorded when it was written; delete it and rerun snakemake")
    for name in sorted(set(recorded["stores"]) | {store.name for store in results.glob("*.zarr")}):
        store = results / name
        if not store.is_dir():
            problems.append(f"{store}: missing; rerun snakemake to make it again")
            continue
        record = store / STORE_RECORD
        if name in recorded["stores"] and record.exists() and sha256_file(record) != recorded["stores"][name]:
            problems.append(f"{record}: differs from the record of this store in {checksums_path}; delete {store} and rerun snakemake")
        problems.extend(_store_problems(store, check_inputs=True))
    return problems


def _store_problems(store: Path, check_inputs: bool) -> list[str]:
    """What differs in a store from the record its aggregation wrote into it (with ``check_inputs``,
    also the shard and held-out files it was built from)."""
    record_path = store / STORE_RECORD
    if not record_path.exists():
        return [f"{record_path}: missing (no record of this store's files); delete {store} and rerun snakemake"] + _unreadable_chunks(store)
    try:
        record = read_json(record_path)
        files, inputs = record["files"], record["inputs"]
    except (ValueError, KeyError, TypeError) as error:
        return [f"{record_path}: unreadable ({type(error).__name__}: {error}); delete {store} and rerun snakemake"]
    present = _tree(store)
    problems = []
    for name in sorted(set(files) | set(present)):
        what = ("is missing" + (" (it reads as the fill value, NaN)" if "/c/" in f"/{name}" else "") if name not in present
                else "is not in the record of this store (added since it was written)" if name not in files
                else "is corrupt (its sha256 differs from the one recorded when it was written)" if present[name] != files[name] else None)
        if what:
            problems.append(f"{_describe(store, name)} {what}; delete {store} and rerun snakemake")
    if check_inputs:
        for path, digest in sorted(inputs.items()):
            problems.extend(_input_problems(store, Path(os.path.normpath(store.parent / path)), digest))
    return problems


def _input_problems(store: Path, path: Path, digest: str) -> list[str]:
    from .shards import ShardFileError, content_of

    if not path.exists():
        return [f"{path}: missing (the store {store} was built from it); rerun snakemake to make it and the store again"]
    try:
        current = content_of(path)
    except ShardFileError as error:
        return [str(error)]
    if current != digest:
        return [f"{path}: holds other arrays than those the store {store} was built from; delete it and rerun snakemake to make it and the store again"]
    return []


def _describe(store: Path, name: str) -> str:
    """``<store>/<array>: chunk at [starts]`` for a chunk file (by its key and the array's chunk
    shape), ``<store>/<file>`` for anything else."""
    array, separator, key = name.partition("/c/")
    if separator:
        try:
            chunk_shape = json.loads((store / array / "zarr.json").read_text())["chunk_grid"]["configuration"]["chunk_shape"]
            starts = [int(index) * size for index, size in zip(key.split("/"), chunk_shape)]
            return f"{store}/{array}: chunk at {starts}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"{store}/{name}: chunk"
    return f"{store}/{name}"


def _unreadable_chunks(store: Path) -> list[str]:
    """A store without a record: at least every chunk against its crc32c."""
    import zarr

    try:
        group = zarr.open_group(store, mode="r")
    except Exception as error:
        return [f"{store}: cannot be opened ({error}); delete it and rerun snakemake"]
    problems = []
    for name, array in group.arrays():
        for chunk in _chunk_slices(array):
            try:
                array[chunk]
            except Exception as error:  # a crc32c mismatch, a truncated or missing-metadata chunk
                problems.append(f"{store}/{name}: chunk at {[s.start for s in chunk]} is corrupt ({type(error).__name__}); delete {store} and rerun snakemake")
                break
    return problems


def _chunk_slices(array: Any) -> list[tuple[slice, ...]]:
    ranges = [range(0, size, chunk) for size, chunk in zip(array.shape, array.chunks)]
    return [tuple(slice(start, min(start + chunk, size)) for start, chunk, size in zip(starts, array.chunks, array.shape))
            for starts in itertools.product(*ranges)]
