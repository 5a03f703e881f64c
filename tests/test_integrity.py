"""No silent wrong answer from the files between rules (issue 20, cases 3, 4 and 7): a shard or
held-out file that is not its slot's result, or not the arrays it was written with, is refused by
name; `verify` checks every output against records written by the jobs that produced them, and a
rerun never records a changed file as intact; `--forcerun` recomputes; aggregations that share a
store take turns, and a failing one keeps the previous store. Real Snakemake on one tiny project."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from workflow_support import REPO, snakemake

pytestmark = pytest.mark.slow

MEIS = Path("resources/meis/tiny")
HELDOUT = Path("resources/heldout/tiny")


def verify(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mei_core", "verify"], cwd=project, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})


def test_another_methods_shard_in_a_slot_is_refused_by_name_and_the_previous_store_is_kept(project, finished):
    shutil.copy(project / MEIS / "slow/seed0/shard1.npz", project / MEIS / "fast/seed0/shard1.npz")
    result = snakemake(project, check=False)
    assert result.returncode != 0
    log = (project / "resources/logs/aggregate/tiny.log").read_text()
    assert ("resources/meis/tiny/fast/seed0/shard1.npz: not the result of its slot (method 'fast', seed 0, shard 1): "
            "it holds method 'slow', seed 0, shard 1") in log
    kept, original = xr.open_zarr(project / "results/tiny.zarr"), xr.open_zarr(finished / "results/tiny.zarr")
    np.testing.assert_array_equal(kept["mei"].values, original["mei"].values)
    assert "resources/meis/tiny/fast/seed0/shard1.npz: holds other arrays than those the store" in verify(project).stderr


def test_a_shard_file_with_edited_arrays_is_refused_by_name_and_not_kept_and_another_shards_heldout_file_is_refused(finished, tmp_path):
    from mei_core.pipeline.shards import ShardFileError, holds, read_heldout, read_metadata, read_shard

    shard_path = tmp_path / "shard.npz"
    with np.load(finished / MEIS / "fast/seed0/shard0.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["scores"] = arrays["scores"] * 2  # the right key, other numbers
    np.savez(shard_path, **arrays)
    with pytest.raises(ShardFileError, match=f"{shard_path}: its arrays differ from the content hash written with them"):
        read_shard(shard_path)
    key = read_metadata(shard_path)["shard_key"]
    # so a job that reruns (e.g. for a new seed) writes it again instead of keeping it
    assert not holds(shard_path, "shard_key", key) and holds(finished / MEIS / "fast/seed0/shard0.npz", "shard_key", key)
    shard = read_shard(finished / MEIS / "fast/seed0/shard0.npz")
    other = finished / HELDOUT / "fast/seed0/shard1.npz"
    with pytest.raises(ShardFileError, match=f"{other}: holds the held-out scores of another shard file"):
        read_heldout(other, shard, "shard0.npz")
    assert read_heldout(finished / HELDOUT / "fast/seed0/shard0.npz", shard, "shard0.npz").shape == (len(shard),)


def test_an_edited_table_is_never_recorded_as_intact_by_a_rerun(project):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(project / "results/scores.parquet")
    table = table.set_column(table.schema.get_field_index("score"), "score", pc.multiply(table["score"], 2.0))
    pq.write_table(table, project / "results/scores.parquet")
    assert verify(project).returncode == 1
    rerun = snakemake(project, check=False)
    assert rerun.returncode != 0
    assert "results/scores.parquet: changed since the job that wrote it" in (project / "resources/logs/tables/checksums.log").read_text()
    after = verify(project)
    assert after.returncode == 1 and "results/scores.parquet: its sha256 differs" in after.stderr


def test_verify_finds_a_missing_chunk_swapped_chunks_edited_metadata_a_missing_store_and_a_missing_shard(project):
    assert verify(project).returncode == 0
    store = project / "results/tiny.zarr"
    (store / "mei/c/1/0/1/0/0/0").unlink()
    first, second = store / "score/c/0/0/0", store / "score/c/0/0/1"
    first_bytes, second_bytes = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_bytes), second.write_bytes(first_bytes)
    (store / "n_iterations/zarr.json").write_text((store / "n_iterations/zarr.json").read_text().replace("-1", "0"))
    (project / MEIS / "slow/seed0/shard0.npz").unlink()
    problems = verify(project).stderr
    assert "results/tiny.zarr/mei: chunk at [1, 0, 3, 0, 0, 0] is missing (it reads as the fill value, NaN)" in problems
    assert "results/tiny.zarr/score: chunk at [0, 0, 0] is corrupt" in problems and "results/tiny.zarr/score: chunk at [0, 0, 3] is corrupt" in problems
    assert "results/tiny.zarr/n_iterations/zarr.json is corrupt" in problems
    assert "resources/meis/tiny/slow/seed0/shard0.npz: missing (the store results/tiny.zarr was built from it)" in problems
    shutil.rmtree(store)
    assert "results/tiny.zarr: missing; rerun snakemake to make it again" in verify(project).stderr


def test_forcerun_recomputes_a_shard_whose_files_hold_their_key(project):
    shard = project / MEIS / "fast/seed0/shard0.npz"
    before = shard.stat().st_mtime_ns
    snakemake(project, str(shard.relative_to(project)), "--forcerun", "generate_meis")
    log = (project / "resources/logs/meis/tiny/fast/shard0.log").read_text()
    assert "wrote 1 shard file(s) (seeds 0)" in log and "kept" not in log
    assert shard.stat().st_mtime_ns > before


def aggregate_command(project: Path) -> list[str]:
    """The aggregation of the project's ensemble, as its rule runs it (read from Snakemake's dry run)."""
    result = snakemake(project, "--dry-run", "--printshellcmds", "--forcerun", "aggregate", "--until", "aggregate")
    line = next(line for line in result.stdout.splitlines() if "python -m mei_core aggregate" in line)
    return ["bash", "-c", f"{sys.executable} -m" + line.split("python -m", 1)[1]]


def test_an_aggregation_waits_for_another_writing_the_same_store(project):
    from mei_core.pipeline.results import store_lock

    command = aggregate_command(project)
    environment = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    with store_lock(project / "results/tiny.zarr"):
        second = subprocess.Popen(command, cwd=project, env=environment)
        time.sleep(8)  # time enough to finish (≈ 2 s alone): it waits for the lock instead
        assert second.poll() is None
    assert second.wait(timeout=120) == 0
    original = xr.open_zarr(project / "results/tiny.zarr")["mei"].values
    # two at once (as from two working directories sharing `results:`): one complete store, as before
    both = [subprocess.Popen(command, cwd=project, env=environment) for _ in range(2)]
    assert [process.wait(timeout=300) for process in both] == [0, 0]
    np.testing.assert_array_equal(xr.open_zarr(project / "results/tiny.zarr")["mei"].values, original)
    assert np.isfinite(original).all() and verify(project).returncode == 0
