import math

import pytest
import torch
from torch import nn

from mei_core.components import Step
from mei_core.objectives import Objective
from mei_core.regularizers import RangeRegularizationLoss
from mei_core.objectives import (
    ContrastiveNeuronObjective,
    DecreaseObjective,
    IncreaseObjective,
    InnerNeuronObjective,
    MeanReducer,
    SliceMeanReducer,
)

torch.set_num_threads(1)


class FixedResponses(nn.Module):
    """Answers ``B×T×N`` responses read off the input: response[b, t, n] = x[b, 0, t, 0, n]."""

    def __init__(self):
        super().__init__()
        self.keys: list = []

    def forward(self, x, data_key=None):
        self.keys.append(data_key)
        return x[:, 0, :, 0, :]


class LinearVideoModel(nn.Module):
    """A linear map from the video (B×C×T×H×W) to B×T'×N, with T' = T − 1 (a 2-frame temporal kernel)."""

    def __init__(self, channels=2, height=3, width=3, neurons=4):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(neurons, channels, 2, height, width, generator=gen))

    def forward(self, x, data_key=None):
        frames = x.shape[2] - 1
        out = [torch.einsum("bcthw,ncthw->bn", x[:, :, t : t + 2], self.weight) for t in range(frames)]
        return torch.stack(out, dim=1)


def video_of(responses):
    """A video whose FixedResponses answer is ``responses`` (B×T×N)."""
    return responses[:, None, :, None, :].clone()


def all_rows(n):
    return torch.arange(n)


# ------------------------------------------------------------------------------------ reducers


def test_mean_and_slice_mean_reducers():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 10.0, 2.0]])
    assert torch.allclose(MeanReducer()(r), torch.tensor([2.5, 3.0]))
    assert torch.allclose(MeanReducer(axis=0)(r), torch.tensor([2.5, 3.0]))
    assert torch.allclose(SliceMeanReducer(axis=0, start=1, length=2)(r), torch.tensor([2.5, 5.0]))
    assert torch.allclose(SliceMeanReducer(axis=0, start=3, length=1)(r), torch.tensor([4.0, 2.0]))
    # extra trailing dims (clusters) are kept
    stacked = torch.stack([r, 2 * r], dim=-1)
    assert torch.allclose(MeanReducer()(stacked), torch.tensor([[2.5, 5.0], [3.0, 6.0]]))


def openretina_slice_mean(response: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """openretina 1.1.1's SliceMeanReducer.forward on one unbatched response T'(×K), written out."""
    available = response.shape[0]
    cut = min(available - start, length)
    if cut <= 0:
        return response[: min(length, available)].mean(0)
    return response[start : start + cut].mean(0)


@pytest.mark.parametrize("start, length", [(1, 2), (2, 5), (3, 10), (4, 2), (9, 3)])
def test_a_slice_past_the_response_is_cut_or_falls_back_to_the_start_like_openretina(start, length):
    responses = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3) ** 1.5  # B×T'×K
    reducer = SliceMeanReducer(axis=0, start=start, length=length)
    expected = torch.stack([openretina_slice_mean(row, start, length) for row in responses])
    if start >= 4:
        with pytest.warns(RuntimeWarning, match="has only 4 frames"):
            reduced = reducer(responses)
    else:
        reduced = reducer(responses)
    assert torch.equal(reduced, expected)


def test_slice_mean_refuses_an_empty_or_negative_slice():
    with pytest.raises(ValueError, match="length must be >= 1"):
        SliceMeanReducer(axis=0, start=0, length=0)
    with pytest.raises(ValueError, match="start must be >= 0"):
        SliceMeanReducer(axis=0, start=-1, length=2)


# ------------------------------------------------------------------------------ increase/decrease


def test_increase_single_neurons_and_groups_per_row():
    responses = torch.tensor(
        [
            [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]],
            [[0.0, 10.0, 20.0], [2.0, 30.0, 40.0]],
            [[5.0, 6.0, 7.0], [5.0, 8.0, 9.0]],
        ]
    )  # B=3, T=2, N=3
    model = FixedResponses()
    objective = IncreaseObjective(model, [0, [1, 2], [2]], data_key="session_a")
    assert isinstance(objective, Objective)
    values = objective(video_of(responses), all_rows(3))
    # row 0: neuron 0 → mean(1, 3) = 2; row 1: mean of neurons 1, 2 → mean(15, 35) = 25; row 2: neuron 2 → 8
    assert torch.allclose(values, torch.tensor([2.0, 25.0, 8.0]))
    assert model.keys[-1] == "session_a"
    sliced = IncreaseObjective(model, [0, [1, 2], [2]], response_reducer=SliceMeanReducer(0, 1, 1))
    assert torch.allclose(sliced(video_of(responses), all_rows(3)), torch.tensor([3.0, 35.0, 9.0]))
    assert model.keys[-1] is None


