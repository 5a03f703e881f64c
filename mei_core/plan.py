"""Parse-time planning of a pipeline run: check the whole config, write the spec files whose content
defines each job, and list the jobs.

The pieces live where their concept does: config reading in ``configfile``, paths in ``paths``,
member checks in ``ensembles``, objective rows in the objective kinds, demo outputs in the demo kinds.
Spec files are written only when their content changes, so Snakemake's mtime test reruns exactly the
jobs whose definition changed: one method's shards when that method is edited (not when its keys are
reordered), only new shards when seeds or neurons are added, scoring only when held-out members change.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import import_object
from .demo import demo_kind
from .ensembles import check_ensemble, group_files
from .errors import MEIConfigError
from .files import write_json_if_changed
from .hashing import method_hash, source_hashes
from .method import validate_method
from .objectives.kinds import table_rows
from .paths import MEMBER_GROUPS, TABLES, Paths

DEFAULT_METHOD_FN = "mei_core.methods.batched_gradient_ascent"


@dataclass(frozen=True)
class Shard:
    ensemble: str
    method: str
    seed: int
    index: int


@dataclass
class Plan:
    paths: Paths
    ensembles: list[str]
    methods: list[str]
    seeds: list[int]
    shards: list[Shard] = field(default_factory=list)
    demos: dict[str, dict[str, Any]] = field(default_factory=dict)
    shard_counts: dict[str, int] = field(default_factory=dict)
    methods_of_ensemble: dict[str, list[str]] = field(default_factory=dict)
    files_of_group: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def pairs(self) -> list[tuple[str, str]]:
        """(ensemble, method) pairs that are computed."""
        return [(e, m) for e in self.ensembles for m in self.methods_of_ensemble[e]]

    def shards_of(self, ensemble: str) -> list[Shard]:
        return [s for s in self.shards if s.ensemble == ensemble]

    def member_files(self, ensemble: str, group: str) -> list[str]:
        """Checkpoints, TorchScript and data files (and ground truth) a member group is assembled from."""
        return self.files_of_group[(ensemble, group)]

    def shard_files(self, ensemble: str) -> list[str]:
        return [self.paths.shard_file(s.ensemble, s.method, s.seed, s.index) for s in self.shards_of(ensemble)]

    def heldout_files(self, ensemble: str) -> list[str]:
        return [self.paths.heldout_file(s.ensemble, s.method, s.seed, s.index) for s in self.shards_of(ensemble)]

    def outputs(self) -> list[str]:
        """Every user-facing output: the targets of ``rule all``."""
        tables = [self.paths.table(t) for t in TABLES]
        return tables + [self.paths.figure(e, m) for e, m in self.pairs()]


def put_interpreter_on_path() -> None:
    """Jobs run ``python -m mei_core``: make that the interpreter running Snakemake (its venv)."""
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def use_pythonpath(folders: list[str] | None, base_dir: str | Path = ".") -> list[str]:
    """Make a lab's own modules (builders, components, objectives) importable here and in every job:
    the ``pythonpath`` folders (relative to the working directory) go first on ``sys.path`` and on
    ``PYTHONPATH``, which local jobs and SLURM jobs (submitted with the environment) inherit."""
    resolved = []
    for i, folder in enumerate(folders or []):
        path = (Path(base_dir) / folder).resolve()
        if not path.is_dir():
            raise MEIConfigError(f"pythonpath[{i}]: folder {folder!r} not found (resolved to {str(path)!r})")
        resolved.append(str(path))
    for path in reversed(resolved):
        if path not in sys.path:
            sys.path.insert(0, path)
    if resolved:
        os.environ["PYTHONPATH"] = os.pathsep.join(resolved + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in resolved])
    return resolved


def check_device(device: str) -> None:
    """``device: cuda`` on a machine without a GPU: say so before any job starts, naming the key."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MEIConfigError(
                "device: 'cuda' but this machine sees no CUDA device (torch.cuda.is_available() is False); "
                "use 'auto' (a GPU when a job sees one) or 'cpu', or run the jobs on GPU nodes (--profile cluster)"
            )


