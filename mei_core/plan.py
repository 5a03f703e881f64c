"""Parse-time planning of a pipeline run: validate the whole config, write the spec files whose
content defines each job, and list the shards.

Spec files are written only when their content changes, so Snakemake's mtime test reruns exactly the
jobs whose definition changed: one method's shards when that method is edited (not when its keys are
reordered), only new shards when seeds or neurons are added.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from .config import check_numbers_are_numbers, canonical_json, import_object, method_hash
from .errors import MEIConfigError
from .files import write_json_if_changed
from .ensembles import member_files
from .method import validate_method

DEFAULT_METHOD_FN = "mei_core.methods.batched_gradient_ascent"


@dataclass(frozen=True)
class Shard:
    ensemble: str
    method: str
    seed: int
    index: int


@dataclass
class Plan:
    results: str
    resources: str
    shards: list[Shard]
    ensembles: list[str]
    methods: list[str]
    seeds: list[int]
    demos: dict[str, dict[str, Any]] = field(default_factory=dict)
    shard_counts: dict[str, int] = field(default_factory=dict)
    files_of_ensemble: dict[str, list[str]] = field(default_factory=dict)
    methods_of_ensemble: dict[str, list[str]] = field(default_factory=dict)

    def pairs(self) -> list[tuple[str, str]]:
        """(ensemble, method) pairs that are computed."""
        return [(e, m) for e in self.ensembles for m in self.methods_of_ensemble[e]]

    def member_files(self, ensemble: str) -> list[str]:
        """Checkpoints, TorchScript files and ground truth an ensemble is assembled from."""
        return self.files_of_ensemble[ensemble]

    def shard_files(self, ensemble: str) -> list[str]:
        return [self.shard_file(shard) for shard in self.shards_of(ensemble)]

    # ------------------------------------------------------------- paths (one place for all of them)
    def method_spec(self, method: str) -> str:
        return f"{self.resources}/methods/{method}.json"

    def ensemble_spec(self, ensemble: str) -> str:
        return f"{self.resources}/ensembles/{ensemble}.spec.json"

    def manifest(self, ensemble: str) -> str:
        return f"{self.resources}/ensembles/{ensemble}.manifest.json"

    def objective_spec(self, ensemble: str) -> str:
        return f"{self.resources}/objectives/{ensemble}.spec.json"

    def objective_table(self, ensemble: str) -> str:
        return f"{self.resources}/objectives/{ensemble}.parquet"

    def shard_spec(self, ensemble: str, index: int) -> str:
        return f"{self.resources}/objectives/{ensemble}/shard{index}.json"

    def shard_file(self, shard: Shard) -> str:
        return f"{self.resources}/meis/{shard.ensemble}/{shard.method}/seed{shard.seed}/shard{shard.index}.npz"

    def shards_of(self, ensemble: str) -> list[Shard]:
        return [s for s in self.shards if s.ensemble == ensemble]


# ----------------------------------------------------------------------------- config loading


class _StrictLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (plain YAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise MEIConfigError(f"{key_node.start_mark.name}:{line}: duplicate key {key!r} (e.g. two methods with the same name)")
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def check_config_file(path: str | Path) -> dict:
    """Read a config file with duplicate-key detection."""
    path = Path(path)
    try:
        with open(path) as handle:
            return yaml.load(handle, Loader=_StrictLoader) or {}
    except FileNotFoundError:
        raise MEIConfigError(f"config file {str(path)!r} not found") from None
    except yaml.YAMLError as error:
        raise MEIConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None


def put_interpreter_on_path() -> None:
    """Jobs run ``python -m mei_core``: make that the interpreter running Snakemake (its venv)."""
    import os
    import sys

    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _dotted(path: Any) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def validate_config(config: dict, schema_path: str | Path) -> None:
    """JSON-schema check of the config with a message naming the key; fills schema defaults."""
    for name, method in (config.get("methods") or {}).items():
        if isinstance(method, Mapping):
            check_numbers_are_numbers(method.get("config"), f"methods.{name}.config")
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        key = _dotted(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            raise MEIConfigError(f"config key {key + '.' if error.absolute_path else ''}{extra[0]}: unknown key; known: {', '.join(sorted(error.schema.get('properties', {})))}")
        raise MEIConfigError(f"config key {key}: {error.message}")
    for key, spec in schema["properties"].items():
        if "default" in spec:
            config.setdefault(key, spec["default"])


# ----------------------------------------------------------------------------- planning


def _demo_outputs(resources: str, name: str, demo: Mapping[str, Any]) -> set[str]:
    folder = f"{resources}/demo/{name}"
    if demo.get("kind") == "connectome":
        return {f"{folder}/weights.npz", f"{folder}/network.json"}
    if demo.get("kind") == "retina":
        return {f"{folder}/retina.json"}
    members = {f"{folder}/member_{seed}.pt" for seed in demo.get("member_seeds", [1, 2, 3])}
    return members | {f"{folder}/ground_truth.json", f"{folder}/dataset.pt"}


def _objective_rows(name: str, spec: Mapping[str, Any], outputs: int, base: Path) -> list[dict[str, Any]]:
    key = f"objectives.{name}"
    neurons = spec.get("neurons", "all")
    kind = spec.get("kind", "unit")
    data_key = spec.get("data_key")
    kwargs = dict(spec.get("kwargs") or {})
    if kind == "custom":
        kwargs["builder"] = spec["builder"]
    kwargs = canonical_json(kwargs)
    if kind == "targets":
        return _target_rows(name, spec, outputs, base, kwargs)
    if neurons == "all":
        mapping = pd.DataFrame({"neuron_id": range(outputs), "output_unit": range(outputs)})
    elif isinstance(neurons, list):
        mapping = pd.DataFrame({"neuron_id": neurons, "output_unit": neurons})
    else:
        file = base / neurons["file"]
        if not file.exists():
            raise MEIConfigError(f"{key}.neurons.file: {str(file)!r} not found")
        try:
            mapping = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
        except Exception as error:  # any reader error: name the file
            raise MEIConfigError(f"{key}.neurons.file: cannot read {str(file)!r}: {error}") from error
        missing = {"neuron_id", "output_unit"} - set(mapping.columns)
        if missing:
            raise MEIConfigError(f"{key}.neurons.file: {str(file)!r} lacks column(s) {sorted(missing)}; needs neuron_id, output_unit[, data_key]")
        if mapping["neuron_id"].duplicated().any():
            duplicate = mapping.loc[mapping["neuron_id"].duplicated(), "neuron_id"].iloc[0]
            raise MEIConfigError(f"{key}.neurons.file: neuron_id {duplicate} appears twice in {str(file)!r}")
    bad = mapping[(mapping["output_unit"] < 0) | (mapping["output_unit"] >= outputs)]
    if len(bad):
        raise MEIConfigError(
            f"{key}.neurons: output unit {int(bad['output_unit'].iloc[0])} out of range: ensemble {name!r} has {outputs} outputs (0…{outputs - 1})"
        )
    rows = []
    for record in mapping.to_dict("records"):
        rows.append({
            "neuron_id": int(record["neuron_id"]),
            "output_unit": int(record["output_unit"]),
            "data_key": record.get("data_key", data_key) if not _is_missing(record.get("data_key")) else data_key,
            "kind": kind,
            "kwargs": kwargs,
        })
    return rows


def _target_rows(name: str, spec: Mapping[str, Any], outputs: int, base: Path, kwargs: str) -> list[dict[str, Any]]:
    """One objective row per item of a targets file (``item, layer, neuron, value``): the item's
    targets go into the row's kwargs; ``neuron_id`` is the item, ``output_unit`` its first target neuron."""
    key = f"objectives.{name}.targets"
    if "targets" not in spec:
        raise MEIConfigError(f"{key}: required for kind 'targets' ({{file: targets.csv}} with item, layer, neuron, value)")
    file = base / spec["targets"]["file"]
    if not file.exists():
        raise MEIConfigError(f"{key}.file: {str(file)!r} not found")
    table = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    missing = {"item", "layer", "neuron", "value"} - set(table.columns)
    if missing:
        raise MEIConfigError(f"{key}.file: {str(file)!r} lacks column(s) {sorted(missing)}")
    bad = table[(table["neuron"] < 0) | (table["neuron"] >= outputs)]
    if len(bad):
        raise MEIConfigError(f"{key}.file: neuron {int(bad['neuron'].iloc[0])} out of range: ensemble {name!r} has {outputs} neurons")
    extra = json.loads(kwargs)
    rows = []
    for item, group in table.groupby("item", sort=True):
        targets = [[int(l), int(n), float(v)] for l, n, v in group[["layer", "neuron", "value"]].itertuples(index=False)]
        rows.append({
            "neuron_id": int(item), "output_unit": int(group["neuron"].iloc[0]), "data_key": spec.get("data_key"),
            "kind": "targets", "kwargs": canonical_json({**extra, "targets": targets}),
        })
    return rows


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def prepare(config: dict, base_dir: str | Path = ".", write: bool = True) -> Plan:
    """Check everything a run needs and write the spec files. Raises MEIConfigError naming the key."""
    base = Path(base_dir)
    results, resources = config.get("results", "results"), config.get("resources", "resources")
    shard_size = int(config.get("shard_size", 64))
    seeds = [int(s) for s in config["seeds"]]
    demos = dict(config.get("demo") or {})
    produced: set[str] = set()
    for name, demo in demos.items():
        produced |= _demo_outputs(resources, name, demo)

    methods = list(config["methods"])
    for name, method in config["methods"].items():
        method_fn = method.get("method_fn", DEFAULT_METHOD_FN)
        if not callable(import_object(method_fn, f"methods.{name}.method_fn")):
            raise MEIConfigError(f"methods.{name}.method_fn: {method_fn!r} is not callable")
        validate_method(method["config"], f"methods.{name}.config")

    ensembles = list(config["ensembles"])
    for name, method in config["methods"].items():
        unknown = sorted(set(method.get("ensembles", [])) - set(ensembles))
        if unknown:
            raise MEIConfigError(f"methods.{name}.ensembles: no ensemble {unknown[0]!r} (ensembles: {', '.join(ensembles)})")
    unknown = sorted(set(config["objectives"]) - set(ensembles))
    if unknown:
        raise MEIConfigError(f"objectives.{unknown[0]}: no ensemble of that name (ensembles: {', '.join(ensembles)})")

    pending: list[tuple[Path, Any]] = []  # written only once everything is checked
    plan = Plan(results=results, resources=resources, shards=[], ensembles=ensembles, methods=methods, seeds=seeds, demos=demos)
    for name, ensemble in config["ensembles"].items():
        for group in ("members", "validation_members"):
            for i, member in enumerate(ensemble.get(group) or []):
                for field_name in ("checkpoint", "torchscript", "files"):
                    paths = member.get(field_name) or []
                    for j, path in enumerate([paths] if isinstance(paths, str) else paths):
                        where = field_name if isinstance(paths, str) else f"{field_name}[{j}]"
                        if path not in produced and not (base / path).exists():
                            raise MEIConfigError(f"ensembles.{name}.{group}[{i}].{where}: file {path!r} not found")
                if "builder" in member:
                    import_object(member["builder"], f"ensembles.{name}.{group}[{i}].builder")
        declared = {m.get("dataset_id", ensemble.get("dataset_id")) for g in ("members", "validation_members") for m in ensemble.get(g) or []}
        if len(declared) > 1:
            raise MEIConfigError(
                f"ensembles.{name}: members declare different dataset_id values {sorted(map(str, declared))}; mixing datasets is not supported"
            )
        truth = ensemble.get("ground_truth")
        plan.files_of_ensemble[name] = [
            f for g in ("members", "validation_members") for m in ensemble.get(g) or [] for f in member_files(m)
        ] + ([truth["file"]] if truth else [])
        if truth and truth["file"] not in produced and not (base / truth["file"]).exists():
            raise MEIConfigError(f"ensembles.{name}.ground_truth.file: file {truth['file']!r} not found")

        objective = config["objectives"].get(name, {})
        if objective.get("kind") == "custom":
            if "builder" not in objective:
                raise MEIConfigError(f"objectives.{name}.builder: required for kind 'custom' (import path of get_objective(model, row))")
            import_object(objective["builder"], f"objectives.{name}.builder")
        rows = _objective_rows(name, objective, int(ensemble["outputs"]), base)
        n_shards = math.ceil(len(rows) / shard_size)
        plan.shard_counts[name] = n_shards
        pending.append((base / plan.ensemble_spec(name), {"name": name, **ensemble}))
        pending.append((base / plan.objective_spec(name), {"ensemble": name, "rows": rows}))
        for index in range(n_shards):
            chunk = rows[index * shard_size : (index + 1) * shard_size]
            pending.append((base / plan.shard_spec(name, index), {"ensemble": name, "index": index, "rows": chunk}))
        applicable = [m for m in methods if name in config["methods"][m].get("ensembles", ensembles)]
        plan.methods_of_ensemble[name] = applicable
        for method in applicable:
            for seed in seeds:
                plan.shards.extend(Shard(name, method, seed, index) for index in range(n_shards))

    for name, method in config["methods"].items():
        method_fn = method.get("method_fn", DEFAULT_METHOD_FN)
        pending.append((
            base / plan.method_spec(name),
            {"name": name, "method_fn": method_fn, "config": method["config"], "method_hash": method_hash(method_fn, method["config"])},
        ))
    for name, demo in demos.items():
        pending.append((base / f"{resources}/demo/{name}/spec.json", {"name": name, **demo}))
    if write:
        for path, payload in pending:
            write_json_if_changed(path, payload)
    return plan
