"""The objective table (one Parquet per ensemble) and the batched objectives built from its rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .config import import_object
from .errors import MEIConfigError
from .files import atomic_path, read_json
from .objectives import Objective, TargetActivationObjective, UnitObjective, reduce_to_rows

COLUMNS = ["neuron_id", "output_unit", "data_key", "kind", "kwargs"]


def build_objective_table(spec_path: str, manifest_path: str, out_path: str) -> pd.DataFrame:
    """Write the Parquet table of one ensemble's objectives, checked against its assembled members."""
    spec, manifest = read_json(spec_path), read_json(manifest_path)
    table = pd.DataFrame(spec["rows"], columns=COLUMNS).astype(
        {"neuron_id": "int64", "output_unit": "int64", "data_key": "string", "kind": "string", "kwargs": "string"}
    )
    outputs = int(manifest["outputs"])
    if len(table) and int(table["output_unit"].max()) >= outputs:
        raise MEIConfigError(f"objectives.{spec['ensemble']}.neurons: output unit {int(table['output_unit'].max())} out of range for {outputs} outputs")
    with atomic_path(out_path) as temporary:
        table.to_parquet(temporary, index=False)
    return table


class PerRowObjective(Objective):
    """Custom objectives: ``get_objective(model, row)`` returns a callable per row; each row's input
    goes through its own callable (general, but not vectorised)."""

    def __init__(self, objectives: Sequence[Any]):
        self.objectives = list(objectives)

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        return torch.cat([reduce_to_rows(self.objectives[r](x[i : i + 1])).reshape(1) for i, r in enumerate(rows.tolist())])

    def to(self, device):
        for objective in self.objectives:
            if isinstance(objective, nn.Module):
                objective.to(device)
        return self


def build_objective(model: nn.Module, rows: pd.DataFrame, n_meis: int = 1) -> Objective:
    """One objective over the batch: row ``b`` (of item ``b // n_meis``) targets ``rows.iloc[b // n_meis]``."""
    kinds = set(rows["kind"])
    if len(kinds) != 1:
        raise MEIConfigError(f"one shard mixes objective kinds {sorted(kinds)}")
    kind = kinds.pop()
    expanded = rows.loc[rows.index.repeat(n_meis)].reset_index(drop=True)
    if kind == "unit":
        data_keys = set(expanded["data_key"].dropna())
        if len(data_keys) > 1:
            raise MEIConfigError(f"one shard mixes data keys {sorted(data_keys)}")
        forward_kwargs = {"data_key": data_keys.pop()} if data_keys else None
        return UnitObjective(model, expanded["output_unit"].tolist(), forward_kwargs=forward_kwargs)
    if kind == "targets":
        parsed = [json.loads(k) for k in expanded["kwargs"]]
        penalty = parsed[0].get("activation_penalty", {}) if parsed else {}
        return TargetActivationObjective(model, [p["targets"] for p in parsed], l1=penalty.get("l1", 0.0), l2=penalty.get("l2", 0.0))
    if kind in VIDEO_KINDS:
        return _video_objective(kind, model, expanded)
    if kind == "custom":
        objectives = []
        for record in expanded.to_dict("records"):
            kwargs = json.loads(record["kwargs"] or "{}")
            builder = import_object(kwargs.pop("builder"), "objectives.builder")
            objectives.append(builder(model, {**record, "kwargs": kwargs}))
        return PerRowObjective(objectives)
    raise MEIConfigError(f"objective kind {kind!r} is not known (unit, custom, targets, {', '.join(VIDEO_KINDS)})")


VIDEO_KINDS = ("increase", "decrease", "inner", "contrastive")


def _reducer(spec: Any):
    """``"mean"`` (default) or ``{"slice_mean": {"start": 10, "length": 10}}`` (mean over frames)."""
    from .video_objectives import MeanReducer, SliceMeanReducer

    if spec in (None, "mean"):
        return MeanReducer()
    if isinstance(spec, dict) and set(spec) == {"slice_mean"}:
        return SliceMeanReducer(axis=0, **spec["slice_mean"])
    raise MEIConfigError(f"objectives kwargs.reducer: expected 'mean' or {{slice_mean: {{start, length}}}}, got {spec!r}")


def _video_objective(kind: str, model: nn.Module, rows: pd.DataFrame) -> Objective:
    """openretina's objectives, one target per row: a unit (or the unit group in kwargs.neurons), a
    layer's channel (kwargs.layer; the row's output_unit is the channel), or a contrastive cluster."""
    from .video_objectives import ContrastiveNeuronObjective, DecreaseObjective, IncreaseObjective, InnerNeuronObjective

    kwargs = json.loads(rows["kwargs"].iloc[0] or "{}")
    data_keys = set(rows["data_key"].dropna())
    data_key = data_keys.pop() if len(data_keys) == 1 else None
    reducer = _reducer(kwargs.get("reducer"))
    units = [int(u) for u in rows["output_unit"]]
    if kind in ("increase", "decrease"):
        groups = [kwargs.get("neurons", {}).get(str(u), u) if isinstance(kwargs.get("neurons"), dict) else u for u in units]
        cls = IncreaseObjective if kind == "increase" else DecreaseObjective
        return cls(model, groups, data_key=data_key, response_reducer=reducer)
    if kind == "inner":
        if "layer" not in kwargs:
            raise MEIConfigError("objectives kwargs.layer: required for kind 'inner' (a module name of the model)")
        return InnerNeuronObjective(model, kwargs["layer"], units, data_key=data_key, response_reducer=reducer)
    clusters = kwargs.get("clusters")
    if not clusters:
        raise MEIConfigError("objectives kwargs.clusters: required for kind 'contrastive' (a list of neuron lists; each row's output_unit picks its on cluster)")
    return ContrastiveNeuronObjective(model, [clusters[u] for u in units], clusters,
                                      temperature=float(kwargs.get("temperature", 1.6)), data_key=data_key, response_reducer=reducer)
