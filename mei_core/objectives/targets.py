"""Kind ``targets``: drive chosen neurons of a connectome to target activations (inputs ``B×S×L``,
outputs ``B×N×L``: batch × neurons × layers), one set of targets per item."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..errors import MEIConfigError
from ..hashing import canonical_json
from ..models.connectome import TargetActivation, activation_table, target_loss
from .base import Objective, move_model
from .kinds import Items, ObjectiveKind, ValidationContext, integer_column, parse_items


class TargetActivationObjective(Objective):
    """Item ``k`` has its own ``(layer, neuron, value)`` targets; a row's value is
    ``−(Σ (a − value)² + l1·mean|a| + l2·mean a²)`` over its item's targets and all its activations,
    so maximising it matches the targets without switching the network on wholesale. ``last_terms``
    keeps the two parts of the last evaluation for trackers.

    ``targets``: a list (per item) of ``(layer, neuron, value)`` lists, or connectome_interpreter's
    ``TargetActivation`` / its DataFrame (a ``batch`` column = the item)."""

    def __init__(self, model: nn.Module, targets: Sequence[Sequence[Sequence[float]]] | TargetActivation | pd.DataFrame,
                 l1: float = 0.0, l2: float = 0.0):
        if isinstance(targets, TargetActivation):
            self.targets = targets
        elif isinstance(targets, pd.DataFrame):
            self.targets = TargetActivation(targets)
        else:
            if not targets or any(len(item) == 0 for item in targets):
                raise ValueError("every item needs at least one (layer, neuron, value) target")
            frame = pd.DataFrame(
                [(k, int(layer), int(neuron), float(value)) for k, item in enumerate(targets) for layer, neuron, value in item],
                columns=["batch", "layer", "neuron", "value"],
            )
            self.targets = TargetActivation(frame, batch_size=len(targets))
        self.model = model
        self.l1, self.l2 = float(l1), float(l2)
        self.last_terms: dict[str, Tensor] = {}
        self._selected: tuple[Tensor, tuple[Tensor, ...]] | None = None

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        activations = self.model(x)  # B×N×L
        if self._selected is None or self._selected[0] is not items:  # once per batch composition
            self._selected = (items, self.targets.select(len(items), items))
        loss = target_loss(activations, *self._selected[1], reduction="sum")
        flat = activations.flatten(1)
        penalty = self.l1 * flat.abs().mean(1) + self.l2 * flat.pow(2).mean(1)
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

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        penalty = items.options.get("activation_penalty", {})
        return TargetActivationObjective(model, [k["targets"] for k in items.item_kwargs], l1=penalty.get("l1", 0.0), l2=penalty.get("l2", 0.0))

    def validate(self, context: ValidationContext) -> pd.DataFrame:
        """Achieved vs target activations (RMSE and worst error per MEI, with the generation and the
        held-out ensemble), and the tidy activation table of every MEI (``activations``)."""
        model = context.load_ensemble("members")
        held_out = context.load_ensemble("validation_members")
        groups = getattr(model.members[0], "neuron_groups", None)
        _, items = parse_items(context.objectives)
        targets = {int(n): k["targets"] for n, k in zip(items.frame["neuron_id"], items.item_kwargs)}
        table = context.table
        position_of = {int(n): i for i, n in enumerate(context.meis["neuron"].values)}
        columns = {name: np.full(len(table), np.nan, dtype=np.float32) for name in ("target_rmse", "max_abs_target_error", "heldout_target_rmse")}
        tidy = []
        for (method, seed), group in table.groupby(["method", "seed"], sort=False):
            slab = torch.from_numpy(np.asarray(context.meis["mei"].sel({"method": method, "seed": seed}).values))
            with torch.no_grad():
                reached = model(slab).numpy()
                held = held_out(slab).numpy() if held_out is not None else None
            for row, item in zip(group.index, group["neuron_id"]):
                position = position_of[int(item)]
                layer, neuron, value = (np.asarray(v) for v in zip(*targets[int(item)]))
                errors = reached[position][neuron, layer] - value
                columns["target_rmse"][row] = np.sqrt(np.mean(errors**2))
                columns["max_abs_target_error"][row] = np.abs(errors).max()
                if held is not None:
                    columns["heldout_target_rmse"][row] = np.sqrt(np.mean((held[position][neuron, layer] - value) ** 2))
                frame = activation_table(reached[position], groups).drop(columns="batch")
                tidy.append(frame.assign(ensemble=context.manifest["name"], method=method, seed=int(seed), item=int(item)))
        for name, values in columns.items():
            table[name] = values
        if tidy:
            context.extra_tables["activations"] = pd.concat(tidy, ignore_index=True)
        return table