def prepare(config: dict, base_dir: str | Path = ".", write: bool = True, jobs_run_here: bool = True) -> Plan:
    """Check everything a run needs and write the spec files. Raises MEIConfigError naming the key.

    ``jobs_run_here``: the jobs run on this machine (not submitted to a cluster, not a dry run), so
    the device they ask for must exist here."""
    base = Path(base_dir)
    if jobs_run_here:
        check_device(config.get("device", "auto"))
    use_pythonpath(config.get("pythonpath"), base)
    paths = Paths(config.get("results", "results"), config.get("resources", "resources"))
    shard_size = int(config.get("shard_size", 64))
    seeds = [int(s) for s in config["seeds"]]
    ensembles, methods = list(config["ensembles"]), list(config["methods"])
    plan = Plan(paths=paths, ensembles=ensembles, methods=methods, seeds=seeds, demos=dict(config.get("demo") or {}))
    pending: list[tuple[str, Any]] = []  # written only once everything is checked

    produced: set[str] = set()
    for name, demo in plan.demos.items():
        kind = demo_kind(demo.get("kind"), f"demo.{name}.kind")
        produced |= kind.outputs(paths.demo_folder(name), kind.settings(demo, f"demo.{name}"))
        pending.append((paths.demo_spec(name), {"name": name, **demo}))

    for name, method in config["methods"].items():
        method_fn = method.get("method_fn", DEFAULT_METHOD_FN)
        if not callable(import_object(method_fn, f"methods.{name}.method_fn")):
            raise MEIConfigError(f"methods.{name}.method_fn: {method_fn!r} is not callable")
        validate_method(method["config"], f"methods.{name}.config")
        unknown = sorted(set(method.get("ensembles", [])) - set(ensembles))
        if unknown:
            raise MEIConfigError(f"methods.{name}.ensembles: no ensemble {unknown[0]!r} (ensembles: {', '.join(ensembles)})")
        sources = source_hashes({"method_fn": method_fn, "config": method["config"]})
        pending.append((paths.method_spec(name), {
            "name": name, "method_fn": method_fn, "config": method["config"], "sources": sources,
            "method_hash": method_hash(method_fn, method["config"], sources),
        }))

    unknown = sorted(set(config["objectives"]) - set(ensembles))
    if unknown:
        raise MEIConfigError(f"objectives.{unknown[0]}: no ensemble of that name (ensembles: {', '.join(ensembles)})")
    for name, ensemble in config["ensembles"].items():
        for group, spec in check_ensemble(name, ensemble, base, produced).items():
            plan.files_of_group[(name, group)] = group_files(spec)
            pending.append((paths.member_spec(name, group), spec))
        objective = config["objectives"].get(name, {})
        rows = table_rows(objective, int(ensemble["outputs"]), base, f"objectives.{name}")
        sources = source_hashes(objective)  # a custom objective's module: editing it reruns these shards
        n_shards = math.ceil(len(rows) / shard_size)
        plan.shard_counts[name] = n_shards
        pending.append((paths.objective_spec(name), {"ensemble": name, "rows": rows}))
        for index in range(n_shards):
            chunk = rows[index * shard_size : (index + 1) * shard_size]
            pending.append((paths.shard_spec(name, index), {"ensemble": name, "index": index, "rows": chunk, "sources": sources}))
        plan.methods_of_ensemble[name] = [m for m in methods if name in config["methods"][m].get("ensembles", ensembles)]
        for method in plan.methods_of_ensemble[name]:
            for seed in seeds:
                plan.shards.extend(Shard(name, method, seed, index) for index in range(n_shards))

    if write:
        for path, payload in pending:
            write_json_if_changed(base / path, payload)
    return plan


__all__ = ["MEMBER_GROUPS", "Plan", "Shard", "prepare", "put_interpreter_on_path"]
