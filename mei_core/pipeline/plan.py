"""Parse-time planning of a pipeline run: check the whole config, write the spec files whose content
defines each job, and list the jobs.

The pieces live where their concept does: config reading in ``configfile``, paths in ``paths``,
member checks in ``ensembles``, objective rows in the objective kinds, demo outputs in the demo kinds.
Spec files are written only when their content changes, so Snakemake's mtime test reruns exactly the
jobs whose definition changed: one method's shards when that method is edited (not when its keys are
reordered), only new shards when neurons are added (and only the new seed's results when a seed is
added: mei_core.generate keeps the files that hold theirs), scoring only when held-out members change.

The main Snakemake process plans with every check (members loaded and probed, method components
built, objective kinds and builders imported: this needs torch) and records the plan it made
(``resources/plan.json``, keyed by the config). Snakemake parses the Snakefile again in every job
(a SLURM job's own Snakemake, and each job of a group job): such a parse reads that record instead
(:func:`prepare` with ``in_job``), so it imports neither torch nor the objective kinds. This module
imports only light modules; the checks import what they need when they run.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import MEIConfigError
from ..files import atomic_path, write_json_if_changed
from ..hashing import canonical_json, method_hash, sha256_file, sha256_text, source_hashes
from ..modality import Modality
from . import stamps
from .paths import MEMBER_GROUPS, TABLES, Paths

# Imported in the functions that use them (not here): .config, .demo, .ensembles, .method,
# .method_entries, .objectives.kinds. A job's Snakemake imports this module to read the recorded
# plan, and must not pay for torch (≈ 1.5 s) to do so.

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
    #: ensembles with held-out (validation) members
    heldout_ensembles: list[str] = field(default_factory=list)
    #: ensembles of videos (``C×T×H×W`` inputs): their MEIs are also exported as GIFs
    video_ensembles: list[str] = field(default_factory=list)
    #: methods expanded from a ``grid``: name → {"base": the entry's name, "values": {dotted key: value}}
    grids: dict[str, dict[str, Any]] = field(default_factory=dict)
    files_of_group: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: sha256 of what each spec file holds (as planned, written or not: a dry run writes none) and of
    #: each member file the user supplies; rules pass their inputs' digest as a param
    #: (:meth:`input_digest`), so Snakemake reruns a job whose inputs' content changed where mtimes
    #: cannot tell (a dry run, a checkpoint copied with ``cp -p``)
    contents: dict[str, str] = field(default_factory=dict)
    #: ensemble → its ``ground_truth`` ({kind, file}): read by validation alone
    ground_truths: dict[str, dict[str, Any]] = field(default_factory=dict)

    def planned_shards(self) -> list[Shard]:
        """Every (ensemble, method, seed, shard) of the run, in planning order."""
        return [Shard(e, m, seed, index) for e in self.ensembles for m in self.methods_of_ensemble[e]
                for seed in self.seeds for index in range(self.shard_counts[e])]

    #: fields not stored as they are: ``paths`` (stored as its two folders), ``shards`` (they follow
    #: from the rest), ``files_of_group`` (tuple keys: stored as [ensemble, group, files] rows)
    _DERIVED = ("paths", "shards", "files_of_group")

    def to_record(self) -> dict[str, Any]:
        """The plan as JSON: every field, so that a field added to Plan is recorded too."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._DERIVED}
        record["results"], record["resources"] = self.paths.results, self.paths.resources
        record["files_of_group"] = [[e, g, files] for (e, g), files in self.files_of_group.items()]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Plan:
        stored = {f.name: record[f.name] for f in fields(cls) if f.name not in cls._DERIVED}
        plan = cls(paths=Paths(record["results"], record["resources"]), **stored,
                   files_of_group={(e, g): files for e, g, files in record["files_of_group"]})
        plan.shards = plan.planned_shards()
        return plan

    def input_digest(self, files: list[str]) -> str:
        """One digest of the planned content of ``files`` (those the plan knows: spec files and
        user-supplied member files); a rule's ``params`` carry it, Snakemake's params trigger reruns
        the job when it changes."""
        return sha256_text(canonical_json([[f, self.contents[f]] for f in files if f in self.contents]))[:16]

    def pairs(self) -> list[tuple[str, str]]:
        """(ensemble, method) pairs that are computed."""
        return [(e, m) for e in self.ensembles for m in self.methods_of_ensemble[e]]

    def shards_of(self, ensemble: str) -> list[Shard]:
        return [s for s in self.shards if s.ensemble == ensemble]

    def member_files(self, ensemble: str, group: str) -> list[str]:
        """Checkpoints, TorchScript and data files (and the stimulus sample of ``input_stats.from``) a
        member group is assembled from."""
        return self.files_of_group[(ensemble, group)]

    def shard_files(self, ensemble: str) -> list[str]:
        return [self.paths.shard_file(s.ensemble, s.method, s.seed, s.index) for s in self.shards_of(ensemble)]

    def heldout_files(self, ensemble: str) -> list[str]:
        """Held-out score files of an ensemble's shards (none without held-out members)."""
        if ensemble not in self.heldout_ensembles:
            return []
        return [self.paths.heldout_file(s.ensemble, s.method, s.seed, s.index) for s in self.shards_of(ensemble)]

    def method_shard_files(self, ensemble: str, method: str) -> list[str]:
        """The MEI files of one (ensemble, method): what its pictures (figure, GIFs, thumbnails) show."""
        return [self.paths.shard_file(s.ensemble, s.method, s.seed, s.index) for s in self.shards_of(ensemble) if s.method == method]

    def method_result_files(self, ensemble: str, method: str) -> list[str]:
        """The MEI and held-out score files of one (ensemble, method): its rows of the validation table
        change only with these (or with the ground truth). Figures of a method depend on these, and on
        the ensemble's store and tables only as ``ancient`` (rewritten whenever any method changes), so
        adding or changing a method redraws that method's figures alone."""
        heldout = ensemble in self.heldout_ensembles
        return [f for s in self.shards_of(ensemble) if s.method == method
                for f in (self.paths.shard_file(s.ensemble, s.method, s.seed, s.index),
                          *([self.paths.heldout_file(s.ensemble, s.method, s.seed, s.index)] if heldout else []))]

    def ground_truth_files(self, ensemble: str) -> list[str]:
        """The ground-truth file validation of ``ensemble`` reads (none without ground truth)."""
        truth = self.ground_truths.get(ensemble)
        return [truth["file"]] if truth else []

    def grids_of(self, ensemble: str) -> dict[str, list[str]]:
        """Grid name → its expanded methods that run on ``ensemble`` (in grid order)."""
        grids: dict[str, list[str]] = {}
        for method in self.methods_of_ensemble[ensemble]:
            if method in self.grids:
                grids.setdefault(self.grids[method]["base"], []).append(method)
        return grids

    def grid_labels(self, methods: list[str]) -> list[str]:
        return [",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.grids[m]["values"].items()) for m in methods]

    def outputs(self) -> list[str]:
        """The targets of ``rule all``: every user-facing output, and every shard and held-out score
        file, so that a deleted one is made again by a plain rerun and a new seed, method or neuron
        is noticed from the files alone (without Snakemake's metadata in ``.snakemake/``)."""
        tables = [self.paths.table(t) for t in TABLES]
        stores = [self.paths.zarr(e) for e in self.ensembles]
        shards = [f for e in self.ensembles for f in self.shard_files(e) + self.heldout_files(e)]
        grids = [self.paths.grid_figure(e, g) for e in self.ensembles for g in self.grids_of(e)]
        videos = [self.paths.video_folder(e, m) for e, m in self.pairs() if e in self.video_ensembles]
        figures = [self.paths.figure(e, m) for e, m in self.pairs()]
        return tables + stores + [self.paths.checksums()] + figures + grids + videos + shards


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


def snakemake_dry_run(argv: list[str]) -> bool:
    """Whether Snakemake's command line asks for a dry run (``-n``, ``--dry-run``, ``-np``, ...).
    ``workflow.dryrun`` is known only after the Snakefile has been parsed, too late for the plan;
    building Snakemake's own parser to ask takes seconds (it loads every plugin)."""
    for token in argv[1:]:
        if token in ("--dry-run", "--dryrun") or (re.fullmatch(_SHORT_FLAGS, token) and "n" in token):
            return True
    return False


#: a cluster of Snakemake's short flags that take no value (-n, -p, -q, -F, ...), e.g. ``-np``
_SHORT_FLAGS = r"-[ntkfFlSDpqa]+"


def check_device(device: str) -> None:
    """``device: cuda`` on a machine without a GPU: say so before any job starts, naming the key."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MEIConfigError(
                "device: 'cuda' but this machine sees no CUDA device (torch.cuda.is_available() is False); "
                "use 'auto' (a GPU when a job sees one) or 'cpu', or run the jobs on GPU nodes (--profile cluster)"
            )


def check_method_fn(function: Any, path: str, key: str) -> None:
    """A ``method_fn`` is called by every job as ``method_fn(objective, config, seeds, shape, device)``
    (:mod:`mei_core.pipeline.generate`): one that cannot take these is refused here, naming the key,
    not with a ``TypeError`` in every job."""
    if not callable(function):
        raise MEIConfigError(f"{key}: {path!r} is not callable")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a callable without an inspectable signature: called as it is
        return
    try:
        signature.bind(*METHOD_FN_ARGUMENTS)
    except TypeError as error:
        raise MEIConfigError(f"{key}: {path}{signature} cannot be called as method_fn({', '.join(METHOD_FN_ARGUMENTS)}): {error}"
                             " (see mei_core.methods.batched_gradient_ascent)") from None


#: the arguments every job passes to a ``method_fn``, in order
METHOD_FN_ARGUMENTS = ("objective", "config", "seeds", "shape", "device")


def check_folder(base: Path, folder: str, key: str) -> None:
    """``results``/``resources`` must be (or become) folders: a file there, or above, is named."""
    path = base / folder
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise MEIConfigError(f"{key}: {folder!r} needs a folder, but {str(candidate)!r} is a file")
            return


def prepare(config: dict, base_dir: str | Path = ".", write: bool = True, jobs_run_here: bool = True, in_job: bool = False,
            dry_run: bool = False) -> Plan:
    """Check everything a run needs and write the spec files. Raises MEIConfigError naming the key.

    ``dry_run`` (``snakemake -n``): nothing that exists is changed (no spec file, cache or plan
    record rewritten; only spec files and a plan record that do not exist yet are made, as Snakemake
    needs every input to exist to plan): the rules' content params (:meth:`Plan.input_digest`) show
    what would rerun.

    The main process takes the plan recorded for this config, checking and importing nothing, when
    nothing planning read or wrote has changed since a run recorded it (:mod:`.stamps`; a dry run
    records none, so until the next run each dry run plans again).

    ``jobs_run_here``: the jobs run on this machine (not submitted to a cluster, not a dry run), so
    the device they ask for must exist here. ``in_job``: Snakemake parses the Snakefile for a job (not
    ``workflow.is_main_process``); the main process has checked this config and recorded its plan, which
    is returned without checking or writing anything (planned as usual when there is no record of this
    config, e.g. a job started by hand)."""
    base = Path(base_dir)
    if in_job:
        use_pythonpath(config.get("pythonpath"), base)
        recorded = read_plan_record(config, base)
        if recorded is not None:
            return recorded
        record = Paths(config.get("results", "results"), config.get("resources", "resources")).plan_record()
        print(f"mei_core: no plan of this config recorded in {record}: checking the whole config in this job", file=sys.stderr)
        write = False  # the main process writes the spec files
    if jobs_run_here:
        check_device(config.get("device", "auto"))
    pythonpath = use_pythonpath(config.get("pythonpath"), base)
    environment = stamps.environment()  # before planning's imports, as the next invocation sees it
    if not in_job:
        # nothing planning read or wrote has changed since the recorded plan was made: it is this plan
        recorded = read_plan_record(config, base, inputs_unchanged=True)
        if recorded is not None:
            return recorded
    from ..config import import_object
    from ..demo import demo_kind
    from .ensembles import check_ensemble, group_files, probe_members
    from .method_entries import expand_grids, method_fn_of, refuse_identical_grid_members
    from ..objectives.kinds import table_rows

    paths = Paths(config.get("results", "results"), config.get("resources", "resources"))
    for key in ("results", "resources"):
        check_folder(base, getattr(paths, key), key)
    shard_size = int(config.get("shard_size", 64))
    seeds = [int(s) for s in config["seeds"]]
    ensembles = list(config["ensembles"])
    plan = Plan(paths=paths, ensembles=ensembles, methods=[], seeds=seeds, demos=dict(config.get("demo") or {}))
    pending: list[tuple[str, Any]] = []  # written only once everything is checked

    produced: set[str] = set()
    for name, demo in plan.demos.items():
        kind = demo_kind(demo.get("kind"), f"demo.{name}.kind")
        produced |= kind.outputs(paths.demo_folder(name), kind.settings(demo, f"demo.{name}"))
        pending.append((paths.demo_spec(name), {"name": name, **demo}))

    methods_config, plan.grids = expand_grids(config["methods"])
    plan.methods = list(methods_config)
    for name, method in methods_config.items():
        method_fn = method_fn_of(name, method, DEFAULT_METHOD_FN)
        check_method_fn(import_object(method_fn, f"methods.{name}.method_fn"), method_fn, f"methods.{name}.method_fn")
        unknown = sorted(set(method.get("ensembles", [])) - set(ensembles))
        if unknown:
            raise MEIConfigError(f"methods.{name}.ensembles: no ensemble {unknown[0]!r} (ensembles: {', '.join(ensembles)})")

    unknown = sorted(set(config["objectives"]) - set(ensembles))
    if unknown:
        raise MEIConfigError(f"objectives.{unknown[0]}: no ensemble of that name (ensembles: {', '.join(ensembles)})")
    known_probes, probes = _read_probe_cache(base / paths.probe_cache()), {}
    plan.heldout_ensembles = [name for name, ensemble in config["ensembles"].items() if ensemble.get("validation_members")]
    plan.video_ensembles = [name for name, ensemble in config["ensembles"].items() if Modality.of(ensemble["input_shape"]) is Modality.VIDEO]
    for name, ensemble in config["ensembles"].items():
        stats_record = None
        if "input_stats" in ensemble:
            from ..presets import check_input_stats
            from .quality import resolve_input_stats

            # {from: FILE} becomes the file's statistics here, so presets and the manifest read numbers
            key = f"ensembles.{name}.input_stats"
            stats, stats_record = resolve_input_stats(ensemble["input_stats"], ensemble["input_shape"], base, key, known_probes, probes)
            check_input_stats(stats, ensemble["input_shape"][0], key)
            ensemble = {**ensemble, "input_stats": stats}
        specs = check_ensemble(name, ensemble, base, produced, stats_record)
        probe_members(name, ensemble, base, known_probes, probes, stats_record)
        for group, spec in specs.items():
            plan.files_of_group[(name, group)] = group_files(spec)
            pending.append((paths.member_spec(name, group), spec))
        if ensemble.get("ground_truth"):
            plan.ground_truths[name] = {"kind": ensemble["ground_truth"]["kind"], "file": ensemble["ground_truth"]["file"]}
        objective = config["objectives"].get(name, {})
        rows = table_rows(objective, int(ensemble["outputs"]), base, f"objectives.{name}")
        sources = source_hashes(objective)  # a custom objective's module: editing it reruns these shards
        n_shards = math.ceil(len(rows) / shard_size)
        plan.shard_counts[name] = n_shards
        pending.append((paths.objective_spec(name), {"ensemble": name, "rows": rows}))
        for index in range(n_shards):
            chunk = rows[index * shard_size : (index + 1) * shard_size]
            pending.append((paths.shard_spec(name, index), {"ensemble": name, "index": index, "rows": chunk, "sources": sources}))
        plan.methods_of_ensemble[name] = [m for m in plan.methods if name in methods_config[m].get("ensembles", ensembles)]
        method_specs = {method: _method_spec(method, methods_config[method], name, ensemble, plan.grids.get(method)) for method in plan.methods_of_ensemble[name]}
        refuse_identical_grid_members(method_specs, name)
        pending.extend((paths.method_spec(name, method), spec) for method, spec in method_specs.items())
    plan.shards = plan.planned_shards()

    plan.contents = {path: sha256_text(canonical_json(payload)) for path, payload in pending}
    checksum_cache = _read_probe_cache(base / paths.file_checksums())
    checksums: dict[str, list[Any]] = {}
    for files in [*plan.files_of_group.values(), *map(plan.ground_truth_files, plan.ground_truths)]:
        for file in files:
            if file not in produced and (base / file).exists():  # a rule's outputs have honest mtimes
                plan.contents[file] = file_checksum(base, file, checksum_cache, checksums)
    pending.append((paths.probe_cache(), probes))
    pending.append((paths.file_checksums(), checksums))
    if write and dry_run:
        for path, payload in pending:
            if not (base / path).exists() and path not in (paths.probe_cache(), paths.file_checksums()):
                write_json_if_changed(base / path, payload)
        if not (base / paths.plan_record()).exists():
            # spec files that exist were left as they are, maybe not as planned: no stamps, planned again
            _write_plan_record(config, base, plan, inputs=None)
    elif write:
        for path, payload in pending:
            write_json_if_changed(base / path, payload)
        inputs = stamps.planning_inputs(config, base, [path for path, _ in pending], produced, pythonpath, environment)
        _write_plan_record(config, base, plan, inputs)
    return plan


def file_checksum(base: Path, file: str, known: dict[str, Any], found: dict[str, list[Any]]) -> str:
    """sha256 of a member file, hashed again only when its size, mtime, ctime or inode changed
    since ``known`` recorded it (``cp -p`` keeps the mtime, not the ctime); recorded in ``found``."""
    info = (base / file).stat()
    stamp = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
    entry = known.get(file)
    digest = entry[4] if isinstance(entry, list) and len(entry) == 5 and entry[:4] == stamp else sha256_file(base / file)
    found[file] = [*stamp, digest]
    return digest


# --------------------------------------------------------------------------- the recorded plan


def _config_key(config: dict, base: Path) -> str | None:
    """What a record is valid for: the (validated) config, and the folder it is planned in."""
    try:
        return sha256_text(canonical_json({"config": config, "base": str(base.resolve())}))
    except MEIConfigError:  # values that are not plain JSON: no record, jobs plan for themselves
        return None


def _write_plan_record(config: dict, base: Path, plan: Plan, inputs: dict[str, Any] | None) -> None:
    """``inputs``: the stamps of what the plan read and wrote (:func:`stamps.planning_inputs`), by which
    the next main process knows the plan still holds (``None``: it plans again)."""
    key = _config_key(config, base)
    planned = plan.to_record()
    record = {"config": key, "plan": planned, "plan_sha256": sha256_text(canonical_json(planned)), "inputs": inputs}
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    path = base / plan.paths.plan_record()
    if key is None or json.loads(text) != record:  # a value JSON would not give back as it is
        path.unlink(missing_ok=True)
        return
    if path.exists() and path.read_text() == text:
        return
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def read_plan_record(config: dict, base: str | Path = ".", inputs_unchanged: bool = False) -> Plan | None:
    """The plan the main process recorded for this config in this folder (``None`` if none). With
    ``inputs_unchanged``: only if nothing it was made from has changed since (:func:`stamps.unchanged`)."""
    base = Path(base)
    paths = Paths(config.get("results", "results"), config.get("resources", "resources"))
    try:
        record = json.loads((base / paths.plan_record()).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("config") is None or record["config"] != _config_key(config, base):
        return None
    if inputs_unchanged and not stamps.unchanged(record.get("inputs")):
        return None
    try:
        if sha256_text(canonical_json(record["plan"])) != record["plan_sha256"]:
            # the plan is not the one recorded for this config (edited by hand): never trusted
            print(f"mei_core: {base / paths.plan_record()} was changed after it was recorded (its plan does not match "
                  "plan_sha256): ignored, the config is planned again", file=sys.stderr)
            return None
        return Plan.from_record(record["plan"])
    except (KeyError, TypeError, ValueError):  # a record of another version of this module
        return None


def _method_spec(name: str, entry: dict[str, Any], ensemble_name: str, ensemble: dict[str, Any], grid: dict[str, Any] | None) -> dict[str, Any]:
    """What a (method, ensemble) pair's jobs run: the merged config and its hash."""
    from ..config import check_numbers_are_numbers, import_object
    from ..method import validate_method
    from .method_entries import method_config, method_fn_of

    method_fn = method_fn_of(name, entry, DEFAULT_METHOD_FN)
    config = method_config(name, entry, ensemble, ensemble_name)
    key = f"methods.{name}.config" if "preset" not in entry else f"methods.{name} (preset {entry['preset']!r} on ensemble {ensemble_name!r})"
    check_numbers_are_numbers(config, key)
    # a method function with its own config keys carries its own check (e.g. mei_core.cmaes.cma_es)
    check = getattr(import_object(method_fn, f"methods.{name}.method_fn"), "validate_config", None)
    if check is not None:
        # a check that takes the inputs' shape draws and checks the start (e.g. a transparency MEI's channels)
        if "shape" in inspect.signature(check).parameters:
            check(config, key, shape=ensemble["input_shape"])
        else:
            check(config, key)
    else:
        validate_method(config, key, ensemble["input_shape"])
    sources = source_hashes({"method_fn": method_fn, "config": config})
    return {"name": name, "ensemble": ensemble_name, "method_fn": method_fn, "config": config, "sources": sources,
            "method_hash": method_hash(method_fn, config, sources), "grid": grid}


def _read_probe_cache(path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: probe again
        return {}
    return cache if isinstance(cache, dict) else {}


__all__ = ["MEMBER_GROUPS", "Plan", "Shard", "prepare", "put_interpreter_on_path", "read_plan_record"]


# ------------------------------------------------------------------------------ forced recomputation

#: what the main Snakemake process was told to force (its jobs, local or a SLURM job's own Snakemake,
#: inherit the environment and read it)
FORCED_VARIABLE = "MEI_CORE_FORCED"


class RecomputeFlag:
    """``--recompute`` for a forced job, else nothing. Not a plain value, so Snakemake's params rerun
    trigger ignores it: a forced run does not make the next plain run rerun."""

    def __init__(self, forced: bool):
        self.forced = forced

    def __str__(self) -> str:
        return "--recompute" if self.forced else ""


def recompute_flag(workflow: Any, rule_name: str) -> Callable[..., RecomputeFlag]:
    """A params function of rule ``rule_name``: recompute every file of a job that ``--forcerun``
    (the rule or one of its outputs) or ``-F`` names, instead of keeping those that hold their result.
    Snakemake tells no job why it runs; the main process knows its command line once the DAG is
    built (params are evaluated then) and puts it in the environment."""

    def flag(wildcards: Any, output: Any) -> RecomputeFlag:
        if workflow.is_main_process:
            settings = workflow.dag_settings
            os.environ[FORCED_VARIABLE] = json.dumps({"all": bool(settings.forceall), "named": sorted(map(str, settings.forcerun or ()))})
        forced = json.loads(os.environ.get(FORCED_VARIABLE, "{}"))
        named = set(forced.get("named", []))
        return RecomputeFlag(forced.get("all", False) or rule_name in named or not named.isdisjoint(map(str, output)))

    return flag
