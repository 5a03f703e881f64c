"""A model that answers NaN for some items: those items stop at once, keep their last finite input,
and are reported; the other items are untouched."""

from __future__ import annotations

import torch

from mei_core import batched_gradient_ascent, default_preset
from mei_core.objectives import UnitObjective

from helpers import LinearNeurons, gabor


class BreaksOnUnitOne(torch.nn.Module):
    """Two linear Gabor units; unit 1 answers NaN once its response passes ``limit``."""

    def __init__(self, limit: float):
        super().__init__()
        self.linear = LinearNeurons(torch.stack([gabor(), gabor(theta=1.0)]))
        self.limit = limit

    def forward(self, x):
        out = self.linear(x)
        broken = torch.zeros_like(out, dtype=torch.bool)
        broken[:, 1] = out[:, 1] > self.limit
        return torch.where(broken, torch.full_like(out, float("nan")), out)


def test_a_non_finite_objective_stops_its_item_and_leaves_the_others_bitwise_alone():
    # with a per-item stopper the check runs every step on the CPU: the item stops at once, its
    # last finite input kept (without one, within NON_FINITE_CHECK_EVERY steps)
    config = default_preset(norm=8.0, iterations=40)
    config["stopper"] = {"path": "EarlyStopper", "kwargs": {"patience": 100, "max_iterations": 40}}
    model = BreaksOnUnitOne(limit=3.0)
    result = batched_gradient_ascent(UnitObjective(model, [0, 1, 0]), config, seeds=[0, 1, 2], shape=(1, 24, 24))
    assert result.stop_reasons == ["max_iterations", "non_finite", "max_iterations"]
    assert result.n_iterations[1] < 40 and result.n_iterations[0] == 40
    assert torch.isfinite(result.meis).all()  # the broken item keeps its last (finite) input
    assert torch.isnan(result.scores[1]) and torch.isfinite(result.scores[[0, 2]]).all()
    alone = batched_gradient_ascent(UnitObjective(model, [0, 0]), config, seeds=[0, 2], shape=(1, 24, 24))
    assert torch.equal(alone.meis, result.meis[[0, 2]])


def test_without_a_per_item_stopper_a_broken_item_is_still_stopped_and_reported():
    result = batched_gradient_ascent(UnitObjective(BreaksOnUnitOne(limit=3.0), [0, 1]), default_preset(norm=8.0, iterations=40),
                                     seeds=[0, 1], shape=(1, 24, 24))
    assert result.stop_reasons == ["num_iterations", "non_finite"] and result.n_iterations[1] < 40
