"""Ensembles of trained members and output-constrained views of a model (sinzlab-compatible)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn


class EnsembleModel(nn.Module):
    """Average (``reduce="mean"``) or stack (``reduce="stack"``: members × B × …) the members' outputs.

    Extra positional and keyword arguments (e.g. ``data_key``) are passed to every member.
    """

    def __init__(self, *members: nn.Module, reduce: str = "mean"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if reduce not in {"mean", "stack"}:
            raise ValueError(f"reduce must be 'mean' or 'stack', got {reduce!r}")
        self.members = nn.ModuleList(members)
        self.reduce = reduce

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        outputs = torch.stack([member(x, *args, **kwargs) for member in self.members])
        return outputs.mean(0) if self.reduce == "mean" else outputs


class ConstrainedOutputModel(nn.Module):
    """One unit (``constraint`` an int) or several (a list) of a model's output ``B×N`` (or
    ``B×T×N``), passed through ``target_fn``; ``forward_kwargs`` (e.g. ``{"data_key": ...}``) go to the model."""

    def __init__(
        self,
        model: nn.Module,
        constraint: int | Sequence[int],
        target_fn: Callable[[Tensor], Tensor] | None = None,
        forward_kwargs: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.constraint = constraint if isinstance(constraint, int) else list(constraint)
        self.target_fn = target_fn or (lambda r: r)
        self.forward_kwargs = dict(forward_kwargs or {})

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        output = self.model(x, *args, **{**self.forward_kwargs, **kwargs})
        return self.target_fn(output[..., self.constraint])


class BatchedConstrainedOutputModel(nn.Module):
    """Every row of the batch reads its own unit: ``output[b, row_units[b]]``.

    ``units`` holds one unit per item; callers pass the unit of every row of ``x`` (``row_units``,
    e.g. ``units[items]``); without it row ``b`` reads ``units[b]``.
    """

    def __init__(
        self,
        model: nn.Module,
        units: Sequence[int] | Tensor,
        target_fn: Callable[[Tensor], Tensor] | None = None,
        forward_kwargs: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.register_buffer("units", torch.as_tensor(units, dtype=torch.long), persistent=False)
        self.target_fn = target_fn or (lambda r: r)
        self.forward_kwargs = dict(forward_kwargs or {})
        self._checked = False
        self._index: tuple[Tensor, torch.Size, torch.device, Tensor] | None = None

    def forward(self, x: Tensor, row_units: Tensor | None = None) -> Tensor:
        return self.select(self.model(x, **self.forward_kwargs), row_units)

    def select(self, output: Tensor, row_units: Tensor | None = None) -> Tensor:
        """Unit ``row_units[b]`` (default ``units[b]``) of row ``b`` of the model's ``output``, through
        ``target_fn``."""
        if not self._checked:  # once: the output size is only known after a forward pass
            if output.shape[-1] <= int(self.units.max()):
                raise IndexError(f"unit {int(self.units.max())} out of range for a model with {output.shape[-1]} outputs")
            self._checked = True
        selected = output.gather(-1, self.gather_index(self.units if row_units is None else row_units, output)).squeeze(-1)
        return self.target_fn(selected)

    def gather_index(self, units: Tensor, output: Tensor) -> Tensor:
        """The index that picks ``units[b]`` out of row ``b`` of ``output`` (``B×N``; ``B×T×N``, video
        models: at every time step). Kept while ``units`` is the same tensor and the output keeps its
        shape and device: the engine passes the same row units at every step of a batch, so the
        index is built once per batch composition, not once per step."""
        cached = self._index
        shape, device = output.shape, output.device
        if cached is not None and cached[0] is units and cached[1] == shape and cached[2] == device:
            return cached[3]
        index = units.to(device).view(-1, *([1] * (output.dim() - 1))).expand(*shape[:-1], 1)
        self._index = (units, shape, device, index)
        return index
