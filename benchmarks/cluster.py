"""Cluster throughput: jobs and MEIs per minute of a whole run through ``--profile profiles/cluster``
on a throw-away local SLURM (``tests/support/local_slurm.py``; needs root, installs slurm-wlm once),
grouped (the profile as shipped) against ungrouped (the same profile without its ``groups``).

Run from the repository root: ``.venv/bin/python benchmarks/cluster.py`` (``--help``). Defaults: 10k
MEIs = 1,000 neurons × 10 seeds of a tiny CNN (``build_demo_cnn``: 1×12×12, 3 channels, 3×3 kernels)
in shards of 250 (4 generate and 4 held-out scoring jobs, each over the 10 seeds of its shard; 40 + 40
with ``--per-seed-jobs`` on a checkout from before one job covered every seed), 20 SGD steps per MEI, on one node
(this machine's cores, one fake GPU). Each mode starts from an empty results folder and runs the whole
workflow; printed: wall time, SLURM jobs submitted, generate/score jobs, jobs per minute, MEIs per
minute, and from the job logs the start-up a job paid before its first optimisation step.

Overhead (start-up and queueing): the whole run's wall time less the time the generate and scoring
jobs spent computing (their own logged runtimes, from the job's start of work to its shard written:
``wrote … in X s``); and the same for the shard phase alone (from the first generate job's submission
to the last shard job's end, as Snakemake's log has them), so the fixed work around it (assembly,
aggregation, validation, report) is left out. Scoring jobs may run beside generate jobs when
ungrouped, so there the subtraction over-counts compute and under-states overhead (a conservative
ratio).

What grouping changes: a group job runs ``group-components`` shards' generate and scoring jobs in
one SLURM allocation (queueing, the allocation's Snakemake start-up and the Snakefile parse paid
once per group) and, through the worker (``mei_core.pipeline.worker``), in children of one process that
imported torch once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mei_core.demo.v1 import build_demo_cnn  # noqa: E402
from tests.support.local_slurm import local_slurm, slurm_unavailable_reason  # noqa: E402

PROFILE = REPO / "profiles" / "cluster"
TINY = {"in_shape": [1, 12, 12], "channels": 3, "kernel_sizes": [3, 3]}


def make_project(folder: Path, neurons: int, seeds: int, shard_size: int, iterations: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    members = {}
    for seed in (1, 2, 3):
        kwargs = {"n_neurons": neurons, **TINY, "init_seed": seed}
        path = folder / "models" / f"member_{seed}.pt"
        path.parent.mkdir(exist_ok=True)
        torch.save(build_demo_cnn(**kwargs).state_dict(), path)
        members[seed] = {"checkpoint": f"models/member_{seed}.pt", "builder": "mei_core.demo.v1.build_demo_cnn", "builder_kwargs": kwargs}
    config = {
        "device": "auto",
        "threads": 1,
        "shard_size": shard_size,
        "seeds": list(range(seeds)),
        "ensembles": {"tiny": {"input_shape": [1, 12, 12], "outputs": neurons, "members": [members[1], members[2]], "validation_members": [members[3]]}},
        "objectives": {"tiny": {"neurons": "all"}},
        "methods": {"sgd": {"config": {
            "initial": {"path": "RandomNormal"},
            "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.5}},
            "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
            "transform": {"path": "Jitter", "kwargs": {"max_jitter": 1}},
            "precondition": [{"path": "DivideByMeanOfAbsolute"}],
            "postprocessing": [{"path": "ChangeNorm", "kwargs": {"norm": 6.0}}],
        }}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def profile_copy(target: Path, grouped: bool, cpus: int) -> Path:
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    if not grouped:
        for key in ("groups", "group-components"):
            profile.pop(key, None)
    profile["default-resources"]["mem_mb"] = min(int(profile["default-resources"]["mem_mb"]), 1000)
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return target


def run(folder: Path, profile: Path, cluster: dict, partition: str) -> tuple[float, str, str]:
    """The whole workflow from empty results; (wall seconds, scontrol's job list, Snakemake's log)."""
    for generated in ("results", "resources", ".snakemake"):
        shutil.rmtree(folder / generated, ignore_errors=True)
    command = [
        sys.executable, "-m", "snakemake", "--profile", str(profile), "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
        "--default-resources", f"slurm_partition={partition}", "mem_mb=1000", "runtime=600", "cpus_per_task=1",
        "--seconds-between-status-checks", "2", "--slurm-init-seconds-before-status-checks", "2",
        "--latency-wait", "5", "--retries", "0", "--slurm-keep-successful-logs",
    ]
    env = {**cluster["environ"], "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(folder.glob(".snakemake/slurm_logs/**/*.log"))[-3:])
        raise SystemExit(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{logs}")
    jobs = subprocess.run(["scontrol", "-o", "show", "job"], env=cluster["environ"], capture_output=True, text=True).stdout
    return elapsed, jobs, result.stderr


SHARD_RULES = ("generate_meis", "score_heldout")


def shard_phase(log: str) -> float:
    """Seconds from the first generate job's submission to the last shard job's end (Snakemake's
    log stamps its events to the second)."""
    stamp, first, last = None, None, None
    for line in log.splitlines():
        match = re.match(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line)
        if match:
            stamp = time.mktime(time.strptime(match.group(1), "%a %b %d %H:%M:%S %Y"))
        if stamp is None:
            continue
        if re.search(r"Group job generate_meis|^rule generate_meis:", line) and first is None:
            first = stamp
        if re.search(rf"Finished jobid: \d+ \(Rule: ({'|'.join(SHARD_RULES)})\)", line):
            last = stamp
    return (last - first) if first is not None and last is not None else float("nan")


def compute_seconds(project: Path) -> tuple[float, float]:
    """Seconds the generate and the scoring jobs spent computing, summed (from their logs)."""
    logs = project / "resources" / "logs"
    generate = sum(float(m) for p in (logs / "meis").rglob("*.log") for m in re.findall(r"items in ([0-9.]+) s", p.read_text(errors="replace")))
    score = sum(float(m) for p in (logs / "heldout").rglob("*.log")
                for m in re.findall(r"(?:MEIs scored|held-out score file\(s\)) in ([0-9.]+) s", p.read_text(errors="replace")))
    return generate, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["grouped", "ungrouped"], choices=["grouped", "ungrouped"])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--per-seed-jobs", action="store_true",
                        help="count jobs as the workflow made them before one job covered a shard's seeds (to run on an older checkout)")
    args = parser.parse_args()
    reason = slurm_unavailable_reason()
    if reason:
        raise SystemExit(f"cannot start a local SLURM: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="mei-cluster-bench-"))
    project = make_project(workdir / "project", args.neurons, args.seeds, args.shard_size, args.iterations)
    n_meis = args.neurons * args.seeds
    n_shards = -(-args.neurons // args.shard_size) * (args.seeds if args.per_seed_jobs else 1)  # generate jobs
    group = yaml.safe_load((PROFILE / "config.yaml").read_text()).get("group-components", {})
    print(f"{n_meis} MEIs: {args.neurons} neurons x {args.seeds} seeds, shards of {args.shard_size} ({n_shards} generate + "
          f"{n_shards} scoring jobs), {args.iterations} steps; {os.cpu_count()} cores, 1 (fake) GPU; group-components {group}; "
          f"load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    partition = yaml.safe_load((PROFILE / "config.yaml").read_text())["default-resources"]["slurm_partition"]
    try:
        with local_slurm(workdir / "slurm", partition=partition, gpus=1) as cluster:
            for mode in args.modes:
                profile = profile_copy(workdir / f"profile-{mode}", mode == "grouped", cluster["cpus"])
                elapsed, _, log = run(project, profile, cluster, partition)
                (workdir / f"snakemake-{mode}.log").write_text(log)  # kept with --keep: the run's timeline
                # the submissions Snakemake reports (scontrol forgets finished jobs after MinJobAge)
                lines = set(re.findall(r"SLURM jobid (\d+)", log)) or list(project.glob(".snakemake/slurm_logs/**/*.log"))
                startups = [float(m) for m in re.findall(r"start-up ([0-9.]+) s", "\n".join(
                    p.read_text(errors="replace") for p in (project / "resources" / "logs").rglob("*.log")))]
                print(f"{mode:9s}: {elapsed:7.1f} s wall ({elapsed / 60:.2f} min), {len(lines):3d} SLURM jobs: "
                      f"{2 * n_shards / (elapsed / 60):6.1f} shard jobs/min, {len(lines) / (elapsed / 60):5.1f} SLURM jobs/min, "
                      f"{n_meis / (elapsed / 60):7.0f} MEIs/min"
                      + (f"; job start-up median {sorted(startups)[len(startups) // 2]:.2f} s (n={len(startups)})" if startups else ""),
                      flush=True)
                generate, score = compute_seconds(project)
                phase = shard_phase(log)
                print(f"{'':9s}  compute {generate:.1f} s generate + {score:.1f} s scoring; overhead: whole run {elapsed - generate - score:.1f} s "
                      f"({1000 * (elapsed - generate - score) / n_meis:.1f} ms/MEI), shard phase {phase:.0f} s of which overhead "
                      f"{phase - generate - score:.1f} s ({1000 * (phase - generate - score) / n_meis:.1f} ms/MEI, "
                      f"{(phase - generate - score) / (2 * n_shards):.2f} s per shard job); load average "
                      f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


if __name__ == "__main__":
    main()
