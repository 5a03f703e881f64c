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


class TargetActivationObjective(Objective):
    """Drive chosen neurons at chosen layers to target activations (connectome models whose output is
    ``B×N×L``: batch × neurons × layers). Row ``b`` has its own list of ``(layer, neuron, value)``
    targets; the value is ``−(Σ (a − value)² + l1·mean|a| + l2·mean a²)`` over the row's targets and
    all its activations, so maximising it matches the targets without switching the network on
    wholesale. ``last_terms`` keeps the two parts of the last evaluation for trackers."""

    def __init__(self, model: nn.Module, targets: Sequence[Sequence[Sequence[float]]], l1: float = 0.0, l2: float = 0.0):
        if not targets or any(len(row) == 0 for row in targets):
            raise ValueError("every row needs at least one (layer, neuron, value) target")
        self.model = model
        width = max(len(row) for row in targets)
        padded = [list(row) + [row[0]] * (width - len(row)) for row in targets]  # pads are masked out
        table = torch.tensor(padded, dtype=torch.float32)  # rows × width × (layer, neuron, value)
        self.layers, self.neurons = table[..., 0].long(), table[..., 1].long()
        self.values = table[..., 2]
        self.mask = torch.tensor([[1.0] * len(row) + [0.0] * (width - len(row)) for row in targets])
        self.l1, self.l2 = float(l1), float(l2)
        self.last_terms: dict[str, Tensor] = {}

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        activations = self.model(x)  # B×N×L
        select = slice(None) if len(rows) == len(self.values) else rows
        layers, neurons, values, mask = (t[select] for t in (self.layers, self.neurons, self.values, self.mask))
        batch = torch.arange(len(activations), device=activations.device)[:, None]
        reached = activations[batch, neurons, layers]
        target_loss = ((reached - values) ** 2 * mask).sum(1)
        flat = activations.flatten(1)
        penalty = self.l1 * flat.abs().mean(1) + self.l2 * flat.pow(2).mean(1)
        self.last_terms = {"target_loss": target_loss.detach(), "activation_penalty": penalty.detach()}
        return -(target_loss + penalty)

    def to(self, device):
        self.model.to(device)
        for name in ("layers", "neurons", "values", "mask"):
            setattr(self, name, getattr(self, name).to(device))
        return self
