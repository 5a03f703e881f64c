"""Method functions (``method_fn``) and the documented presets.

A method function has the signature ``fn(objective, config, seeds, shape, device) -> BatchResult``;
the pipeline imports it from the ``method_fn`` path of a method. ``gradient_ascent`` is also callable
sinzlab-style on one model and one seed (see :func:`mei_core.gradient_ascent`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .engine import BatchResult, optimize
from .method import build_method
from .objectives.base import Objective, with_model_forward_kwargs
from .presets import fixed_budget

__all__ = ["batched_gradient_ascent"]


def batched_gradient_ascent(
    objective: Objective,
    config: Mapping[str, Any],
    seeds: Sequence[int],
    shape: Sequence[int],
    device: str | torch.device = "cpu",
) -> BatchResult:
    """Optimise one item per seed; ``objective`` knows each item's target (unit, cluster, …)."""
    method = build_method(config)
    objective = with_model_forward_kwargs(objective, config)
    return optimize(objective.to(device), method, list(seeds), tuple(shape), device)


def gradient_ascent(
    model: Any,
    config: Mapping[str, Any],
    seed: int,
    shape: Sequence[int] = (1, 1, 36, 64),
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """sinzlab/mei-compatible: optimise one MEI of ``model`` (whose output is the objective, e.g. a
    ``ConstrainedOutputModel``) from ``seed``. ``shape`` is ``1×C×H×W`` (or ``n_meis×C×…``).

    Returns ``(mei, score, output)``: the MEI (``shape``), the objective of exactly that MEI, and the
    trackers' records ``{name: {"times": [...], "values": [...]}}``.
    """
    config = copy.deepcopy(dict(config))  # sinzlab popped slots out of the caller's dict; we never do
    device = device or config.get("device") or "cpu"
    if shape[0] > 1:  # sinzlab's n×C×… shape asks for n MEIs of the one item
        if config.setdefault("n_meis", int(shape[0])) != int(shape[0]):
            raise ValueError(f"shape {tuple(shape)} asks for {shape[0]} MEIs but config n_meis is {config['n_meis']}")
    method = build_method(config)
    objective = with_model_forward_kwargs(model, config)
    result = optimize(objective.to(device), method, [int(seed)], tuple(shape[1:]), device)
    score = result.scores.mean().item()
    output = {
        name: {"times": list(tracker.steps), "values": [v for v in tracker.values]}
        for name, tracker in result.traces.items()
    }
    return result.meis, score, output


#: The fixed-budget preset (``mei_core.presets.fixed_budget``): the norm and clip given by hand, centred
#: on ``input_stats.mean`` (without ``input_stats`` its numbers are z-scores).
default_preset = fixed_budget
