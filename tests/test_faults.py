"""Faults a real run meets: deleted or corrupt outputs, killed jobs' leftovers, a project copied
without Snakemake's metadata, paths with spaces and shell metacharacters. Real Snakemake runs on a
tiny project in temporary folders."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from workflow_support import REPO, make_project, planned_outputs, read_config, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


def test_a_deleted_store_is_rebuilt_by_a_plain_rerun_and_a_killed_aggregations_leftovers_are_cleaned(project, finished):
    tables = project / "resources" / "tables"
    (tables / ".tiny.scores.parquet.k1ll3d.parquet").write_bytes(b"half a table")  # what SIGKILL leaves
    (project / "results" / ".tiny.zarr.partial").mkdir()
    shutil.rmtree(project / "results" / "tiny.zarr")
    planned = planned_outputs(project)
    assert planned["aggregate"] and "generate_meis" not in planned
    snakemake(project)
    rebuilt, original = xr.open_zarr(project / "results" / "tiny.zarr"), xr.open_zarr(finished / "results" / "tiny.zarr")
    np.testing.assert_array_equal(rebuilt["mei"].values, original["mei"].values)
    assert not list(tables.glob(".tiny.*")) and not (project / "results" / ".tiny.zarr.partial").exists()


def test_a_deleted_shard_is_made_again_alone(project):
    (project / "resources" / "meis" / "tiny" / "fast" / "seed0" / "shard1.npz").unlink()
    assert planned_outputs(project)["generate_meis"] == ["resources/meis/tiny/fast/seed0/shard1.npz"]


def test_a_corrupt_shard_is_named_on_the_console(project):
    shard = project / "resources" / "meis" / "tiny" / "slow" / "seed0" / "shard0.npz"
    shard.write_bytes(b"garbage")
    result = snakemake(project, "--show-failed-logs", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "resources/meis/tiny/slow/seed0/shard0.npz: cannot read this file" in output and "delete it and rerun" in output
    shard.unlink()  # as the message says: the deleted shard is then made again alone
    assert planned_outputs(project)["generate_meis"] == ["resources/meis/tiny/slow/seed0/shard0.npz"]


def test_a_project_copied_without_snakemake_metadata_notices_a_new_seed(finished, tmp_path):
    project = tmp_path / "copy"
    shutil.copytree(finished, project, ignore=shutil.ignore_patterns(".snakemake"))
    config = read_config(project)
    config["seeds"] = [0, 5]
    write_config(project, config)
    planned = planned_outputs(project)
    # one job per shard covers every seed; it keeps the seed-0 files, which already hold their results
    assert sorted(planned["generate_meis"]) == sorted(f"resources/meis/tiny/{m}/seed{s}/shard{k}.npz" for m in ("fast", "slow") for k in (0, 1) for s in (0, 5))
    seed0 = {path: path.read_bytes() for path in (project / "resources" / "meis").glob("tiny/*/seed0/*.npz")}
    heldout0 = {path: path.read_bytes() for path in (project / "resources" / "heldout").glob("tiny/*/seed0/*.npz")}
    snakemake(project)
    assert len(seed0) == 4 and all(path.read_bytes() == content for path, content in seed0.items())
    assert all(path.read_bytes() == content for path, content in heldout0.items())
    log = (project / "resources" / "logs" / "meis" / "tiny" / "fast" / "shard0.log").read_text()
    assert "kept resources/meis/tiny/fast/seed0/shard0.npz" in log and "wrote 1 shard file(s) (seeds 5)" in log
    scores = pd.read_parquet(project / "results" / "scores.parquet")
    assert sorted(scores["seed"].unique()) == [0, 5]
    original = pd.read_parquet(finished / "results" / "scores.parquet")
    kept = scores[scores["seed"] == 0].sort_values(["method", "neuron_id"])["score"].to_numpy()
    np.testing.assert_array_equal(kept, original.sort_values(["method", "neuron_id"])["score"].to_numpy())


def verify(project):
    return subprocess.run([sys.executable, "-m", "mei_core", "verify", "--results", str(project / "results")],
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})


def test_verify_finds_a_changed_table_and_a_corrupt_chunk_and_says_what_to_rerun(project):
    intact = verify(project)
    assert intact.returncode == 0 and "intact" in intact.stdout
    with open(project / "results" / "scores.parquet", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00garbage\x00")
    chunk = next(p for p in sorted((project / "results" / "tiny.zarr" / "mei").rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    broken = verify(project)
    assert broken.returncode == 1
    assert "scores.parquet: its sha256 differs" in broken.stderr
    assert "tiny.zarr/mei: chunk at" in broken.stderr and "is corrupt" in broken.stderr and "rerun snakemake" in broken.stderr


def test_paths_with_spaces_and_shell_metacharacters_run_end_to_end(tmp_path):
    config = tiny_config()
    config["methods"] = {"fast": config["methods"]["fast"]}
    config["results"] = "my results"
    config["resources"] = "res $(touch INJECTED) `touch INJECTED2`; dir"
    folder = make_project(tmp_path / "a project", config)
    result = snakemake(folder)
    assert "MEIs, 0 not ok" in result.stdout + result.stderr  # the run's closing summary
    assert len(pd.read_parquet(folder / "my results" / "scores.parquet")) == 4
    assert (folder / config["resources"] / "meis" / "tiny" / "fast" / "seed0" / "shard0.npz").exists()
    assert not list(tmp_path.rglob("INJECTED*")) and not list(REPO.glob("INJECTED*"))