def test_increase_sub_batch_rows_and_row_alone_equals_batch():
    responses = torch.tensor([[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]], [[7.0, 8.0, 9.0]]])
    objective = IncreaseObjective(FixedResponses(), [[0, 1], 2, 1])
    full = objective(video_of(responses), all_rows(3))
    assert torch.allclose(full, torch.tensor([1.5, 6.0, 8.0]))
    # the sub-batch holds rows 2 and 0 of the whole batch, in that order
    sub = objective(video_of(responses[[2, 0]]), torch.tensor([2, 0]))
    assert torch.allclose(sub, torch.tensor([8.0, 1.5]))
    for b in range(3):
        assert torch.allclose(objective(video_of(responses[b : b + 1]), torch.tensor([b])), full[b : b + 1])


def test_increase_with_linear_model_matches_manual_and_has_gradients():
    torch.manual_seed(1)
    model = LinearVideoModel()
    x = torch.randn(2, 2, 5, 3, 3, requires_grad=True)
    objective = IncreaseObjective(model, [[0, 3], 1])
    values = objective(x, all_rows(2))
    out = model(x)  # 2×4×4
    expected = torch.stack([out[0, :, [0, 3]].mean(-1).mean(), out[1, :, 1].mean()])
    assert torch.allclose(values, expected, atol=1e-5)
    values.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    alone = objective(x[1:].detach(), torch.tensor([1]))
    assert torch.allclose(alone, values[1:].detach(), atol=1e-5)


def test_decrease_is_negative_increase():
    responses = torch.randn(3, 4, 5)
    groups = [1, [0, 4], [2, 3, 4]]
    inc = IncreaseObjective(FixedResponses(), groups)(video_of(responses), all_rows(3))
    dec = DecreaseObjective(FixedResponses(), groups)(video_of(responses), all_rows(3))
    assert torch.allclose(dec, -inc)


def test_increase_neuron_out_of_range():
    with pytest.raises(IndexError, match="neuron index 7"):
        IncreaseObjective(FixedResponses(), [7])(video_of(torch.zeros(1, 2, 3)), all_rows(1))


# ------------------------------------------------------------------------------------ inner neuron


class TwoLayerModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.core = nn.Sequential()
        self.core.add_module("features", nn.Identity())
        self.readout = nn.Identity()

    def forward(self, x, data_key=None):
        return self.readout(self.core(x)).mean(dim=(1, 3, 4))[..., None]


