"""The real workflow through `--profile profiles/cluster` on a throw-away local SLURM."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from tests.support.local_slurm import local_slurm, slurm_unavailable_reason
from workflow_support import REPO, SNAKEFILE, make_project, tiny_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


LAB_MODELS = """
from mei_core.demo.v1 import build_demo_cnn


def build(**kwargs):
    return build_demo_cnn(**kwargs)
"""


def test_the_tiny_project_runs_through_the_cluster_profile_with_a_gpu_per_generate_job(tmp_path):
    """…with the members built by the lab's own module, made importable in every SLURM job by the
    config's ``pythonpath``."""
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    config = tiny_config()
    config["methods"].pop("slow")
    config["shard_size"] = 4  # one shard: one GPU job
    config["pythonpath"] = ["lab"]
    for group in ("members", "validation_members"):
        for member in config["ensembles"]["tiny"][group]:
            member["builder"] = "lab_models.build"
    folder = make_project(tmp_path / "project", config)
    (folder / "lab").mkdir()
    (folder / "lab" / "lab_models.py").write_text(LAB_MODELS)
    profile = yaml.safe_load((REPO / "profiles" / "cluster" / "config.yaml").read_text())
    partition = profile["default-resources"]["slurm_partition"]
    with local_slurm(tmp_path / "slurm", partition=partition, gpus=1) as cluster:
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable, "-m", "snakemake", "--profile", str(REPO / "profiles" / "cluster"),
                "--snakefile", str(SNAKEFILE), "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
                # test speed only: poll often, fail fast
                "--seconds-between-status-checks", "2", "--slurm-init-seconds-before-status-checks", "2",
                "--retries", "0", "--latency-wait", "5", "--slurm-keep-successful-logs",
            ],
            cwd=folder, env=cluster["environ"], capture_output=True, text=True, timeout=400,
        )
        elapsed = time.monotonic() - started
        jobs = subprocess.run(["scontrol", "-o", "show", "job"], env=cluster["environ"], capture_output=True, text=True).stdout
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob(".snakemake/slurm_logs/**/*.log")))
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{logs[-3000:]}"
    assert "no plan of this config recorded" not in logs  # every job's Snakemake read the main process's plan
    scores = pd.read_parquet(folder / "results" / "scores.parquet")
    assert len(scores) == 4 and (scores["status"] == "ok").all()
    manifest = yaml.safe_load((folder / "resources" / "ensembles" / "tiny" / "members.manifest.json").read_text())
    assert manifest["members"][0]["builder"] == "lab_models.build" and "lab_models.build" in manifest["sources"]
    generate_jobs = [line for line in jobs.splitlines() if "generate_meis" in line]
    assert len(generate_jobs) == 1 and "gres:gpu:1" in generate_jobs[0]
    # the profile's three stages, one SLURM job each: assembly, the shards (generate + held-out scoring),
    # aggregation followed by validation
    stages = sorted(re.search(r"slurm_logs/(\w+)/", line).group(1) for line in jobs.splitlines())
    assert stages == ["group_assemble_assemble_ensemble", "group_finish_aggregate_validate", "group_generate_meis_generate_meis_score_heldout"]
    assert (folder / "results" / "tiny.zarr").exists() and len(pd.read_parquet(folder / "results" / "validation.parquet")) > 0
    print(f"\ntiny workflow on local SLURM took {elapsed:.1f}s")
