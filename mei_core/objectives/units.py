"""Kind ``unit``: each item maximises (or, with ``direction: minimize``, minimises) one output unit."""

from __future__ import annotations

from torch import nn

from .base import Objective, UnitObjective
from .kinds import Items, ObjectiveKind


class UnitKind(ObjectiveKind):
    name = "unit"
    description = "one output unit per item (output B×N, or B×T×N averaged over time)"

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        return UnitObjective(model, items.units, forward_kwargs={"data_key": data_key} if data_key is not None else None)