def test_inner_neuron_picks_channel_centre_per_row_and_removes_hook():
    model = TwoLayerModel()
    x = torch.zeros(2, 3, 4, 5, 3)  # B×C×T×H×W, centre (2, 1)
    x[0, 2, :, 2, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    x[0, 1, :, 2, 1] = 100.0  # another channel of row 0: ignored
    x[0, 2, :, 0, 0] = 100.0  # off-centre: ignored
    x[1, 0, :, 2, 1] = torch.tensor([4.0, 4.0, 8.0, 8.0])
    objective = InnerNeuronObjective(model, "core.features", [2, 0])
    values = objective(x, all_rows(2))
    assert torch.allclose(values, torch.tensor([2.5, 6.0]))
    assert torch.allclose(objective(x[1:], torch.tensor([1])), values[1:])
    sliced = InnerNeuronObjective(model, "core.features", [2, 0], response_reducer=SliceMeanReducer(0, 2, 2))
    assert torch.allclose(sliced(x, all_rows(2)), torch.tensor([3.5, 8.0]))
    for module in model.modules():
        assert len(module._forward_hooks) == 0


def test_inner_neuron_image_layer_output():
    class ImageLayerModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.Identity()

        def forward(self, x):
            return self.pool(x[:, :, 0]).mean(dim=(2, 3))[:, None, :]

    x = torch.zeros(1, 2, 3, 3, 3)
    x[0, 1, 0, 1, 1] = 7.0
    assert torch.allclose(InnerNeuronObjective(ImageLayerModel(), "pool", [1])(x, all_rows(1)), torch.tensor([7.0]))


def test_inner_neuron_unknown_layer_lists_available():
    with pytest.raises(ValueError, match=r"'nope'.*'core'.*'core.features'.*'readout'"):
        InnerNeuronObjective(TwoLayerModel(), "nope", [0])


def test_inner_neuron_removes_hook_on_error():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Identity()

        def forward(self, x):
            self.layer(x)
            raise RuntimeError("boom")

    model = Failing()
    with pytest.raises(RuntimeError, match="boom"):
        InnerNeuronObjective(model, "layer", [0])(torch.zeros(1, 1, 2, 3, 3), all_rows(1))
    assert len(model.layer._forward_hooks) == 0


# ------------------------------------------------------------------------------------- contrastive


def test_contrastive_matches_hand_formula_per_row():
    responses = torch.tensor(
        [
            [[1.0, 3.0, 0.0, 2.0], [3.0, 1.0, 2.0, 2.0]],
            [[0.5, 0.0, 4.0, 1.0], [1.5, 2.0, 2.0, 3.0]],
        ]
    )  # B=2, T=2, N=4
    on = [[0], [1, 2]]
    off = [[3], [1, 2]]
    t = 1.6
    objective = ContrastiveNeuronObjective(FixedResponses(), on, off, temperature=t)
    values = objective(video_of(responses), all_rows(2))
    r = responses.mean(1)  # time means: row0 [2, 2, 1, 2], row1 [1, 1, 3, 2]
    # row 0: on = neuron 0 → 2; off: neuron 3 → 2, mean(1, 2) → 1.5; K = 3
    row0 = 2 / t - torch.logsumexp(torch.tensor([2.0, 2.0, 1.5]) / t, 0) + math.log(3)
    # row 1: on = mean(neurons 1, 2) → 2; the off cluster [1, 2] is its own on cluster → dropped; K = 2
    row1 = 2 / t - torch.logsumexp(torch.tensor([2.0, r[1, 3].item()]) / t, 0) + math.log(2)
    assert torch.allclose(values, torch.stack([row0, row1]), atol=1e-6)
    alone = objective(video_of(responses[1:]), torch.tensor([1]))
    assert torch.allclose(alone, values[1:], atol=1e-6)


def test_contrastive_equal_responses_give_zero_and_bound():
    responses = torch.full((3, 5, 6), 0.7)
    clusters = [[0, 1], [2], [3, 4, 5]]
    objective = ContrastiveNeuronObjective(FixedResponses(), clusters, clusters, temperature=0.9)
    assert torch.allclose(objective(video_of(responses), all_rows(3)), torch.zeros(3), atol=1e-6)
    # a hugely dominant on cluster approaches log K (here K = 3: the on cluster itself is excluded from off)
    responses = torch.zeros(1, 2, 6)
    responses[..., 2] = 100.0
    value = ContrastiveNeuronObjective(FixedResponses(), [[2]], clusters)(video_of(responses), all_rows(1))
    assert torch.allclose(value, torch.tensor([math.log(3)]), atol=1e-5)
    # no off clusters: the value is identically 0
    none = ContrastiveNeuronObjective(FixedResponses(), [[2]], [])(video_of(responses), all_rows(1))
    assert torch.allclose(none, torch.zeros(1))


def test_contrastive_with_linear_model_and_slice_reducer():
    torch.manual_seed(2)
    model = LinearVideoModel()
    x = torch.randn(2, 2, 6, 3, 3)
    reducer = SliceMeanReducer(0, 1, 3)
    objective = ContrastiveNeuronObjective(model, [[0], [1, 2]], [[3], [0]], temperature=2.0, response_reducer=reducer)
    values = objective(x, all_rows(2))
    out = model(x).detach()[:, 1:4]  # B×3×N
    s = out.mean(1)
    row0 = torch.tensor([s[0, 0], s[0, 3]])  # [0] is its own on cluster
    row1 = torch.tensor([s[1, 1:3].mean(), s[1, 3], s[1, 0]])
    expected = torch.stack(
        [
            row0[0] / 2 - torch.logsumexp(row0 / 2, 0) + math.log(2),
            row1[0] / 2 - torch.logsumexp(row1 / 2, 0) + math.log(3),
        ]
    )
    assert torch.allclose(values, expected, atol=1e-5)


# ------------------------------------------------------------------------------------------ range


def step_for(n):
    return Step(i_iter=0, rows=torch.arange(n), row_items=torch.arange(n))


def test_range_regularization_zero_inside_and_per_row_excess():
    reg = RangeRegularizationLoss([[-1.0, 1.0], [0.0, None]], max_norm=None, factor=2.0)
    x = torch.zeros(3, 2, 2, 2, 2)
    x[0, 0] = 0.5
    x[0, 1] = 3.0  # no upper bound for channel 1
    x[1, 0, 0, 0, 0] = 1.5  # 0.5 above
    x[1, 0, 1, 1, 1] = -3.0  # 2 below
    x[2, 1, 0, 1, 0] = -0.25  # 0.25 below 0
    penalty = reg(x, step_for(3))
    assert torch.allclose(penalty, torch.tensor([0.0, 2 * 2.5, 2 * 0.25]))
    squared = RangeRegularizationLoss([[-1.0, 1.0], [0.0, None]], squared=True)(x, step_for(3))
    assert torch.allclose(squared, torch.tensor([0.0, 0.25 + 4.0, 0.0625]))
    # a row alone gets the same penalty
    assert torch.allclose(reg(x[1:2], step_for(1)), penalty[1:2])


def test_range_regularization_norm_term():
    reg = RangeRegularizationLoss([[None, None]], max_norm=2.0, factor=0.5)
    x = torch.zeros(2, 1, 1, 2, 2)
    x[0, 0, 0, 0, 0] = 1.0  # norm 1 < 2
    x[1, 0, 0] = 3.0  # norm 6 → excess 4
    assert torch.allclose(reg(x, step_for(2)), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="2 channel ranges"):
        RangeRegularizationLoss([[0, 1], [0, 1]])(x, step_for(2))


def test_to_device_returns_self():
    model = LinearVideoModel()
    for objective in (
        IncreaseObjective(model, [0]),
        DecreaseObjective(model, [[0, 1]]),
        ContrastiveNeuronObjective(model, [[0]], [[1]]),
    ):
        assert objective.to("cpu") is objective
    assert InnerNeuronObjective(TwoLayerModel(), "readout", [0]).to("cpu") is not None
