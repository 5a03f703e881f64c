"""The published presets (mei_core.presets: hoefling2024, walker2019, mds, sinzlab_default), each
against the formulas of the code it comes from; < 30 s."""

from __future__ import annotations

import torch

from mei_core import presets
from mei_core.methods import batched_gradient_ascent
from mei_core.objectives import IncreaseObjective, SliceMeanReducer
from openretina_like import SessionModel

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- hoefling2024


def openretina_cli_mei(model: torch.nn.Module, neuron: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """openretina 1.1.1's CLI MEI (``cli/visualize_model_neurons.py`` with ``optimize_stimulus``),
    written out: the start ``0.1·randn`` projected by ``ChangeNormJointlyClipRangeSeparately``, then
    10 × (objective, range penalty, SGD lr 100 step, the same projection)."""
    ranges, norm = presets.HOEFLING2024_RANGES, presets.HOEFLING2024_NORM

    def project(x: torch.Tensor) -> torch.Tensor:
        x_norm = torch.linalg.vector_norm(x.view(len(x), -1), dim=-1)
        renorm = x * (norm / x_norm).view(len(x), *[1] * (x.dim() - 1))
        return torch.stack([torch.clamp(renorm[:, i], min=lo, max=hi) for i, (lo, hi) in enumerate(ranges)], dim=1)

    stimulus = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    stimulus.data = project(stimulus.data * 0.1)
    optimizer = torch.optim.SGD([stimulus], lr=100.0)
    for _ in range(10):
        responses = model(stimulus, data_key="session_a").squeeze(0)  # T'×N
        objective = responses[:, [neuron]].mean(dim=-1).narrow(0, 10, 10).mean(dim=0)
        loss = -objective
        penalty = 0.0
        for i, (lo, hi) in enumerate(ranges):
            penalty += torch.sum(torch.relu(lo - stimulus[:, i]))
            penalty += torch.sum(torch.relu(stimulus[:, i] - hi))
        penalty += torch.relu(torch.norm(stimulus) - norm)
        loss += penalty * 0.1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stimulus.data = project(stimulus.data)
    return stimulus.detach()


def test_hoefling2024_is_bitwise_openretinas_cli_loop_from_the_same_seed():
    torch.manual_seed(0)
    model = SessionModel(n_neurons=3, channels=2, frames_kernel=5, size=8).eval()
    shape = (2, 30, 8, 8)  # T' = 26 frames: the objective's window 10–20 lies inside
    for neuron, seed in ((0, 7), (2, 11)):
        objective = IncreaseObjective(model, [neuron], data_key="session_a", response_reducer=SliceMeanReducer(axis=0, start=10, length=10))
        ours = batched_gradient_ascent(objective, presets.preset("hoefling2024"), seeds=[seed], shape=shape)
        theirs = openretina_cli_mei(model, neuron, seed, shape)
        assert ours.n_iterations == [10]
        assert torch.equal(ours.meis, theirs), (ours.meis - theirs).abs().max()
    # both items in one batch: the same MEIs up to this model's own batch dependence (its forward of
    # two rows differs from two forwards of one row in the last bit)
    both = IncreaseObjective(model, [0, 2], data_key="session_a", response_reducer=SliceMeanReducer(axis=0, start=10, length=10))
    batched = batched_gradient_ascent(both, presets.preset("hoefling2024"), seeds=[7, 11], shape=shape).meis
    theirs = torch.cat([openretina_cli_mei(model, 0, 7, shape), openretina_cli_mei(model, 2, 11, shape)])
    torch.testing.assert_close(batched, theirs, rtol=0, atol=2e-6)
    # without the initial projection the loop starts elsewhere and ends elsewhere
    unprojected = batched_gradient_ascent(both, {**presets.preset("hoefling2024"), "project_initial": False}, seeds=[7, 11], shape=shape).meis
    assert (unprojected - theirs).abs().max() > 0.1
