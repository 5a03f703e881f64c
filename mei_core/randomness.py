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
from .streams import stream_id


_STREAM = stream_id("draw_per_row")


def draw_per_row(step: Step, draw: Callable[[torch.Generator], Tensor]) -> list[Tensor]:
    """``draw(generator)`` once for every processed row of ``step``, in row order, each from a
    generator seeded by the row's own stream at this step: a row's draw depends only on its item's
    seed, its row and the step. For components whose draw needs a ``torch.Generator`` (a random
    background); shifts and crops draw vectorised from ``step.integers`` instead. A Python loop over
    rows and one host copy of the seeds per step: keep it off hot paths."""
    seeds = step.integers(_STREAM, 1, 2**31 - 1)[:, 0].tolist()
    return [draw(torch.Generator().manual_seed(int(seed))) for seed in seeds]
