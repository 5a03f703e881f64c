"""Kinds ``layer`` and ``combination``: lucent's layer objectives and its objective algebra in the config.

A *term* is one layer objective (``type``: ``channel``, ``neuron``, ``direction``,
``direction_neuron``, or ``unit``: an output unit, the neuron of the members' output). A
*combination* is ``{op: sum|product, terms: [{weight, objective: term or combination}, ...]}``.

Items come from ``items`` (a list of mappings, or ``{file: items.csv|.parquet}``): one item per
entry, with an optional ``neuron_id`` (default: the entry's position), ``data_key`` and ``unit``, and
the item's own term values. In kind ``layer`` an item's fields fill the term's fields of the same
name; in kind ``combination`` a term field reads an item's field with ``{item: name}``. Without
``items``, ``neurons`` gives the items as for kind ``unit`` (each with its ``unit``). Directions are
a list of numbers or ``{file: direction.npy}`` (a CSV cell: the ``.npy`` path), read at planning, so
a job needs nothing but its rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ..errors import MEIConfigError
from ..hashing import canonical_json
from .base import Product, WeightedSum
from .base import Objective, row_forward_kwargs
from .kinds import Items, ObjectiveKind, neuron_rows
from .layers import SIMILARITIES, ChannelObjective, DirectionNeuronObjective, DirectionObjective, NeuronObjective

#: the fields of every term type (beside ``type``) and those it needs
TERM_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "channel": (("layer", "channel"), ("layer", "channel")),
    "neuron": (("layer", "channel", "x", "y"), ("layer", "channel")),
    "direction": (("layer", "direction", "similarity"), ("layer", "direction")),
    "direction_neuron": (("layer", "direction", "x", "y", "similarity"), ("layer", "direction")),
    "unit": (("unit",), ()),
}
#: item fields that are not term values
ITEM_KEYS = ("neuron_id", "data_key")

_FROM_ITEM = {"type": "object", "additionalProperties": False, "required": ["item"],
              "properties": {"item": {"type": "string", "description": "the item field this value is read from"}}}
_INDEX = {"type": "integer", "minimum": 0}
_VALUES = {
    "layer": {"type": "string", "description": "a module name of the members (named_modules)"},
    "channel": {**_INDEX, "description": "channel of a B×C×H×W map, or index of a B×N layer"},
    "unit": {**_INDEX, "description": "output unit (default: the item's unit)"},
    "x": {**_INDEX, "description": "column of the map (default: the centre, W // 2)"},
    "y": {**_INDEX, "description": "row of the map (default: the centre, H // 2)"},
    "direction": {"description": "a vector over the layer's channels, or {file: direction.npy}", "oneOf": [
        {"type": "array", "minItems": 1, "items": {"type": "number"}},
        {"type": "object", "additionalProperties": False, "required": ["file"], "properties": {"file": {"type": "string"}}},
        {"type": "string", "description": "a .npy path"},
    ]},
    "similarity": {"enum": list(SIMILARITIES), "description": "cosine (lucent) or dot (lucid); default cosine"},
}


def _term_schema(from_item: bool) -> dict:
    values = {name: ({"anyOf": [schema, _FROM_ITEM]} if from_item else schema) for name, schema in _VALUES.items()}
    return {"type": "object", "additionalProperties": False, "required": ["type"],
            "properties": {"type": {"enum": list(TERM_FIELDS)}, **values}}


#: a term of kind ``layer`` (fields may come from the items instead)
LAYER_SCHEMA = {**_term_schema(False), "required": []}
#: a combination (terms nested), its term fields possibly ``{item: field}``
COMBINATION_SCHEMA = {
    "$defs": {
        "term": _term_schema(True),
        "combination": {"type": "object", "additionalProperties": False, "required": ["terms"], "properties": {
            "op": {"enum": ["sum", "product"], "description": "sum (default): Σ weight·term; product: Π weight·term"},
            "terms": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["objective"], "properties": {
                    "weight": {"type": "number", "description": "default 1"},
                    "objective": {"if": {"type": "object", "required": ["terms"]},
                                  "then": {"$ref": "#/$defs/combination"}, "else": {"$ref": "#/$defs/term"}},
                }}},
        }},
    },
    "$ref": "#/$defs/combination",
}
_ITEMS_SCHEMA = {
    "description": "one item per entry, with its own term values: a list of mappings or {file: items.csv|.parquet}",
    "oneOf": [
        {"type": "array", "minItems": 1, "items": {"type": "object"}},
        {"type": "object", "additionalProperties": False, "required": ["file"], "properties": {"file": {"type": "string"}}},
    ],
}


# ------------------------------------------------------------------------------------ config → rows


def item_fields(spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
    """Every item's fields (``neuron_id``, ``data_key`` and term values) from ``items`` or ``neurons``."""
    if "items" not in spec:
        return [{"neuron_id": n, "data_key": k, "unit": u} for n, u, k in neuron_rows(spec, outputs, base, key)]
    if "neurons" in spec:
        raise MEIConfigError(f"{key}.neurons: give either neurons or items, not both")
    items = spec["items"]
    where = f"{key}.items"
    if isinstance(items, Mapping):
        where = f"{key}.items.file"
        file = base / items["file"]
        if not file.exists():
            raise MEIConfigError(f"{where}: {items['file']!r} not found (resolved to {str(file.resolve())!r})")
        try:
            # layer names stay text ("0" in an nn.Sequential), whatever they look like
            frame = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file, dtype={"layer": str, "data_key": str})
        except Exception as error:  # any reader error: name the file
            raise MEIConfigError(f"{where}: cannot read {str(file)!r}: {error}") from error
        items = [{k: _cell(k, v) for k, v in row.items() if not _missing(v)} for row in frame.to_dict("records")]
    fields = []
    for position, item in enumerate(items):
        item = {name: _direction(value, base, f"{where}[{position}].{name}") if name == "direction" else value for name, value in item.items()}
        item.setdefault("neuron_id", position)
        if not isinstance(item["neuron_id"], int) or isinstance(item["neuron_id"], bool):
            raise MEIConfigError(f"{where}[{position}].neuron_id: {item['neuron_id']!r} is not an integer")
        item.setdefault("data_key", spec.get("data_key"))
        if "unit" in item:
            _check_index(item["unit"], f"{where}[{position}].unit")
            if item["unit"] >= outputs:
                raise MEIConfigError(f"{where}[{position}].unit: output unit {item['unit']} out of range: the ensemble has {outputs} outputs (0…{outputs - 1})")
        fields.append(item)
    ids = [item["neuron_id"] for item in fields]
    if len(set(ids)) != len(ids):
        raise MEIConfigError(f"{where}: neuron_id {next(i for i in ids if ids.count(i) > 1)} appears twice")
    return fields


