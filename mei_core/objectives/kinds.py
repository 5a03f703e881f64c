"""Objective kinds: what an ``objectives.<ensemble>`` entry of the config means.

A kind (one :class:`ObjectiveKind` subclass, in one module of this package) declares everything the
pipeline needs to know about it: the config keys and kwargs it accepts (a JSON-schema fragment), how it
turns its config into objective-table rows (one row per item), how it builds the objective vectorised
over the items of a batch, and (optionally) how its MEIs are validated. The registry finds kinds by
importing every module of this package once, so adding a kind is adding one module.

The objective table has one row per item: ``neuron_id`` (the item's id in results), ``output_unit``
(the model output it is about), ``data_key`` (the recording session, or null), ``kind`` and ``kwargs``
(canonical JSON: the entry's kwargs plus per-item values such as target activations). Kwargs are parsed
here once into the kind's typed options.
"""

from __future__ import annotations

import json
import math
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import numpy as np
import pandas as pd
from torch import nn

from ..errors import MEIConfigError
from ..hashing import canonical_json
from ..registry import Registry
from .base import ByDataKey, Objective

COLUMNS = ["neuron_id", "output_unit", "data_key", "kind", "kwargs"]
TABLE_DTYPES = {"neuron_id": "int64", "output_unit": "int64", "data_key": "string", "kind": "string", "kwargs": "string"}
#: keys every kind accepts in an ``objectives.<ensemble>`` entry
COMMON_KEYS = ("kind", "neurons", "data_key", "kwargs")


@dataclass
class Items:
    """The objective-table rows of one batch's items (row ``k`` = item ``k``), parsed once."""

    frame: pd.DataFrame
    options: Any
    item_kwargs: list[dict[str, Any]]

    @property
    def units(self) -> list[int]:
        return [int(u) for u in self.frame["output_unit"]]

    @property
    def data_keys(self) -> list[Hashable]:
        return [None if _is_missing(k) else str(k) for k in self.frame["data_key"]]

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class ValidationContext:
    """What a kind's validation may read: the manifest, the ensemble's MEIs (an xarray Dataset), its
    objective table and the per-MEI table it adds columns to; ``load_ensemble(group)`` loads members."""

    manifest: dict[str, Any]
    meis: Any
    objectives: pd.DataFrame
    table: pd.DataFrame
    load_ensemble: Any
    extra_tables: dict[str, pd.DataFrame] = field(default_factory=dict)


class ObjectiveKind(ABC):
    """One objective kind. Subclasses set ``name`` (the config spelling) and implement ``objective``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: config keys beside :data:`COMMON_KEYS` (e.g. ``targets``, ``builder``), each with its JSON schema
    extra_keys: ClassVar[dict[str, dict]] = {}
    #: keys that must be present
    required_keys: ClassVar[tuple[str, ...]] = ()
    #: JSON schema of ``kwargs``
    kwargs_schema: ClassVar[dict] = {"type": "object", "additionalProperties": False, "properties": {}}
    #: False when the kind routes ``data_key`` itself (one objective over all keys)
    one_objective_per_data_key: ClassVar[bool] = True
    #: kwargs stored per item (different in every row, e.g. target activations), not parsed as options
    per_item_kwargs: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # defining a kind registers it: a class that sets its own ``name`` (bases such as the video
        # kinds' shared one set none)
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            OBJECTIVE_KINDS.add(cls.name, cls, cls.description)

    def options(self, kwargs: Mapping[str, Any], key: str) -> Any:
        """The typed, validated kwargs (same for every item). Default: the mapping itself."""
        return dict(kwargs)

    def check(self, spec: Mapping[str, Any], key: str) -> None:
        """Checks beyond the schema that can be done before any job (e.g. imports)."""

    def table_rows(self, spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
        """One row per item; the default: one item per neuron of ``neurons``."""
        kwargs = canonical_json(spec.get("kwargs") or {})
        return [
            {"neuron_id": n, "output_unit": u, "data_key": k, "kind": self.name, "kwargs": kwargs}
            for n, u, k in neuron_rows(spec, outputs, base, key)
        ]

    @abstractmethod
    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        """The objective over ``items`` (indexed by item) calling the model with ``data_key``."""

    def validate(self, context: ValidationContext) -> pd.DataFrame:
        """Columns this kind adds to the per-MEI validation table (and ``context.extra_tables``)."""
        return context.table


# ----------------------------------------------------------------------------------- the registry

#: every objective kind by its config spelling; this package's modules are imported on first lookup
#: (adding a kind is adding one module), and a kind defined elsewhere registers when its module is imported
OBJECTIVE_KINDS: Registry[type[ObjectiveKind]] = Registry(
    "objective kind",
    modules=tuple(f"{__package__}.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in ("kinds", "base")),
    known_label="known kinds",
)


def kind_names() -> list[str]:
    return sorted(OBJECTIVE_KINDS.names())


def get_kind(name: str, key: str = "kind") -> ObjectiveKind:
    return OBJECTIVE_KINDS.instance(name, key)


# ------------------------------------------------------------------------------ config → table rows


def check_spec(spec: Mapping[str, Any], key: str) -> ObjectiveKind:
    """Check one ``objectives.<ensemble>`` entry against its kind's keys and kwargs schema."""
    if not isinstance(spec, Mapping):
        raise MEIConfigError(f"{key}: expected a mapping, got {type(spec).__name__}")
    kind = get_kind(spec.get("kind", "unit"), f"{key}.kind")
    allowed = set(COMMON_KEYS) | set(kind.extra_keys)
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise MEIConfigError(f"{key}.{unknown[0]}: not a key of objective kind {kind.name!r} (it takes {', '.join(sorted(allowed))})")
    for required in kind.required_keys:
        if required not in spec:
            raise MEIConfigError(f"{key}.{required}: required for objective kind {kind.name!r}")
    for name, schema in kind.extra_keys.items():
        if name in spec:
            _check_schema(spec[name], schema, f"{key}.{name}", kind)
    _check_schema(spec.get("kwargs") or {}, kind.kwargs_schema, f"{key}.kwargs", kind)
    kind.options(spec.get("kwargs") or {}, f"{key}.kwargs")
    kind.check(spec, key)
    return kind


