"""Kind ``targets``: drive chosen neurons of a connectome to target activations (inputs ``B×S×L``,
outputs ``B×N×L``: batch × neurons × layers), one set of targets per item."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..config import check_arguments, import_object
from ..errors import MEIConfigError
from ..stored import stored_slabs
from ..hashing import canonical_json
from ..models.connectome import TargetActivation, activation_table, target_loss
from .base import Objective, move_model
from .kinds import Items, ObjectiveKind, ValidationContext, integer_column, parse_items


#: an activation regulariser: activations ``B×N×L`` → one penalty per row (``B``)
ActivationRegularizer = Callable[[Tensor], Tensor]


def activation_regularizer(spec: ActivationRegularizer | Mapping[str, Any], key: str) -> ActivationRegularizer:
    """A callable from ``{path, kwargs, weight}``: ``path`` imports a function ``fn(activations,
    **kwargs) -> B`` or a class whose instance (built with ``kwargs``) is one; ``weight`` (default 1)
    multiplies it. A callable is taken as it is."""
    if callable(spec):
        return spec
    if not isinstance(spec, Mapping) or "path" not in spec:
        raise MEIConfigError(f"{key}: expected {{path: module.function, kwargs: {{...}}, weight: 1.0}}, got {spec!r}")
    unknown = sorted(set(spec) - {"path", "kwargs", "weight"})
    if unknown:
        raise MEIConfigError(f"{key}.{unknown[0]}: unknown key (an activation regulariser has path, kwargs, weight)")
    target = import_object(spec["path"], f"{key}.path")
    kwargs = dict(spec.get("kwargs") or {})
    weight = float(spec.get("weight", 1.0))
    if inspect.isclass(target):
        check_arguments(target, kwargs, f"{key}.kwargs")
        function = target(**kwargs)
    elif callable(target):
        check_arguments(target, kwargs, f"{key}.kwargs", args=(None,))
        function = functools.partial(target, **kwargs) if kwargs else target
    else:
        raise MEIConfigError(f"{key}.path: {spec['path']!r} is not callable")
    return function if weight == 1.0 else _Weighted(function, weight)


class _Weighted:
    def __init__(self, function: ActivationRegularizer, weight: float):
        self.function, self.weight = function, weight

    def __call__(self, activations: Tensor) -> Tensor:
        return self.weight * self.function(activations)


class TargetActivationObjective(Objective):
    """Item ``k`` has its own ``(layer, neuron, value)`` targets; a row's value is

        −( target_loss + l1·mean|a| + l2·mean a² + Σ_r r(a) )

    with ``target_loss = Σ (a − value)²`` over the item's targets (``reduction: mean``: their mean, as
    connectome_interpreter), the means over all the row's activations ``a`` (``N×L``), and ``r`` the
    ``activation_regularizers`` (each maps activations ``B×N×L`` to ``B`` penalties; callables or
    ``{path, kwargs, weight}`` specs). Maximising it matches the targets without switching the network
    on wholesale. ``last_terms`` keeps ``target_loss`` and ``activation_penalty`` (the rest) of the last
    evaluation for trackers.

    ``targets``: a list (per item) of ``(layer, neuron, value)`` lists, or connectome_interpreter's
    ``TargetActivation`` inputs: ``{layer: {neuron: value}}`` (every item the same targets), a DataFrame
    with ``layer``, ``neuron`` (or ``neuron_idx``), ``value`` and optionally ``batch`` (the item), or a
    :class:`~mei_core.models.connectome.TargetActivation`."""

    def __init__(
        self,
        model: nn.Module,
        targets: Sequence[Sequence[Sequence[float]]] | TargetActivation | pd.DataFrame | Mapping[int, Mapping[int, float]],
        l1: float = 0.0,
        l2: float = 0.0,
        activation_regularizers: Sequence[ActivationRegularizer | Mapping[str, Any]] = (),
        reduction: str = "sum",
    ):
        if isinstance(targets, (TargetActivation, pd.DataFrame, Mapping)) or hasattr(targets, "targets_df"):
            self.targets = TargetActivation.of(targets)
        else:
            if not targets or any(len(item) == 0 for item in targets):
                raise ValueError("every item needs at least one (layer, neuron, value) target")
            frame = pd.DataFrame(
                [(k, int(layer), int(neuron), float(value)) for k, item in enumerate(targets) for layer, neuron, value in item],
                columns=["batch", "layer", "neuron", "value"],
            )
            self.targets = TargetActivation(frame, batch_size=len(targets))
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.model = model
        self.l1, self.l2 = float(l1), float(l2)
        self.reduction = reduction
        self.activation_regularizers = [
            activation_regularizer(spec, f"activation_regularizers[{i}]") for i, spec in enumerate(activation_regularizers)
        ]
        self.last_terms: dict[str, Tensor] = {}
        self._selected: tuple[Tensor, tuple[Tensor, ...]] | None = None

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        activations = self.model(x)  # B×N×L
        if self._selected is None or self._selected[0] is not items:  # once per batch composition
            self._selected = (items, self.targets.select(len(items), items))
        loss = target_loss(activations, *self._selected[1], reduction=self.reduction)
        flat = activations.flatten(1)
        penalty = self.l1 * flat.abs().mean(1) + self.l2 * flat.pow(2).mean(1)
        for i, regularizer in enumerate(self.activation_regularizers):
            value = regularizer(activations)
            if not isinstance(value, Tensor) or value.shape != penalty.shape:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"activation_regularizers[{i}] must return one value per row (shape {tuple(penalty.shape)}), got {shape}")
            penalty = penalty + value
        self.last_terms = {"target_loss": loss.detach(), "activation_penalty": penalty.detach()}
        return -(loss + penalty)

    def to(self, device):
        move_model(self.model, device)
        self.targets.to(device)
        self._selected = None
        return self


class TargetsKind(ObjectiveKind):
    name = "targets"
    description = "target activations per item from a CSV/Parquet of item, layer, neuron, value (connectomes)"
    extra_keys = {"targets": {
        "type": "object", "additionalProperties": False, "required": ["file"],
        "description": "{file: targets.csv} with columns item, layer, neuron, value (one row per target activation)",
        "properties": {"file": {"type": "string"}},
    }}
    required_keys = ("targets",)
    kwargs_schema = {"type": "object", "additionalProperties": False, "properties": {
        "activation_penalty": {"type": "object", "additionalProperties": False,
                               "properties": {"l1": {"type": "number", "minimum": 0}, "l2": {"type": "number", "minimum": 0}}},
        "activation_regularizers": {
            "type": "array", "description": "functions of the activations B×N×L returning B penalties: [{path, kwargs, weight}]",
            "items": {"type": "object", "additionalProperties": False, "required": ["path"], "properties": {
                "path": {"type": "string"}, "kwargs": {"type": "object"}, "weight": {"type": "number"},
            }},
        },
    }}
    per_item_kwargs = ("targets",)

    def table_rows(self, spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
        """One row per item of the targets file: the item's targets go into the row's kwargs;
        ``neuron_id`` is the item, ``output_unit`` its first target neuron."""
        where = f"{key}.targets.file"
        file = base / spec["targets"]["file"]
        if not file.exists():
            raise MEIConfigError(f"{where}: {spec['targets']['file']!r} not found (resolved to {str(file.resolve())!r})")
        try:
            table = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
        except Exception as error:
            raise MEIConfigError(f"{where}: cannot read {str(file)!r}: {error}") from error
        missing = {"item", "layer", "neuron", "value"} - set(table.columns)
        if missing:
            raise MEIConfigError(f"{where}: {str(file)!r} lacks column(s) {sorted(missing)}")
        for column in ("item", "layer", "neuron"):
            table[column] = integer_column(table, column, file, where)
        values = pd.to_numeric(table["value"], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise MEIConfigError(f"{where}: {str(file)!r} row {row + 1}, column 'value': {table['value'].iloc[row]!r} is not a number")
        table["value"] = values
        bad = table[(table["neuron"] < 0) | (table["neuron"] >= outputs)]
        if len(bad):
            raise MEIConfigError(f"{where}: neuron {int(bad['neuron'].iloc[0])} out of range: the ensemble has {outputs} neurons")
        shared = dict(spec.get("kwargs") or {})
        rows = []
        for item, group in table.groupby("item", sort=True):
            targets = [[int(l), int(n), float(v)] for l, n, v in group[["layer", "neuron", "value"]].itertuples(index=False)]
            rows.append({
                "neuron_id": int(item), "output_unit": int(group["neuron"].iloc[0]), "data_key": spec.get("data_key"),
                "kind": self.name, "kwargs": canonical_json({**shared, "targets": targets}),
            })
        return rows

    def check(self, spec: Mapping[str, Any], key: str) -> None:
        for i, regularizer in enumerate((spec.get("kwargs") or {}).get("activation_regularizers") or []):
            activation_regularizer(regularizer, f"{key}.kwargs.activation_regularizers[{i}]")

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        penalty = items.options.get("activation_penalty", {})
        return TargetActivationObjective(model, [k["targets"] for k in items.item_kwargs], l1=penalty.get("l1", 0.0), l2=penalty.get("l2", 0.0),
                                         activation_regularizers=items.options.get("activation_regularizers", ()))

    def validate(self, context: ValidationContext) -> pd.DataFrame:
        """Achieved vs target activations (RMSE and worst error per MEI, with the generation and the
        held-out ensemble), and the tidy activation table of every MEI (``activations``)."""
        model = context.load_ensemble("members")
        held_out = context.load_ensemble("validation_members")
        groups = getattr(model.members[0], "neuron_groups", None)
        _, items = parse_items(context.objectives)
        targets = {int(n): k["targets"] for n, k in zip(items.frame["neuron_id"], items.item_kwargs)}
        table = context.table
        columns = {name: np.full(len(table), np.nan, dtype=np.float32) for name in ("target_rmse", "max_abs_target_error", "heldout_target_rmse")}
        tidy = []
        for slab in stored_slabs(context.meis, table):
            meis = torch.from_numpy(slab.meis)
            with torch.no_grad():
                reached = model(meis).numpy()
                held = held_out(meis).numpy() if held_out is not None else None
            mei_indices = slab.rows["mei_index"].fillna(0).astype(int) if "mei_index" in slab.rows else [0] * len(slab.rows)
            for position, (row, item, mei_index) in enumerate(zip(slab.rows.index, slab.rows["neuron_id"], mei_indices)):
                layer, neuron, value = (np.asarray(v) for v in zip(*targets[int(item)]))
                errors = reached[position][neuron, layer] - value
                columns["target_rmse"][row] = np.sqrt(np.mean(errors**2))
                columns["max_abs_target_error"][row] = np.abs(errors).max()
                if held is not None:
                    columns["heldout_target_rmse"][row] = np.sqrt(np.mean((held[position][neuron, layer] - value) ** 2))
                frame = activation_table(reached[position], groups).drop(columns="batch")
                tidy.append(frame.assign(ensemble=context.manifest["name"], method=slab.method, seed=slab.seed, item=int(item), mei_index=int(mei_index)))
        for name, values in columns.items():
            table[name] = values
        if tidy:
            context.extra_tables["activations"] = pd.concat(tidy, ignore_index=True)
        return table

