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
from .objectives.base import Objective, as_objective

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
    objective = as_objective(objective).with_forward_kwargs(method.model_forward_kwargs, "config.model_forward_kwargs")
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
    objective = as_objective(model).with_forward_kwargs(method.model_forward_kwargs, "config.model_forward_kwargs")
    result = optimize(objective.to(device), method, [int(seed)], tuple(shape[1:]), device)
    score = result.scores.mean().item()
    output = {
        name: {"times": list(tracker.steps), "values": [v for v in tracker.values]}
        for name, tracker in result.traces.items()
    }
    return result.meis, score, output


#: The default method: SGD on the per-image normalised gradient, blurred early and sharp late, with a
#: fixed L2 norm and a pixel clip. ``norm`` and the clip should match the contrast of the training
#: images (e.g. the typical L2 norm of a dataset image and ±3 pixel std).
def default_preset(norm: float = 10.0, x_min: float = -3.0, x_max: float = 3.0, iterations: int = 200,
                   lr: float = 0.5, sigma: float = 1.5, sigma_decay: float = 0.99) -> dict[str, Any]:
    return {
        "initial": {"path": "RandomNormal", "kwargs": {"std": 1.0}},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": lr}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
        "precondition": [
            {"path": "GaussianBlur", "kwargs": {"sigma": sigma, "decay_factor": sigma_decay, "min_sigma": 0.25}},
            {"path": "DivideByMeanOfAbsolute", "kwargs": {}},
        ],
        "postprocessing": [
            {"path": "ChangeNorm", "kwargs": {"norm": norm}},
            {"path": "ClipRange", "kwargs": {"x_min": x_min, "x_max": x_max}},
        ],
    }


def hoefling_2024_preset(iterations: int = 10) -> dict[str, Any]:
    """openretina's CLI preset for mouse-retina video MEIs (Höfling et al. 2024): SGD lr 100 for 10
    steps on 2-channel (green, UV) videos, joint L2 norm 30 with per-channel clipping
    (green [−0.654, 6.269], UV [−0.913, 6.269]) and a range penalty of factor 0.1. Use it with an
    ``increase`` objective and ``reducer: {slice_mean: {start: 10, length: 10}}`` (frames 10–20)."""
    ranges = [[-0.654, 6.269], [-0.913, 6.269]]
    return {
        "initial": {"path": "RandomNormal", "kwargs": {"std": 0.1}},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 100.0}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
        "regularization": {"path": "RangeRegularizationLoss", "kwargs": {"min_max_values": ranges, "max_norm": 30.0, "factor": 0.1}},
        "postprocessing": {"path": "ChangeNormJointlyClipRangeSeparately", "kwargs": {"min_max_values": ranges, "norm": 30.0}},
    }
