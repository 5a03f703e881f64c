"""Trackers record per-row values every ``interval`` steps (host copies only on those steps)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .components import Tracker

__all__ = ["EvaluationObjective", "InputObjective", "PostProcessedInputObjective", "ProgressObjective", "PenaltyObjective", "ObjectiveTerm"]


class EvaluationObjective(Tracker):
    """The objective value of every row."""

    def read(self, state: Any) -> Tensor:
        return state.evaluation


class ProgressObjective(Tracker):
    """The maximised quantity (sign·objective − regularisation) of every row."""

    def read(self, state: Any) -> Tensor:
        return state.progress_per_row


class PostProcessedInputObjective(Tracker):
    """The input itself after postprocessing (snapshots of the MEI during optimisation)."""

    def read(self, state: Any) -> Tensor:
        return state.post_processed_input


class InputObjective(Tracker):
    """The input evaluated at the step (before its optimiser step): snapshots of the MEI as it was scored."""

    def read(self, state: Any) -> Tensor:
        return state.input_


class PenaltyObjective(Tracker):
    """The summed regularisation penalty of every row (0 without regularizers)."""

    def read(self, state: Any) -> Tensor:
        return state.reg_term


class ObjectiveTerm(Tracker):
    """One named part of the objective (``objective.last_terms[term]``), e.g. ``target_loss`` or
    ``activation_penalty`` of target-activation objectives."""

    def __init__(self, term: str, interval: int = 1):
        super().__init__(interval)
        self.term = term

    def read(self, state: Any) -> Tensor:
        if self.term not in state.objective_terms:
            raise KeyError(f"the objective has no term {self.term!r} (it has {sorted(state.objective_terms)})")
        return state.objective_terms[self.term]