#: item fields that are whole numbers (a column with blanks reads as floats)
INTEGER_FIELDS = ("neuron_id", "unit", "channel", "x", "y")


def _cell(name: str, value: Any) -> Any:
    """A table cell as a plain value: numpy scalars as Python's, whole floats of integer fields as ints."""
    value = value.item() if hasattr(value, "item") else value
    if name in INTEGER_FIELDS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _direction(value: Any, base: Path, key: str) -> Any:
    """A direction as a list of numbers (``{file: x.npy}`` or a ``.npy`` path read here)."""
    if isinstance(value, Mapping) and set(value) == {"file"} or isinstance(value, str):
        name = value if isinstance(value, str) else value["file"]
        file = base / str(name)
        if not file.exists():
            raise MEIConfigError(f"{key}: {name!r} not found (resolved to {str(file.resolve())!r})")
        try:
            array = np.load(file, allow_pickle=False)
        except Exception as error:
            raise MEIConfigError(f"{key}: cannot read {str(file)!r} as .npy: {error}") from error
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise MEIConfigError(f"{key}: {str(file)!r} must hold one finite vector over the layer's channels, got shape {array.shape} ({array.dtype})")
        return [float(v) for v in array]
    return value


def _check_index(value: Any, key: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MEIConfigError(f"{key}: {value!r} is not a non-negative integer")


def _resolve_files(node: Any, base: Path, key: str) -> Any:
    """The spec with every ``direction: {file: ...}`` read into numbers."""
    if isinstance(node, Mapping):
        return {name: _direction(value, base, f"{key}.{name}") if name == "direction" else _resolve_files(value, base, f"{key}.{name}")
                for name, value in node.items()}
    if isinstance(node, list):
        return [_resolve_files(value, base, f"{key}[{i}]") for i, value in enumerate(node)]
    return node


class _ItemsKind(ObjectiveKind):
    """Items from ``items`` (or ``neurons``); every row carries its item's fields in ``kwargs.item``."""

    extra_keys = {"items": _ITEMS_SCHEMA}
    per_item_kwargs = ("item",)

    def table_rows(self, spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
        items = item_fields(spec, outputs, base, key)
        shared = _resolve_files(spec.get("kwargs") or {}, base, f"{key}.kwargs")
        self.build(None, shared, [{k: v for k, v in item.items() if k not in ITEM_KEYS} for item in items], f"{key}.kwargs", key)
        rows = []
        for item in items:
            values = {k: v for k, v in item.items() if k not in ITEM_KEYS}
            unit = values.get("unit", values.get("channel", -1))
            rows.append({"neuron_id": int(item["neuron_id"]), "output_unit": int(unit) if isinstance(unit, int) else -1,
                         "data_key": item["data_key"], "kind": self.name, "kwargs": canonical_json({**shared, "item": values})})
        return rows

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        values = [dict(k.get("item") or {}) for k in items.item_kwargs]
        for value, unit in zip(values, items.units):
            value.setdefault("unit", unit)
        return self.build(model, items.options, values, "objectives.kwargs", "objectives", row_forward_kwargs(data_key))

    def build(self, model: nn.Module | None, shared: Mapping[str, Any], items: list[dict[str, Any]], key: str, spec_key: str,
              forward_kwargs: Mapping[str, Any] | None = None) -> Objective | None:
        """The objective over ``items`` (``model`` None: only check the values)."""
        raise NotImplementedError


def _term(model: nn.Module | None, term: Mapping[str, Any], items: list[dict[str, Any]], key: str, items_key: str,
          forward_kwargs: Mapping[str, Any] | None, direct: bool) -> Objective | None:
    """One layer objective; per item, every field is the term's value, or the item's (``{item: name}``;
    ``direct``: the item's field of the same name, kind ``layer``)."""
    kind = term.get("type")
    if kind is None:
        raise MEIConfigError(f"{key}.type: required (one of {', '.join(TERM_FIELDS)})")
    allowed, required = TERM_FIELDS[kind]
    extra = sorted(set(term) - {"type", *allowed})
    if extra:
        raise MEIConfigError(f"{key}.{extra[0]}: not a field of a {kind} term (it takes {', '.join(allowed) or 'none'})")
    per_item: dict[str, list[Any]] = {}
    for name in allowed:
        if direct and name in term and any(name in item for item in items):
            raise MEIConfigError(f"{key}.{name}: also given per item in {items_key}; give it in one place")
        if direct and name not in term and any(name in item for item in items):
            source = {"item": name}
        else:
            source = term.get(name)
        if isinstance(source, Mapping) and "item" in source:
            missing = [i for i, item in enumerate(items) if source["item"] not in item]
            if missing and name not in ("x", "y", "similarity", "unit"):
                raise MEIConfigError(f"{items_key}[{missing[0]}].{source['item']}: missing; {key}.{name} reads it")
            per_item[name] = [item.get(source["item"]) for item in items]
        elif source is not None:
            per_item[name] = [source] * len(items)
    if kind == "unit":
        per_item.setdefault("unit", [item.get("unit") for item in items])
    for name in required:
        if name not in per_item:
            raise MEIConfigError(f"{key}.{name}: required for a {kind} term (here or per item)")
    _check_values(per_item, key, items_key)
    if model is None:
        return None
    keys = {name: f"{key}.{name}" for name in ("layer", "channel", "x", "y", "direction", "similarity")}
    common = {"n_items": len(items), "forward_kwargs": forward_kwargs, "keys": keys}
    position = {"x": per_item.get("x", [None] * len(items)), "y": per_item.get("y", [None] * len(items))}
    similarity = per_item.get("similarity", ["cosine"])[0]
    if kind == "channel":
        return ChannelObjective(model, per_item["layer"], per_item["channel"], **common)
    if kind == "neuron":
        return NeuronObjective(model, per_item["layer"], per_item["channel"], **position, **common)
    if kind == "unit":
        return NeuronObjective(model, "", per_item["unit"], **{**common, "keys": {**keys, "channel": f"{key}.unit", "layer": f"{key}.type"}})
    if kind == "direction":
        return DirectionObjective(model, per_item["layer"], per_item["direction"], similarity, **common)
    return DirectionNeuronObjective(model, per_item["layer"], per_item["direction"], similarity=similarity, **position, **common)


def _check_values(per_item: dict[str, list[Any]], key: str, items_key: str) -> None:
    for name, values in per_item.items():
        for i, value in enumerate(values):
            where = f"{key}.{name} (item {i})"
            if name in ("channel", "unit") or name in ("x", "y") and value is not None:
                _check_index(value, where)
            elif name == "layer" and not isinstance(value, str):
                raise MEIConfigError(f"{where}: {value!r} is not a layer name")
            elif name == "direction" and (not isinstance(value, list) or not value
                                          or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise MEIConfigError(f"{where}: expected a list of numbers (or {{file: direction.npy}}), got {value!r}")
    similarities = set(per_item.get("similarity", ["cosine"]))
    if len(similarities) > 1 or not similarities <= set(SIMILARITIES):
        raise MEIConfigError(f"{key}.similarity: one of {', '.join(SIMILARITIES)} for all items, got {sorted(map(str, similarities))}")


class LayerKind(_ItemsKind):
    name = "layer"
    description = "lucent's channel, neuron, direction, direction_neuron on any layer; per item its own layer, channel, position, direction"
    kwargs_schema = LAYER_SCHEMA

    def build(self, model, shared, items, key, spec_key, forward_kwargs=None):
        allowed = TERM_FIELDS.get(shared.get("type"), ((), ()))[0]
        unknown = sorted({name for item in items for name in item} - set(allowed) - {"unit"})
        if unknown and "type" in shared:
            raise MEIConfigError(f"{spec_key}.items: field {unknown[0]!r} is not a field of a {shared['type']} term "
                                 f"(items may give {', '.join(('neuron_id', 'data_key') + allowed)})")
        return _term(model, shared, items, key, f"{spec_key}.items", forward_kwargs, direct=True)


class CombinationKind(_ItemsKind):
    name = "combination"
    description = "lucent's objective algebra: weighted sums and products of layer and unit terms, nested"
    kwargs_schema = COMBINATION_SCHEMA

    def build(self, model, shared, items, key, spec_key, forward_kwargs=None):
        objective = _combination(model, shared, items, key, f"{spec_key}.items", forward_kwargs)
        used = _item_fields_read(shared)
        unused = sorted({name for item in items for name in item} - used - {"unit"})
        if unused:
            raise MEIConfigError(f"{spec_key}.items: field {unused[0]!r} is read by no term (terms read {', '.join(sorted(used)) or 'none'} with {{item: name}})")
        return objective


def _combination(model, spec, items, key, items_key, forward_kwargs) -> Objective | None:
    terms, weights = [], []
    for i, entry in enumerate(spec["terms"]):
        inner = entry["objective"]
        where = f"{key}.terms[{i}].objective"
        build = _combination if "terms" in inner else lambda m, s, it, k, ik, f: _term(m, s, it, k, ik, f, direct=False)
        terms.append(build(model, inner, items, where, items_key, forward_kwargs))
        weights.append(float(entry.get("weight", 1.0)))
    if model is None:
        return None
    if spec.get("op", "sum") == "sum":
        return WeightedSum(terms, weights)
    scale = float(np.prod(weights))
    product = Product(terms)
    return product if scale == 1.0 else WeightedSum([product], [scale])


def _item_fields_read(node: Any) -> set[str]:
    if isinstance(node, Mapping):
        if set(node) == {"item"} and isinstance(node["item"], str):
            return {node["item"]}
        return set().union(*(_item_fields_read(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_item_fields_read(v) for v in node)) if node else set()
    return set()
