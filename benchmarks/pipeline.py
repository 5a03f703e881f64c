"""Pipeline benchmarks: planning (dry-run) cost of a large run, and aggregation time and memory.

Run with `make bench` (or `.venv/bin/python benchmarks/pipeline.py`). Prints:
  1. `snakemake --dry-run` wall time for 50k MEIs (10k neurons × 5 seeds, shards of 100 → 500 jobs),
     and side by side the same 10k items of one seed as 100 shard jobs vs 10k one-item jobs;
  2. aggregation of 50k small MEIs (1×16×16) from 500 shard files into Zarr + Parquet: wall time and
     peak memory (max RSS of the aggregating process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def write_project(folder: Path, neurons: int, seeds: list[int], shard_size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "member.pt").write_bytes(b"not loaded by a dry run")
    method = {
        "initial": {"path": "RandomNormal"},
        "optimizer": {"path": "SGD", "kwargs": {"lr": 0.5}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 100}},
    }
    config = {
        "shard_size": shard_size,
        "seeds": seeds,
        "ensembles": {"big": {"input_shape": [1, 36, 64], "outputs": neurons, "members": [{"checkpoint": "member.pt", "builder": "mei_core.demo.v1.build_demo_cnn"}]}},
        "objectives": {"big": {"neurons": "all"}},
        "methods": {"default": {"config": method}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def dry_run_seconds(folder: Path) -> tuple[float, int]:
    started = time.perf_counter()
    result = subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(folder),
         "--configfile", str(folder / "config.yaml"), "--cores", "1", "--dry-run", "--quiet", "all"],
        capture_output=True, text=True, cwd=folder,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    match = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("generate_meis")]
    jobs = int(match[0].split()[-1]) if match else -1
    return elapsed, jobs


def make_shards(folder: Path, n_shards: int, per_shard: int, seeds: int, shape=(1, 16, 16)) -> tuple[list[str], str, str]:
    from mei_core.files import write_json

    neurons = n_shards * per_shard // seeds
    write_json(folder / "manifest.json", {"name": "big", "input_shape": list(shape), "outputs": neurons, "members": [{"checkpoint": "m.pt", "sha256": "0" * 64}], "ground_truth": None})
    pd.DataFrame({"neuron_id": np.arange(neurons), "output_unit": np.arange(neurons), "data_key": [None] * neurons, "kind": ["unit"] * neurons, "kwargs": ["{}"] * neurons}).to_parquet(folder / "table.parquet")
    rng = np.random.default_rng(0)
    paths = []
    shards_per_seed = n_shards // seeds
    for seed in range(seeds):
        for index in range(shards_per_seed):
            ids = np.arange(index * per_shard, (index + 1) * per_shard)
            path = folder / "shards" / f"s{seed}_{index}.npz"
            path.parent.mkdir(exist_ok=True)
            metadata = {"ensemble": "big", "method": "default", "method_hash": "h" * 64, "seed": seed, "shard": index, "n_meis": 1, "device": "cpu", "runtime_s": 1.0}
            steps = np.repeat(np.arange(0, 100, 10, dtype=np.int32), per_shard)
            np.savez(path, meis=rng.standard_normal((per_shard, *shape), dtype=np.float32), scores=rng.random(per_shard, dtype=np.float32),
                     heldout_scores=rng.random(per_shard, dtype=np.float32), neuron_id=ids, output_unit=ids, mei_index=np.zeros(per_shard, np.int64),
                     n_iterations=np.full(per_shard, 100, np.int32), stop_reason=np.full(per_shard, "num_iterations"),
                     trace_step=steps, trace_row=np.tile(np.arange(per_shard, dtype=np.int32), 10), trace_name=np.full(len(steps), "evaluation"),
                     trace_value=rng.random(len(steps), dtype=np.float32), metadata=np.asarray(json.dumps(metadata)))
            paths.append(str(path))
    return paths, str(folder / "manifest.json"), str(folder / "table.parquet")


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        print("== planning: snakemake --dry-run ==")
        write_project(scratch / "plan50k", neurons=10_000, seeds=[0, 1, 2, 3, 4], shard_size=100)
        seconds, jobs = dry_run_seconds(scratch / "plan50k")
        print(f"50k MEIs (10k neurons × 5 seeds) in {jobs} shard jobs: dry run {seconds:.1f} s   (goal ≤ 15 s)")
        write_project(scratch / "sharded", neurons=10_000, seeds=[0], shard_size=100)
        write_project(scratch / "single", neurons=10_000, seeds=[0], shard_size=1)
        sharded, sharded_jobs = dry_run_seconds(scratch / "sharded")
        single, single_jobs = dry_run_seconds(scratch / "single")
        print(f"10k MEIs: {single_jobs} one-item jobs {single:.1f} s ÷ {sharded_jobs} shard jobs {sharded:.1f} s = {single / sharded:.1f}×")

        print("== aggregation of 50k MEIs (1×16×16) from 500 shards ==")
        paths, manifest, table = make_shards(scratch / "agg", n_shards=500, per_shard=100, seeds=5)
        script = (
            "import sys, json, resource, time; from mei_core.pipeline.results import aggregate_ensemble; a = json.loads(sys.argv[1]);"
            "t = time.perf_counter(); aggregate_ensemble(**a); print(json.dumps({'seconds': time.perf_counter() - t,"
            "'max_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
        )
        arguments = dict(manifest_path=manifest, table_path=table, shard_paths=paths, methods=["default"], seeds=list(range(5)),
                         zarr_path=str(scratch / "agg" / "big.zarr"), scores_path=str(scratch / "agg" / "scores.parquet"), traces_path=str(scratch / "agg" / "traces.parquet"))
        result = subprocess.run([sys.executable, "-c", script, json.dumps(arguments)], capture_output=True, text=True, check=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        rows = len(pd.read_parquet(arguments["scores_path"]))
        print(f"aggregate 50k MEIs: {figures['seconds']:.1f} s (goal ≤ 60 s), peak RSS {figures['max_rss_mb']:.0f} MB (goal ≤ 2048 MB), {rows} score rows")


if __name__ == "__main__":
    main()
