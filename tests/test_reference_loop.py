"""The gradient-ascent algorithm written out plainly, and the tuned engine asserted to equal it bitwise.

``reference_mei`` is the whole algorithm on one screen: no chunks, no frozen rows, no skipped calls, no
cached lookups. It reuses the components (they are the spec of each step) but nothing of the engine's
loop, batching or record-keeping. It covers a plain-bool stopper (``NumIterations``), where every item
stops at the same step; the engine's per-item freezing is tested in test_engine.py."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mei_core.components import Step
from mei_core.method import build_method
from mei_core.methods import batched_gradient_ascent
from mei_core.objectives.base import UnitObjective
from mei_core.presets import default, fixed_budget
from mei_core.streams import RowStreams

SHAPE = (1, 12, 12)  # C×H×W


def reference_mei(objective, config, seeds, shape):
    """MEIs (items × n_meis rows, C×H×W each) and their scores, one step at a time."""
    method = build_method(config)
    n_meis = method.n_meis
    row_items = torch.arange(len(seeds)).repeat_interleave(n_meis)  # item k owns rows k·n_meis …
    streams = RowStreams(seeds, row_items)  # every random draw of a row: (its seed, row, step, stream)
    rows = torch.arange(len(row_items))
    step = lambda i: Step(i, rows, row_items, streams, row_items)
    # initial draw: each item's generator, seeded by its seed, draws its n_meis starts at once
    variable_shape = method.parameterisation.initial_shape(shape)
    x = torch.cat([method.initial((n_meis, *variable_shape), torch.Generator().manual_seed(s)) for s in seeds])
    with torch.no_grad():
        for projection in method.initial_projection:
            x = projection(x, step(0))
    x.requires_grad_(True)
    optimizer = method.make_optimizer([x])
    for i in itertools.count():
        stimulus = method.parameterisation(x)  # the optimised variable → the stimulus
        transformed = method.transform(stimulus, step(i))  # what the model sees
        evaluation = objective(transformed, row_items)  # one value per row
        regularized = transformed if method.regularize_transformed else stimulus
        penalty = sum(r(regularized, step(i)) for r in method.regularizers) if method.regularizers else 0
        progress = method.sign * evaluation - penalty  # what is maximised
        (grad,) = torch.autograd.grad(-progress.sum(), x)
        with torch.no_grad():
            for preconditioner in method.preconditioners:
                grad = preconditioner(grad, step(i))
            stop, _ = method.stopper(SimpleNamespace(i_iter=i))
            if stop:  # the MEI is the input of this last step: no update after it
                break
            x.grad = grad
            optimizer.step()
            for postprocessor in method.postprocessors:
                x.data = postprocessor(x.data, step(i))
    with torch.no_grad():
        meis = method.parameterisation(x)
        return meis, objective(method.transform.at_evaluation(meis), row_items)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 5), nn.ELU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4))


CONFIGS = {
    "default preset": default(SHAPE, {"mean": [0.2], "std": [1.0]}, iterations=25),
    "Jitter, 2 MEIs per item, total variation": {
        **fixed_budget(norm=4.0, iterations=20), "n_meis": 2,
        "transform": {"path": "Jitter", "kwargs": {"max_jitter": 2}},
        "regularization": [{"path": "TotalVariation", "kwargs": {"weight": 0.05}}],
    },
    "Adam with a blur schedule": {
        **fixed_budget(norm=4.0, iterations=20),
        "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
        "precondition": [{"path": "GaussianBlur", "kwargs": {"sigma": 2.0, "decay_factor": 0.9, "min_sigma": 0.5}}],
    },
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_tuned_engine_returns_bitwise_what_the_reference_loop_returns(name):
    model = tiny_cnn()
    objective = UnitObjective(model, [0, 1, 3])
    seeds = [0, 5, 2**40 + 3]
    expected_meis, expected_scores = reference_mei(objective, CONFIGS[name], seeds, SHAPE)
    result = batched_gradient_ascent(objective, CONFIGS[name], seeds, SHAPE)
    assert expected_meis.shape == (len(seeds) * result.n_meis, *SHAPE)
    assert torch.equal(result.meis, expected_meis)
    assert torch.equal(result.scores, expected_scores)
    assert result.n_iterations == [CONFIGS[name]["stopper"]["kwargs"]["num_iterations"]] * len(seeds)
