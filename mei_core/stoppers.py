"""Stoppers decide per item when to stop. ``state.progress`` is what is maximised per item
(sign·objective − regularisation, averaged over the item's rows); ``state.evaluation_per_item`` is the
raw objective. Each returns ``(stop mask over items, reason)``, both kept on the device (the reason
as :class:`~mei_core.components.Reasons` codes): a stopper runs every step and must not make the
engine wait for the GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .components import Reasons, Stopper

__all__ = ["NumIterations", "EarlyStopper", "EvaluationThreshold", "LossRange", "Converged"]


class NumIterations(Stopper):
    """Stop after exactly ``num_iterations`` optimiser steps."""

    def __init__(self, num_iterations: int):
        if int(num_iterations) < 0:
            raise ValueError(f"num_iterations must be >= 0, got {num_iterations}")
        self.num_iterations = int(num_iterations)

    @property
    def earliest_stop(self) -> int:
        return self.num_iterations

    def __call__(self, state: Any) -> tuple[bool, str]:
        return state.i_iter >= self.num_iterations, "num_iterations"


class EarlyStopper(Stopper):
    """Stop an item when its progress has not improved by ``min_delta`` for ``patience`` steps,
    or after ``max_iterations`` steps (openretina's semantics, per item)."""

    def __init__(self, patience: int = 10, min_delta: float = 0.0, max_iterations: int = 1000):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.max_iterations = int(max_iterations)
        self._best: Tensor | None = None
        self._waited: Tensor | None = None

    def __call__(self, state: Any) -> tuple[Tensor | bool, Reasons]:
        progress = state.progress.detach()
        if self._best is None:
            self._best = progress.clone()
            self._waited = torch.zeros_like(progress, dtype=torch.long)
        else:
            improved = progress > self._best + self.min_delta
            self._best = torch.where(improved, progress, self._best)
            self._waited = torch.where(improved, torch.zeros_like(self._waited), self._waited + 1)
        stalled = self._waited >= self.patience
        return _stop(stalled, state.i_iter >= self.max_iterations), _reasons(stalled, "no_improvement")


class EvaluationThreshold(Stopper):
    """Stop an item once its objective reaches ``threshold`` (from the direction being optimised),
    or after ``max_iterations`` steps."""

    def __init__(self, threshold: float, max_iterations: int = 1000):
        self.threshold = float(threshold)
        self.max_iterations = int(max_iterations)

    def __call__(self, state: Any) -> tuple[Tensor | bool, Reasons]:
        reached = state.sign * (state.evaluation_per_item.detach() - self.threshold) >= 0
        return _stop(reached, state.i_iter >= self.max_iterations), _reasons(reached, "threshold")


class LossRange(Stopper):
    """Stop an item when max − min of its last ``n_runs`` losses (−progress) is below ``threshold``
    (connectome_interpreter's early stopping), or after ``max_iterations`` steps. The loss range is
    not looked at before step ``min_iterations`` (connectome_interpreter's: ``n_runs + 1``)."""

    def __init__(self, n_runs: int = 10, threshold: float = 1e-4, max_iterations: int = 1000, min_iterations: int = 0):
        if n_runs < 2:
            raise ValueError(f"n_runs must be >= 2, got {n_runs}")
        self.n_runs = int(n_runs)
        self.threshold = float(threshold)
        self.max_iterations = int(max_iterations)
        self.min_iterations = int(min_iterations)
        self._window: Tensor | None = None
        self._filled = 0

    def __call__(self, state: Any) -> tuple[Tensor | bool, Reasons]:
        loss = -state.progress.detach()
        if self._window is None:
            self._window = loss.new_zeros((self.n_runs, loss.numel()))
        self._window = torch.roll(self._window, 1, dims=0)
        self._window[0] = loss
        self._filled = min(self._filled + 1, self.n_runs)
        at_limit = state.i_iter >= self.max_iterations
        if self._filled < self.n_runs or state.i_iter < self.min_iterations:
            flat = torch.zeros_like(loss, dtype=torch.bool)
        else:
            flat = (self._window.max(0).values - self._window.min(0).values) < self.threshold
        return _stop(flat, at_limit), _reasons(flat, "loss_range")


class Converged(Stopper):
    """Stop an item once its MEI and its score have stopped changing, or after ``max_iterations``.

    From step ``min_iterations`` on, an item stops when, for ``patience`` consecutive steps, both
    hold against the step before, or both against the step two before (a step too large for an
    item swings it between two equally good MEIs for ever: a period-2 cycle has settled too): its
    score (``state.progress``) changed by at most ``score_tolerance`` relative to its magnitude, and
    every one of its rows (``n_meis`` consecutive rows of ``state.input_``, the optimised variable)
    correlates with that earlier value to at least ``1 − input_tolerance`` (Pearson r over the row:
    blind to the stimulus mean and units). Per item and on the device: an item's stop depends on its
    own history alone. Evidence for the default's numbers: benchmarks/README.md, "Time to quality".
    """

    def __init__(self, score_tolerance: float = 1e-3, input_tolerance: float = 1e-3, patience: int = 2,
                 min_iterations: int = 0, max_iterations: int = 1000):
        if not score_tolerance >= 0 or not input_tolerance >= 0:
            raise ValueError(f"tolerances must be >= 0, got score {score_tolerance}, input {input_tolerance}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not 0 <= min_iterations <= max_iterations:
            raise ValueError(f"need 0 <= min_iterations <= max_iterations, got {min_iterations}, {max_iterations}")
        self.score_tolerance = float(score_tolerance)
        self.input_tolerance = float(input_tolerance)
        self.patience = int(patience)
        self.min_iterations = int(min_iterations)
        self.max_iterations = int(max_iterations)
        self._history: list[tuple[Tensor, Tensor]] = []  # (score, centred unit rows) of the last two steps
        self._settled: Tensor | None = None

    def __call__(self, state: Any) -> tuple[Tensor | bool, Reasons]:
        # a copy: the engine updates its per-item records in place once some items have stopped
        progress = state.progress.detach().clone()
        n_items = progress.numel()
        centred = state.input_.detach().flatten(1)
        centred = centred - centred.mean(1, keepdim=True)
        centred = centred / torch.linalg.vector_norm(centred, dim=1, keepdim=True).clamp_min(1e-30)
        if self._settled is None:
            self._settled = torch.zeros(n_items, dtype=torch.long, device=progress.device)
        settled_now = torch.zeros(n_items, dtype=torch.bool, device=progress.device)
        for earlier_progress, earlier_input in self._history:
            same_score = (progress - earlier_progress).abs() <= self.score_tolerance * progress.abs()
            correlation = (centred * earlier_input).sum(1).view(n_items, -1).amin(1)  # the item's least settled row
            settled_now |= same_score & (correlation >= 1.0 - self.input_tolerance)
        self._history = [(progress, centred), *self._history[:1]]
        self._settled = torch.where(settled_now, self._settled + 1, torch.zeros_like(self._settled))
        converged = (self._settled >= self.patience) & (state.i_iter >= self.min_iterations)
        return _stop(converged, state.i_iter >= self.max_iterations), _reasons(converged, "converged")


def _stop(own: Tensor, at_limit: bool) -> Tensor | bool:
    """At the iteration limit every item stops: a plain ``True`` lets the engine end the loop at
    once, without waiting for its next stop check."""
    return True if at_limit else own


def _reasons(own: Tensor, name: str) -> Reasons:
    """``name`` where the stopper's own criterion holds, ``max_iterations`` elsewhere."""
    return Reasons((~own).long(), (name, "max_iterations"))
