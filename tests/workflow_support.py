"""Run the real workflow (Snakemake in a subprocess) on tiny projects in temporary folders."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


DEMO_FOLDER = "resources/demo/tinyv1"
TINY_CNN = {"channels": 3, "kernel_sizes": [3, 3]}


def member_spec(seed: int, n_neurons: int = 5, size: int = 12, demo: bool = False) -> dict[str, Any]:
    if demo:
        return {
            "checkpoint": f"{DEMO_FOLDER}/member_{seed}.pt",
            "builder": "mei_core.demo.v1.build_demo_cnn",
            "builder_kwargs": {"n_neurons": n_neurons, "in_shape": [1, size, size], **TINY_CNN},
        }
    return {
        "checkpoint": f"models/member_{seed}.pt",
        "builder": "mei_core.demo.v1.build_demo_cnn",
        "builder_kwargs": {"n_neurons": n_neurons, "in_shape": [1, size, size], "channels": 3, "kernel_sizes": [3, 3], "init_seed": seed},
    }


def save_member(folder: Path, seed: int, n_neurons: int = 5, size: int = 12, weight_seed: int | None = None, demo: bool = False) -> None:
    from mei_core.demo.v1 import build_demo_cnn

    spec = member_spec(seed, n_neurons, size, demo)
    kwargs = {"init_seed": seed, **spec["builder_kwargs"]}
    if weight_seed is not None:
        kwargs["init_seed"] = weight_seed
    model = build_demo_cnn(**kwargs)
    (folder / spec["checkpoint"]).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / spec["checkpoint"])


def method(iterations: int, lr: float = 0.5) -> dict[str, Any]:
    return {
        "method_fn": "mei_core.methods.batched_gradient_ascent",
        "config": {
            "initial": {"path": "RandomNormal", "kwargs": {"std": 1.0}},
            "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": lr}},
            "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
            "precondition": [{"path": "DivideByMeanOfAbsolute"}],
            "postprocessing": [{"path": "ChangeNorm", "kwargs": {"norm": 6.0}}],
            "objectives": {"evaluation": {"path": "EvaluationObjective", "kwargs": {"interval": 4}}},
        },
    }


def tiny_config(demo: bool = False) -> dict[str, Any]:
    """4 of 5 output units in shards of 3 (two shards), 2 methods, 1 seed: 4 generate jobs.

    With ``demo``, the members are trained by the workflow's demo rules on a tiny simulated population
    (2 simple, 2 complex, 1 DoG cell), and validation has ground truth."""
    if demo:
        config = tiny_config()
        config["demo"] = {"tinyv1": {"kind": "v1", "n_simple": 2, "n_complex": 2, "n_dog": 1, "size": 12, "n_images": 200, "epochs": 2, "member_seeds": [1, 2, 3], "train": {"model_kwargs": {"n_neurons": 5, "in_shape": [1, 12, 12], **TINY_CNN}}}}
        ensemble = config["ensembles"]["tiny"]
        ensemble["members"] = [member_spec(1, demo=True), member_spec(2, demo=True)]
        ensemble["validation_members"] = [member_spec(3, demo=True)]
        ensemble["ground_truth"] = {"kind": "v1", "file": f"{DEMO_FOLDER}/ground_truth.json"}
        return config
    return {
        "device": "cpu",
        "threads": 1,
        "shard_size": 3,
        "seeds": [0],
        "ensembles": {
            "tiny": {
                "input_shape": [1, 12, 12],
                "outputs": 5,
                "dataset_id": "synthetic",
                "members": [member_spec(1), member_spec(2)],
                "validation_members": [member_spec(3)],
            }
        },
        "objectives": {"tiny": {"neurons": [0, 1, 2, 3]}},
        "methods": {"fast": method(6), "slow": method(10)},
    }


def make_project(folder: Path, config: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in (1, 2, 3):
        save_member(folder, seed)
    write_config(folder, config or tiny_config())
    return folder


def write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def read_config(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "config.yaml").read_text())


def snakemake(folder: Path, *args: str, check: bool = True, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(folder), "--configfile", str(folder / "config.yaml"), "--cores", "2", *args]
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), environment.get("PYTHONPATH", "")])
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=environment, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def planned_outputs(folder: Path) -> dict[str, list[str]]:
    """What a dry run would (re)compute: rule name → output files."""
    result = snakemake(folder, "--dry-run")
    planned: dict[str, list[str]] = {}
    rule = None
    for line in (result.stdout + result.stderr).splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if match:
            rule = match.group(1)
            planned.setdefault(rule, [])
        elif rule and line.strip().startswith("output:"):
            # an `update` output (kept by its job when it already holds its result) is listed with a flag
            planned[rule].extend(p.strip().removesuffix(" (update)") for p in line.strip()[len("output:"):].split(","))
            rule = None
    return planned


def copy_project(source: Path, target: Path) -> Path:
    """A copy with mtimes preserved, so Snakemake sees the same up-to-date state."""
    shutil.copytree(source, target, symlinks=True)
    return target


def edited(config: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(config)