def _check_schema(value: Any, schema: dict, key: str, kind: ObjectiveKind) -> None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return
    where = key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        raise MEIConfigError(f"{where}.{missing[0]}: required for kind {kind.name!r}")
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        raise MEIConfigError(f"{where}.{extra[0]}: unknown key (known: {known})")
    raise MEIConfigError(f"{where}: {error.message}")


def table_rows(spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
    """The objective-table rows of one ``objectives.<ensemble>`` entry (checked first)."""
    kind = check_spec(spec, key)
    rows = kind.table_rows(spec, outputs, base, key)
    if not rows:
        raise MEIConfigError(f"{key}: no items (an empty neuron list or file)")
    return rows


def neuron_rows(spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[tuple[int, int, str | None]]:
    """``(neuron_id, output_unit, data_key)`` per item from ``neurons``: ``all``, a list of units, or
    ``{file: mapping.csv|.parquet}`` with columns ``neuron_id, output_unit[, data_key]``."""
    neurons = spec.get("neurons", "all")
    data_key = spec.get("data_key")
    if neurons == "all":
        return [(u, u, data_key) for u in range(outputs)]
    if isinstance(neurons, list):
        _check_units(neurons, outputs, f"{key}.neurons")
        return [(int(u), int(u), data_key) for u in neurons]
    file = base / neurons["file"]
    where = f"{key}.neurons.file"
    if not file.exists():
        raise MEIConfigError(f"{where}: {neurons['file']!r} not found (resolved to {str(file.resolve())!r})")
    try:
        mapping = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    except Exception as error:  # any reader error: name the file
        raise MEIConfigError(f"{where}: cannot read {str(file)!r}: {error}") from error
    missing = {"neuron_id", "output_unit"} - set(mapping.columns)
    if missing:
        raise MEIConfigError(f"{where}: {str(file)!r} lacks column(s) {sorted(missing)}; needs neuron_id, output_unit[, data_key]")
    ids = integer_column(mapping, "neuron_id", file, where)
    units = integer_column(mapping, "output_unit", file, where)
    duplicated = pd.Series(ids).duplicated()
    if duplicated.any():
        raise MEIConfigError(f"{where}: neuron_id {ids[duplicated.to_numpy()][0]} appears twice in {str(file)!r}")
    _check_units(units.tolist(), outputs, f"{where} ({str(file)!r})")
    keys = mapping["data_key"].tolist() if "data_key" in mapping else [None] * len(mapping)
    return [(int(n), int(u), data_key if _is_missing(k) else str(k)) for n, u, k in zip(ids, units, keys)]


def integer_column(frame: pd.DataFrame, column: str, file: Path, key: str) -> np.ndarray:
    """A column of whole numbers that fit in 64 bits; a cell that is not one is named by file, row
    (1-based, after the header) and column instead of being truncated, rounded or wrapped around
    (99999999999999999999 would become −2⁶³, 2⁵³ + 1 read as a float would become 2⁵³)."""
    cells = frame[column]
    if pd.api.types.is_signed_integer_dtype(cells.dtype):  # exact already
        return cells.to_numpy().astype(np.int64)
    exact = [_exact_integer(cell) for cell in cells.tolist()]  # at plan time, once per table
    for row, value in enumerate(exact):
        if value is None or not _INT64_MIN <= value <= _INT64_MAX:
            cell = cells.iloc[row]
            cell = cell.item() if hasattr(cell, "item") else cell
            problem = "is not an integer" if value is None else "does not fit a 64-bit integer (−2⁶³…2⁶³−1)"
            raise MEIConfigError(f"{key}: {str(file)!r} row {row + 1}, column {column!r}: {cell!r} {problem}")
    return np.array(exact, dtype=np.int64)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _exact_integer(cell: Any) -> int | None:
    """The whole number a table cell holds exactly (``None`` if it holds none): integers and their
    text as they are, floats only where every whole number is exact (|x| ≤ 2⁵³)."""
    if isinstance(cell, (bool, np.bool_)):
        return None
    if isinstance(cell, (int, np.integer)):
        return int(cell)
    if isinstance(cell, (float, np.floating)):
        return int(cell) if math.isfinite(cell) and float(cell).is_integer() and abs(cell) <= 2**53 else None
    if isinstance(cell, str):
        text = cell.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return _exact_integer(float(text))
            except ValueError:
                return None
    return None


def _check_units(units: Sequence[int], outputs: int, key: str) -> None:
    bad = [u for u in units if u < 0 or u >= outputs]
    if bad:
        raise MEIConfigError(f"{key}: output unit {bad[0]} out of range: the ensemble has {outputs} outputs (0…{outputs - 1})")


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# ------------------------------------------------------------------------------------- table → objective


def as_table(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=COLUMNS)
    return frame[COLUMNS].astype(TABLE_DTYPES).reset_index(drop=True)


def parse_items(rows: Sequence[Mapping[str, Any]] | pd.DataFrame, key: str = "objectives") -> tuple[ObjectiveKind, Items]:
    """The kind of a table's rows (one kind per table) and its items with kwargs parsed once."""
    frame = as_table(rows)
    kinds = sorted(set(frame["kind"]))
    if len(kinds) != 1:
        raise MEIConfigError(f"{key}: one objective table mixes kinds {kinds}")
    kind = get_kind(kinds[0], f"{key}.kind")
    item_kwargs = [json.loads(k) if isinstance(k, str) and k else {} for k in frame["kwargs"]]
    shared = {k: v for k, v in (item_kwargs[0] if item_kwargs else {}).items() if k not in kind.per_item_kwargs}
    _check_schema(shared, kind.kwargs_schema, f"{key}.kwargs", kind)
    return kind, Items(frame, kind.options(shared, f"{key}.kwargs"), item_kwargs)


def build_objective(model: nn.Module, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> Objective:
    """The objective over a table's items (item ``k`` = row ``k``). Items of several ``data_key``s
    are evaluated each with its own key (one forward per key present in a batch)."""
    kind, items = parse_items(rows)
    keys = items.data_keys
    distinct = list(dict.fromkeys(keys))
    if len(distinct) <= 1 or not kind.one_objective_per_data_key:
        return kind.objective(model, items, distinct[0] if distinct else None)
    return ByDataKey({k: kind.objective(model, items, k) for k in distinct}, keys)


def validate_items(context: ValidationContext) -> pd.DataFrame:
    """The kind's own validation columns for an ensemble's MEIs."""
    if not len(context.objectives):
        return context.table
    kind, _ = parse_items(context.objectives)
    return kind.validate(context)


def options_of(objectives: pd.DataFrame) -> Any:
    """The typed kwargs of an objective table (e.g. for validation that needs the response window)."""
    return parse_items(objectives)[1].options


def write_objective_table(spec_path: str, out_path: str) -> pd.DataFrame:
    """The Parquet objective table of one ensemble (rows checked when the plan wrote its spec)."""
    from ..files import atomic_path, read_json

    table = as_table(read_json(spec_path)["rows"])
    with atomic_path(out_path, suffix=".parquet") as temporary:
        table.to_parquet(temporary, index=False)
    return table
