"""The gradient-ascent algorithm written out plainly, and the tuned engine asserted to equal it bitwise.

``reference_mei`` is the whole algorithm on one screen: no chunks, no frozen rows, no skipped calls, no
cached lookups. It reuses the components (they are the spec of each step) but nothing of the engine's
loop, batching or record-keeping. Per-item stoppers (``Converged``, the default's) are written out too:
an item that stops keeps the input of that step, and the others go on."""

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

from helpers import SettledAndRestless

SHAPE = (1, 12, 12)  # C×H×W


def reference_mei(objective, config, seeds, shape):
    """MEIs (items × n_meis rows, C×H×W each), their scores and each item's steps, one step at a time."""
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
    n_items = len(seeds)
    stopped_at = [None] * n_items  # the step each item stopped at: it keeps that step's input
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
            per_item = lambda values: values.detach().view(n_items, n_meis).mean(1)
            state = SimpleNamespace(i_iter=i, sign=method.sign, progress=per_item(progress), input_=x.detach().clone(),
                                    evaluation_per_item=per_item(evaluation))
            stop, _ = method.stopper(state)
            stop = torch.as_tensor(stop).expand(n_items) if torch.as_tensor(stop).numel() == 1 else stop
            for k in range(n_items):
                if stopped_at[k] is None and bool(stop[k]):
                    stopped_at[k] = i
            if all(s is not None for s in stopped_at):  # an MEI is the input of its last step: no update after it
                break
            kept = x.detach().clone()
            x.grad = grad
            optimizer.step()
            for postprocessor in method.postprocessors:
                x.data = postprocessor(x.data, step(i))
            for k in range(n_items):  # a stopped item's rows keep the input it stopped at
                if stopped_at[k] is not None:
                    x.data[k * n_meis:(k + 1) * n_meis] = kept[k * n_meis:(k + 1) * n_meis]
    with torch.no_grad():
        meis = method.parameterisation(x)
        return meis, objective(method.transform.at_evaluation(meis), row_items), stopped_at


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 5), nn.ELU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4))


CONFIGS = {
    "default preset, 25 steps": default(SHAPE, {"mean": [0.2], "std": [1.0]}, iterations=25),
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
    expected_meis, expected_scores, expected_steps = reference_mei(objective, CONFIGS[name], seeds, SHAPE)
    result = batched_gradient_ascent(objective, CONFIGS[name], seeds, SHAPE)
    assert expected_meis.shape == (len(seeds) * result.n_meis, *SHAPE)
    assert torch.equal(result.meis, expected_meis)
    assert torch.equal(result.scores, expected_scores)
    assert result.n_iterations == expected_steps
    if CONFIGS[name]["stopper"]["path"] == "NumIterations":
        assert expected_steps == [CONFIGS[name]["stopper"]["kwargs"]["num_iterations"]] * len(seeds)


def test_items_stopping_once_converged_at_different_steps_are_the_reference_loops_bitwise():
    objective = UnitObjective(SettledAndRestless(size=SHAPE[-1]), [0, 1, 0, 1])
    config = default(SHAPE, {"mean": [0.2], "std": [1.0]}, max_iterations=30, tolerance=1e-5)
    seeds = [0, 5, 9, 3]
    expected_meis, expected_scores, expected_steps = reference_mei(objective, config, seeds, SHAPE)
    result = batched_gradient_ascent(objective, config, seeds, SHAPE)
    assert result.stop_reasons == ["converged"] * 4 and len(set(expected_steps)) > 1
    assert result.n_iterations == expected_steps
    # the engine drops stopped items' rows from the forward pass: the restless item's last steps run
    # in a batch of one, where matrix kernels round differently (the engine's batch-invariance tolerance)
    torch.testing.assert_close(result.meis, expected_meis, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.scores, expected_scores, rtol=1e-5, atol=1e-6)
    stopped = [k for k, reason in enumerate(result.stop_reasons) if reason == "converged"]
    assert torch.equal(result.meis[stopped], expected_meis[stopped])  # frozen where it stopped, bitwise
