"""The one place components draw per-row randomness from a :class:`~mei_core.components.Step`.

Every random draw of a row comes from its item's stream, so a row's result does not depend on the
other rows of its batch. Components call :func:`draw_per_row` instead of reaching into the Step, so
that a change of how the Step exposes its per-item streams is made here alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .components import Step


def draw_per_row(step: Step, draw: Callable[[torch.Generator], Tensor]) -> list[Tensor]:
    """``draw(generator)`` once for every processed row of ``step``, in row order, each from its row's
    item generator (rows of one item draw one after the other from their item's stream)."""
    return [draw(generator) for generator in step.row_generators()]
