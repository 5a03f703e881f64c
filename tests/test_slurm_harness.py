"""The cluster profile, run for real against a throw-away local SLURM.

Starts munged/slurmctld/slurmd (tests/support/local_slurm.py), then runs a
two-rule workflow with ``snakemake --profile profiles/cluster`` and checks
that both jobs went through sbatch and that ``generate_meis`` got the GPU
the profile asks for.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
try:
    from tests.support.local_slurm import local_slurm, slurm_unavailable_reason
except ModuleNotFoundError:  # plain `pytest` does not put the repo on sys.path
    sys.path.insert(0, str(REPO))
    from tests.support.local_slurm import local_slurm, slurm_unavailable_reason

PROFILE = REPO / "profiles" / "cluster"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SNAKEFILE = textwrap.dedent(
    r'''
    rule summarize:
        input: "meis.txt"
        output: "summary.txt"
        shell:
            "cp {input} {output}; "
            "echo summarize_job_id=${{SLURM_JOB_ID:-none}} >> {output}"

    # gets its GPU from the profile's set-resources, like the real workflow
    rule generate_meis:
        output: "meis.txt"
        shell:
            "echo generate_job_id=${{SLURM_JOB_ID:-none}} > {output}; "
            "echo gpus_on_node=${{SLURM_GPUS_ON_NODE:-none}} >> {output}; "
            "echo step_gpus=${{SLURM_STEP_GPUS:-${{SLURM_JOB_GPUS:-none}}}} >> {output}; "
            "echo cuda_visible_devices=${{CUDA_VISIBLE_DEVICES:-none}} >> {output}"
    '''
)


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _kv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def test_cluster_profile_runs_on_local_slurm(tmp_path: Path) -> None:
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)

    profile = _profile()
    defaults = dict(profile.get("default-resources") or {})
    gen = dict((profile.get("set-resources") or {}).get("generate_meis") or {})
    assert gen.get("gpu") or "gpu" in str(gen.get("gres", "")), (
        "profiles/cluster must request a GPU for generate_meis"
    )
    assert profile.get("slurm-status-command") == "squeue"
    # Name the local partitions like the profile's, so the profile is used
    # unchanged (the GPU rule may name its own partition).
    partitions = [defaults.get("slurm_partition") or "main"]
    if gen.get("slurm_partition"):
        partitions.append(gen["slurm_partition"])

    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SNAKEFILE)

    with local_slurm(tmp_path, partition=partitions, gpus=1) as cluster:
        cmd = [
            sys.executable, "-m", "snakemake",
            "--profile", str(PROFILE),
            "--snakefile", str(workdir / "Snakefile"),
            "--directory", str(workdir),
            # test speed only: poll SLURM often, fail fast
            "--seconds-between-status-checks", "2",
            "--slurm-init-seconds-before-status-checks", "2",
            "--retries", "0",
            "--latency-wait", "5",
            "--slurm-keep-successful-logs",
        ]
        # shrink the profile's defaults only if this node could not hold them
        mem = int(defaults.get("mem_mb", 0) or 0)
        cpus = int(defaults.get("cpus_per_task", 1) or 1)
        if mem > cluster["mem_mb"] // 2 or cpus > cluster["cpus"]:
            small = dict(defaults, mem_mb=min(mem, 1000), cpus_per_task=1,
                         slurm_partition=cluster["partition"])
            cmd += ["--default-resources", *(f"{k}={v}" for k, v in small.items())]
        t0 = time.monotonic()
        res = subprocess.run(
            cmd, cwd=workdir, env=cluster["environ"], capture_output=True,
            text=True, timeout=150,
        )
        elapsed = time.monotonic() - t0
        log = res.stdout + res.stderr
        slurm_logs = "\n".join(
            f"--- {p} ---\n{p.read_text(errors='replace')}"
            for p in sorted((workdir / ".snakemake").glob("slurm_logs/**/*.log"))
        )
        assert res.returncode == 0, f"snakemake failed:\n{log}\n{slurm_logs}"

        # the GPU job really asked SLURM for a GPU
        jobs = subprocess.run(
            ["scontrol", "-o", "show", "job"], env=cluster["environ"],
            capture_output=True, text=True, timeout=30,
        ).stdout

    meis, summary = workdir / "meis.txt", workdir / "summary.txt"
    assert meis.exists() and summary.exists(), log
    m, s = _kv(meis), _kv(summary)
    gen_id, sum_id = m["generate_job_id"], s["summarize_job_id"]
    assert gen_id.isdigit(), f"generate_meis did not run under SLURM: {m}"
    assert sum_id.isdigit(), f"summarize did not run under SLURM: {s}"
    assert gen_id != sum_id
    # a GPU was allocated to generate_meis by SLURM (the slurm-jobstep plugin
    # strips SLURM_JOB_GPUS from the inner srun; the step's own vars remain)
    assert m["gpus_on_node"] == "1", m
    assert m["cuda_visible_devices"] == "0", m
    assert m["step_gpus"] == "0", m
    gen_line = next(
        (line for line in jobs.splitlines() if line.startswith(f"JobId={gen_id} ")),
        "",
    )
    # `--gpus=1` shows as TresPerJob=gres:gpu:1 (`--gres=gpu:1`: TresPerNode)
    assert re.search(r"TresPer(Job|Node)=\S*gpu:1\b", gen_line), gen_line or jobs
    sum_line = next(
        (line for line in jobs.splitlines() if line.startswith(f"JobId={sum_id} ")),
        "",
    )
    assert sum_line and not re.search(r"TresPer\w+=\S*gpu", sum_line), sum_line
    print(f"\nsnakemake on local SLURM took {elapsed:.1f}s")
