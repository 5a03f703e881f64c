"""Kind ``custom``: a user function ``get_objective(model, row) -> callable`` builds each item's
objective (``row``: the item's table row with ``kwargs`` parsed). General but not vectorised."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..config import import_object
from .base import Objective, PerItemObjective
from .kinds import Items, ObjectiveKind


class CustomKind(ObjectiveKind):
    name = "custom"
    description = "a user function get_objective(model, row) -> callable, one per item"
    extra_keys = {"builder": {"type": "string", "description": "import path of get_objective(model, row)"}}
    required_keys = ("builder",)
    kwargs_schema = {"type": "object"}
    # the row handed to the user's function carries its data_key: one objective for all keys
    one_objective_per_data_key = False

    def check(self, spec: Mapping[str, Any], key: str) -> None:
        import_object(spec["builder"], f"{key}.builder")

    def table_rows(self, spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
        # the builder travels in the rows: a job needs nothing but its shard's rows
        return super().table_rows({**spec, "kwargs": {**(spec.get("kwargs") or {}), "builder": spec["builder"]}}, outputs, base, key)

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        objectives = []
        for record, kwargs, row_key in zip(items.frame.to_dict("records"), items.item_kwargs, items.data_keys):
            kwargs = dict(kwargs)
            builder = import_object(kwargs.pop("builder"), "objectives.builder")
            objectives.append(builder(model, {**record, "data_key": row_key, "kwargs": kwargs}))
        return PerItemObjective(objectives)
