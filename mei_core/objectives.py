"""Objectives: what is optimised for every row. ``objective(x, rows) -> B`` values, one per row.

``rows`` are the indices (into the whole batch) of the rows in ``x``; objectives whose target differs
per row (another unit, another cluster) look it up by row, so a batch may mix targets freely.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .models.ensemble import BatchedConstrainedOutputModel

__all__: list[str] = []


class Objective(ABC):
    @abstractmethod
    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        """One value per row of ``x``."""

    def to(self, device: torch.device | str) -> "Objective":
        return self


def reduce_to_rows(output: Tensor) -> Tensor:
    """Average everything but the batch dimension (e.g. a unit list, or time for video models)."""
    return output if output.dim() == 1 else output.flatten(1).mean(1)


class ModelObjective(Objective):
    """A sinzlab-style model (e.g. ``ConstrainedOutputModel``) whose output is the objective itself;
    the same for every row."""

    def __init__(self, model: Callable[[Tensor], Tensor]):
        self.model = model

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        return reduce_to_rows(self.model(x))

    def to(self, device):
        if isinstance(self.model, nn.Module):
            self.model.to(device)
        return self


class UnitObjective(Objective):
    """Row ``b`` maximises unit ``units[b]`` of the model output ``B×N`` (``B×T×N`` outputs are
    reduced over time by ``target_fn`` or averaged)."""

    def __init__(
        self,
        model: nn.Module,
        units: Sequence[int] | Tensor,
        target_fn: Callable[[Tensor], Tensor] | None = None,
        forward_kwargs: dict[str, Any] | None = None,
    ):
        self.selector = BatchedConstrainedOutputModel(model, units, target_fn, forward_kwargs)

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        return reduce_to_rows(self.selector(x, rows))

    def to(self, device):
        self.selector.to(device)
        return self


def as_objective(model_or_objective: Any) -> Objective:
    if isinstance(model_or_objective, Objective):
        return model_or_objective
    if callable(model_or_objective):
        return ModelObjective(model_or_objective)
    raise TypeError(f"expected an Objective or a callable model, got {type(model_or_objective).__name__}")
