"""Checks of finished results: every Parquet table against the sha256 recorded when it was written
(``results/checksums.json``), every chunk of every Zarr store against its crc32c. Says what to
rerun for anything that fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import zarr

from ..files import read_json, write_json
from ..hashing import sha256_file


def write_checksums(tables: Sequence[str], out_path: str) -> dict[str, str]:
    """``{file: sha256}`` of the user-facing Parquet tables (rule ``checksums``)."""
    checksums = {Path(table).name: sha256_file(table) for table in tables}
    write_json(out_path, checksums)
    return checksums


def verify(results: str | Path, checksums_path: str | Path | None = None) -> list[str]:
    """Problems found in a results folder (empty when everything is intact), each with what to do."""
    results = Path(results)
    checksums_path = Path(checksums_path) if checksums_path else results / "checksums.json"
    problems = []
    if not checksums_path.exists():
        problems.append(f"{checksums_path}: missing; rerun snakemake to write it")
        recorded = {}
    else:
        recorded = read_json(checksums_path)
    for name, digest in sorted(recorded.items()):
        table = results / name
        if not table.exists():
            problems.append(f"{table}: missing; rerun snakemake to make it again")
        elif sha256_file(table) != digest:
            problems.append(f"{table}: its sha256 differs from the one recorded when it was written; delete it and rerun snakemake")
    for store in sorted(results.glob("*.zarr")):
        problems.extend(_verify_store(store))
    return problems


def _verify_store(store: Path) -> list[str]:
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


def _chunk_slices(array: zarr.Array) -> list[tuple[slice, ...]]:
    import itertools

    ranges = [range(0, size, chunk) for size, chunk in zip(array.shape, array.chunks)]
    return [tuple(slice(start, min(start + chunk, size)) for start, chunk, size in zip(starts, array.chunks, array.shape))
            for starts in itertools.product(*ranges)]
