"""Converged stopping: each item stops once its own MEI and score have settled, frozen while the
others run, the same alone as in any batch, with its stop reason recorded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mei_core import batched_gradient_ascent
from mei_core.objectives import UnitObjective
from mei_core.presets import WARM_STEPS, default
from mei_core.stoppers import Converged

from helpers import LinearNeurons, SettledAndRestless, gabor, small_cnn

torch.set_num_threads(1)

SHAPE = (1, 24, 24)
UNIT_STATS = {"mean": [0.0], "std": [1.0]}


def converged_default(max_iterations: int = 40, **stopper) -> dict:
    config = default(SHAPE, UNIT_STATS, max_iterations=max_iterations)
    config["stopper"]["kwargs"].update(stopper)
    return config


class ClimbingSecondUnit(torch.nn.Module):
    """Two linear Gabor neurons; the second's response also rises by 0.1 with every forward pass, so
    its score never settles while its MEI does."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = LinearNeurons(torch.stack([gabor(), gabor(theta=1.5)]))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x) + torch.tensor([0.0, 0.1 * self.calls])


def test_an_item_that_converges_is_frozen_while_the_other_runs_on_and_each_says_why_it_stopped():
    # (the engine updates its per-item records in place once an item has stopped: the stopper
    # must compare with a copy of the last score, not with the record itself, or the climbing item
    # would look settled from then on)
    result = batched_gradient_ascent(UnitObjective(ClimbingSecondUnit(), [0, 1]), converged_default(), [0, 1], SHAPE)
    assert result.stop_reasons == ["converged", "max_iterations"]
    settled_at = result.n_iterations[0]
    assert WARM_STEPS <= settled_at < 20 and result.n_iterations[1] == 40
    # frozen where it stopped: exactly the MEI of a run of that many steps (same blur schedule, held)
    fixed = converged_default()
    fixed["stopper"] = {"path": "NumIterations", "kwargs": {"num_iterations": settled_at}}
    alone = batched_gradient_ascent(UnitObjective(ClimbingSecondUnit(), [0]), fixed, [0], SHAPE)
    torch.testing.assert_close(result.meis[0], alone.meis[0], rtol=0, atol=1e-6)
    assert torch.nn.functional.cosine_similarity(result.meis[0].flatten(), gabor().flatten(), dim=0) > 0.9


def test_an_item_swinging_between_two_mei_for_ever_has_settled_too():
    # a step too large for the cos(k · f·x) unit swings it between two equally good MEIs
    result = batched_gradient_ascent(UnitObjective(SettledAndRestless(), [1]), converged_default(), [0], SHAPE)
    assert result.stop_reasons == ["converged"] and result.n_iterations[0] < 20
    swinging = converged_default(patience=3)
    swinging["stopper"]["kwargs"]["min_iterations"] = 0
    stopper = Converged(**swinging["stopper"]["kwargs"])
    a, b = torch.linspace(-1, 1, 16), torch.linspace(1, -1, 16).roll(3)
    stops = [stopper(SimpleNamespace(i_iter=i, progress=torch.tensor([1.0]), input_=(a if i % 2 else b)[None]))[0].item() for i in range(6)]
    assert stops == [False, False, False, False, True, True]  # settled against two steps back from step 2 on


@pytest.mark.parametrize("tolerances", [{"score_tolerance": 1e-5, "input_tolerance": 1e-5},
                                        {"score_tolerance": 1e-4, "input_tolerance": 2.0}], ids=["both", "score alone"])
def test_an_items_mei_stop_step_and_reason_are_the_same_alone_as_in_a_batch_of_others_stopping_earlier_or_later(tolerances):
    model = small_cnn(n_units=20)
    config = converged_default(min_iterations=4, **tolerances)
    units, seeds = [4] + list(range(5, 20)), [7] + list(range(100, 115))
    batch = batched_gradient_ascent(UnitObjective(model, units), config, seeds, SHAPE)
    assert len(set(batch.n_iterations)) > 1 and set(batch.stop_reasons) == {"converged"}
    for index in (0, batch.n_iterations.index(max(batch.n_iterations))):
        alone = batched_gradient_ascent(UnitObjective(model, [units[index]]), config, [seeds[index]], SHAPE)
        assert (alone.n_iterations[0], alone.stop_reasons[0]) == (batch.n_iterations[index], batch.stop_reasons[index])
        # the batch-invariance tolerance of the engine (convolution kernels depend on the batch size)
        torch.testing.assert_close(batch.meis[index], alone.meis[0], rtol=1e-4, atol=1e-5)


def test_the_stopper_reads_only_each_items_own_history_and_waits_for_the_warm_phase_and_patience():
    stopper = Converged(score_tolerance=1e-3, input_tolerance=1e-3, patience=2, min_iterations=3, max_iterations=100)
    still = torch.linspace(-1, 1, 16)
    decisions = []
    for step in range(7):
        moving = torch.roll(still, step)  # item 1's MEI moves every step; item 0's stays
        state = SimpleNamespace(i_iter=step, progress=torch.tensor([2.0, 2.0]), input_=torch.stack([still, moving]))
        stop, reason = stopper(state)
        decisions.append(stop.tolist())
    # item 0 settles from step 1 on (two settled steps at step 2) but may stop only from step 3
    assert decisions == [[False, False], [False, False], [False, False], [True, False], [True, False], [True, False], [True, False]]
    assert reason.names == ("converged", "max_iterations")


def test_a_score_that_still_climbs_keeps_an_item_running_even_when_its_mei_has_settled():
    stopper = Converged(score_tolerance=1e-3, input_tolerance=1e-3, patience=1, min_iterations=0, max_iterations=100)
    mei = torch.linspace(-1, 1, 16)[None]
    stops = [stopper(SimpleNamespace(i_iter=step, progress=torch.tensor([1.0 + 0.01 * step]), input_=mei))[0].item()
             for step in range(4)]
    assert stops == [False, False, False, False]
