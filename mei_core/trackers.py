"""Trackers record per-row values every ``interval`` steps (host copies only on those steps)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .components import Tracker

__all__ = ["EvaluationObjective", "PostProcessedInputObjective", "ProgressObjective"]


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
