"""Kind ``unit``: each item maximises (or, with ``direction: minimize``, minimises) one output unit."""

from __future__ import annotations

from torch import nn

from .base import Objective, UnitObjective, row_forward_kwargs
from .kinds import Items, ObjectiveKind


class UnitKind(ObjectiveKind):
    name = "unit"
    description = "one output unit per item (output B×N, or B×T×N averaged over time)"

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        return UnitObjective(model, items.units, forward_kwargs=row_forward_kwargs(data_key))
