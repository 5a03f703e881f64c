"""Connectome models: forward values by hand and against a dense loop reference, the CSR product's
gradients, per-row independence, saliency, fitting, tables and target losses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from quality import at_least, at_most
import scipy.sparse as sp
import torch

from mei_core.models.connectome import (
    MultilayeredNetwork,
    TargetActivation,
    activation_table,
    csr_matmul,
    random_connectome,
    saliency,
    target_loss,
    train_model,
)

torch.set_num_threads(1)

F64 = torch.float64


def dense_reference(
    weights: np.ndarray,
    sensory: list[int],
    x: torch.Tensor,
    slope: np.ndarray,
    bias: np.ndarray,
    threshold: float,
    groups: list | None = None,
    divisive: dict | None = None,
    strength: dict | None = None,
) -> torch.Tensor:
    """The forward written out plainly: float64, one row and one divisive edge at a time."""
    n = weights.shape[0]
    w = torch.tensor(weights, dtype=F64)
    edges = []  # (post, pre, weight, strength) of the divisive edges, removed from w
    if divisive:
        for post, pre in zip(*np.nonzero(weights)):
            if groups[pre] in divisive and groups[post] in divisive[groups[pre]]:
                edges.append((post, pre, weights[post, pre], strength[groups[pre]]))
                w[post, pre] = 0.0
    slope, bias = torch.tensor(slope, dtype=F64), torch.tensor(np.abs(bias), dtype=F64)
    n_rows, _, n_layers = x.shape
    out = torch.zeros(n_rows, n, n_layers, dtype=F64)
    for b in range(n_rows):
        u = x[b].to(F64).clone()
        u[u < threshold] = 0.0
        u = u.clamp(max=1.0)
        a = torch.zeros(n, dtype=F64)
        a[sensory] = u[:, 0]
        for t in range(n_layers):
            pre = w @ a
            s = slope.clone()
            if edges:
                total = torch.zeros(n, dtype=F64)
                for post, pre_i, weight, st in edges:
                    total[post] += weight * a[pre_i] * st
                s = s * torch.clamp(1.0 + total, min=0.0)
            z = s * pre + bias
            a = torch.tanh(torch.where(z >= threshold, z, torch.zeros_like(z)))
            if t < n_layers - 1:
                a[sensory] = torch.clamp(a[sensory] + u[:, t + 1], max=1.0)
            out[b, :, t] = a
    return out


def small_net(seed: int = 0, n: int = 60, synapses: int = 600, n_sensory: int = 8):
    return random_connectome(n, synapses, n_sensory, seed=seed, n_groups=5, n_sensory_groups=2)


# ------------------------------------------------------------------ forward by hand


def test_forward_on_a_hand_checked_chain():
    # 0 (sensory) -> 1 (w 0.5) -> 2 (w 0.8); 0 -> 3 (w 0.001, below threshold unless biased)
    w = np.zeros((4, 4))
    w[1, 0], w[2, 1], w[3, 0] = 0.5, 0.8, 0.001
    model = MultilayeredNetwork(w, [0], num_layers=3, tanh_steepness=1.0, dtype=F64)
    x = torch.tensor([[[0.3, 0.005, 2.0]]], dtype=F64)  # step 1 below threshold -> 0, step 2 capped at 1
    out = model(x)
    expected = torch.zeros(1, 4, 3, dtype=F64)
    expected[0, :, 0] = torch.tensor([0.0, math.tanh(0.15), 0.0, 0.0], dtype=F64)  # + input of step 1 (0)
    expected[0, :, 1] = torch.tensor([1.0, 0.0, math.tanh(0.8 * math.tanh(0.15)), 0.0], dtype=F64)  # + step 2's
    expected[0, :, 2] = torch.tensor([0.0, math.tanh(0.5), 0.0, 0.0], dtype=F64)  # last layer: nothing added
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)

    # a group bias (used as |bias|) lifts neuron 3 above the threshold
    biased = MultilayeredNetwork(w, [0], num_layers=1, tanh_steepness=1.0, idx_to_group=["s", "a", "a", "b"],
                                 bias_dict={"b": -0.02}, dtype=F64)
    out = biased(torch.tensor([[[0.3]]], dtype=F64))
    assert out[0, 3, 0].item() == pytest.approx(math.tanh(0.02 + 0.0003), abs=1e-15)
    assert out[0, 1, 0].item() == pytest.approx(math.tanh(0.15), abs=1e-15)


def test_sensory_activation_plus_input_is_capped_at_one():
    w = np.array([[2.0]])  # a sensory neuron exciting itself
    model = MultilayeredNetwork(w, [0], num_layers=3, tanh_steepness=1.0, dtype=F64)
    out = model(torch.tensor([[[0.9, 0.8, 0.5]]], dtype=F64))[0, 0]
    assert out[0].item() == 1.0  # tanh(1.8) + 0.8 > 1
    assert out[1].item() == pytest.approx(min(1.0, math.tanh(2.0) + 0.5), abs=1e-15)
    assert out[2].item() == pytest.approx(math.tanh(2.0), abs=1e-15)


def test_group_slopes_and_biases_match_the_dense_reference():
    net = small_net(1)
    groups = [net.idx_to_group[i] for i in range(60)]
    slope_dict = {"type_0": 2.0, "type_3": 8.0}
    bias_dict = {"type_1": -0.05, "type_2": 0.1}
    model = MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=4, idx_to_group=net.idx_to_group,
                                slope_dict=slope_dict, bias_dict=bias_dict, default_bias=0.01, dtype=F64)
    x = torch.rand(3, 8, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 1.4 - 0.1
    slope = np.array([slope_dict.get(g, 5.0) for g in groups])
    bias = np.array([bias_dict.get(g, 0.01) for g in groups])
    expected = dense_reference(net.weights.toarray(), list(net.sensory_indices), x, slope, bias, 0.01)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    assert model.groups == sorted(set(groups))


def test_divisive_normalisation_equals_the_explicit_edge_loop():
    net = small_net(2, n=80, synapses=1200)
    groups = [net.idx_to_group[i] for i in range(80)]
    inhibitory = net.inhibitory_groups  # two of the five types
    divisive = {inhibitory[0]: ["type_1", "type_2", "type_4"], inhibitory[1]: ["type_0", "type_3"]}
    strength = {inhibitory[0]: 0.7, inhibitory[1]: 40.0}  # row-normalised weights are small
    model = MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=4, idx_to_group=net.idx_to_group,
                                divisive_normalization=divisive, divisive_strength=strength, dtype=F64)
    x = torch.rand(4, 8, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    expected = dense_reference(net.weights.toarray(), list(net.sensory_indices), x, np.full(80, 5.0), np.zeros(80),
                               0.01, groups=groups, divisive=divisive, strength=strength)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    n_divisive = model.divisive_weights._nnz()
    assert n_divisive > 20 and model.weights._nnz() + n_divisive == net.weights.nnz
    # some slope factors 1 + Σ w·a·strength are negative: the relu is exercised too
    states = model(x)[:, :, :-1].detach().permute(0, 2, 1)  # what layers 1.. read
    strength_per_neuron = model.divisive_strength[model.divisive_slot].detach()
    gain = 1 + states @ (model.divisive_weights.to_dense() * strength_per_neuron).T
    assert bool((gain < 0).any()) and bool((gain > 0.5).any())


def test_divisive_normalisation_by_hand_and_its_checks():
    # 0 sensory (s) -> 1 (i, w 1) ; 0 -> 2 (e, w 0.5) ; 1 -> 2 (w -0.4, divisive: leaves W, scales the slope)
    w = np.zeros((3, 3))
    w[1, 0], w[2, 0], w[2, 1] = 1.0, 0.5, -0.4
    model = MultilayeredNetwork(w, [0], num_layers=2, tanh_steepness=1.0, idx_to_group=["s", "i", "e"],
                                divisive_normalization={"i": ["e"]}, divisive_strength=2.0, dtype=F64)
    out = model(torch.tensor([[[0.6, 0.6]]], dtype=F64))[0]
    a1 = math.tanh(0.6)
    assert out[1, 0].item() == pytest.approx(a1, abs=1e-15)
    assert out[2, 0].item() == pytest.approx(math.tanh(0.3), abs=1e-15)  # neuron 1 was silent: slope 1
    slope = max(0.0, 1.0 + (-0.4) * a1 * 2.0)  # neuron 0 is 0.6 again (input of step 1)
    assert out[2, 1].item() == pytest.approx(math.tanh(slope * 0.5 * 0.6), abs=1e-15)
    strong = MultilayeredNetwork(w, [0], num_layers=2, tanh_steepness=1.0, idx_to_group=["s", "i", "e"],
                                 divisive_normalization={"i": ["e"]}, divisive_strength={"i": 5.0}, dtype=F64)
    assert strong(torch.tensor([[[0.6, 0.6]]], dtype=F64))[0, 2, 1].item() == 0.0  # slope max(0, negative)
    with pytest.raises(ValueError, match="negative"):
        MultilayeredNetwork(np.abs(w), [0], idx_to_group=["s", "i", "e"], divisive_normalization={"i": ["e"]})
    with pytest.raises(ValueError, match="idx_to_group"):
        MultilayeredNetwork(w, [0], divisive_normalization={"i": ["e"]})


# ------------------------------------------------------------------ the CSR product and its gradients


def test_csr_product_gradient_against_dense_autograd_and_gradcheck():
    rng = np.random.default_rng(0)
    dense = sp.random(7, 5, density=0.4, random_state=1).toarray()
    model = MultilayeredNetwork(np.pad(dense, ((0, 0), (0, 2))), [0], dtype=F64)  # 7×7, the cached pair
    w, wt = model.weights, model.weights_t
    x = torch.tensor(rng.normal(size=(7, 3)), requires_grad=True)
    g = torch.tensor(rng.normal(size=(7, 3)))
    (grad,) = torch.autograd.grad((csr_matmul(w, wt, x) * g).sum(), x)
    x_dense = x.detach().clone().requires_grad_(True)
    w_dense = torch.tensor(np.pad(dense, ((0, 0), (0, 2))))
    (expected,) = torch.autograd.grad((w_dense @ x_dense * g).sum(), x_dense)
    torch.testing.assert_close(grad, expected, rtol=1e-13, atol=1e-13)
    assert torch.autograd.gradcheck(lambda v: csr_matmul(w, wt, v), (x,))
    assert torch.autograd.gradgradcheck(lambda v: csr_matmul(w, wt, v) ** 2, (x,))


def test_whole_model_gradcheck_for_input_and_parameters():
    net = random_connectome(20, 80, 4, seed=3, n_groups=3, n_sensory_groups=1)
    groups = [net.idx_to_group[i] for i in range(20)]
    divisive = {net.inhibitory_groups[0]: sorted({g for g in groups if g.startswith("type")})}
    model = MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=3, idx_to_group=net.idx_to_group,
                                default_bias=0.05, divisive_normalization=divisive, divisive_strength=0.5, dtype=F64)
    x = (torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.6 + 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(model, (x,))
    params = (model.slope.detach().clone().requires_grad_(True), model.raw_biases.detach().clone().requires_grad_(True),
              model.divisive_strength.detach().clone().requires_grad_(True))

    def with_params(slope, raw_biases, strength):
        return torch.func.functional_call(model, {"slope": slope, "raw_biases": raw_biases, "divisive_strength": strength},
                                          (x.detach(),))

    assert torch.autograd.gradcheck(with_params, params)


def test_csr_model_equals_a_dense_matrix_forward_on_a_larger_net():
    net = random_connectome(500, 10_000, 50, seed=4)
    model = MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=5, idx_to_group=net.idx_to_group)
    dense_model = MultilayeredNetwork(torch.tensor(net.weights.toarray()), net.sensory_indices, num_layers=5,
                                      idx_to_group=net.idx_to_group)  # the same weights given densely
    x = torch.rand(3, 50, 5, generator=torch.Generator().manual_seed(0))
    w = torch.tensor(net.weights.toarray())
    sensory = torch.as_tensor(net.sensory_indices)
    u = torch.where(x >= 0.01, x, torch.zeros(())).clamp(max=1.0)
    a = torch.zeros(3, 500)
    a[:, sensory] = u[:, :, 0]
    expected = []
    for t in range(5):  # dense batched forward, state rows = batch
        z = 5.0 * (a @ w.T)
        a = torch.tanh(torch.where(z >= 0.01, z, torch.zeros(())))
        if t < 4:
            a[:, sensory] = (a[:, sensory] + u[:, :, t + 1]).clamp(max=1.0)
        expected.append(a.clone())
    torch.testing.assert_close(model(x), torch.stack(expected, -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dense_model(x), model(x), rtol=0, atol=0)
    activity = model(x).mean(dim=(0, 1))
    assert bool((activity > 0.1).all() and (activity < 0.6).all()), activity  # neither dies nor saturates


def test_batch_rows_are_independent():
    net = small_net(5)
    model = MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=4, idx_to_group=net.idx_to_group)
    x = torch.rand(5, 8, 4, generator=torch.Generator().manual_seed(2))
    batch = model(x)
    for b in range(5):
        torch.testing.assert_close(model(x[b : b + 1])[0], batch[b], rtol=0, atol=1e-7)
        torch.testing.assert_close(model(x[b]), batch[b], rtol=0, atol=1e-7)  # S×L input -> n×L
    x = x.requires_grad_(True)
    model(x)[:, :, -1].sum().backward()
    alone = x.detach()[2:3].clone().requires_grad_(True)
    model(alone)[:, :, -1].sum().backward()
    torch.testing.assert_close(alone.grad[0], x.grad[2], rtol=0, atol=1e-6)


def test_device_and_dtype_moves_and_state_dict():
    net = small_net(6)
    model = MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=3, idx_to_group=net.idx_to_group)
    x = torch.rand(2, 8, 3, generator=torch.Generator().manual_seed(0))
    out32 = model(x)
    model = model.to(F64).to("cpu")
    assert model.weights.dtype == F64 and model.weights_t.dtype == F64 and model.weights.layout == torch.sparse_csr
    torch.testing.assert_close(model(x.to(F64)), out32.to(F64), rtol=1e-5, atol=1e-6)
    assert set(model.state_dict()) == {"slope", "raw_biases"}
    with pytest.raises(ValueError, match="expected input"):
        model(torch.rand(2, 8, 4, dtype=F64))
    with pytest.raises(ValueError, match="distinct"):
        MultilayeredNetwork(net.weights, [1, 1])


# ------------------------------------------------------------------ saliency


def test_saliency_by_hand_and_by_finite_differences():
    # 2 sensory -> neuron 2 (w 0.3, -0.2), one layer: a2 = tanh(5 (0.3 u0 - 0.2 u1)) when above threshold
    w = np.zeros((3, 3))
    w[2, 0], w[2, 1] = 0.3, -0.2
    model = MultilayeredNetwork(w, [0, 1], num_layers=1, dtype=F64)
    x = torch.tensor([[[0.5], [0.2]], [[0.9], [0.1]], [[0.005], [0.4]]], dtype=F64)  # row 2: u0 below threshold
    maps = saliency(model, x, {0: [2]})
    for b in range(2):
        z = 5 * (0.3 * x[b, 0, 0] - 0.2 * x[b, 1, 0])
        d = 1 - math.tanh(z) ** 2
        torch.testing.assert_close(maps[b, :, 0], torch.tensor([5 * 0.3 * d, -5 * 0.2 * d], dtype=F64))
    assert torch.equal(maps[2], torch.zeros(2, 1, dtype=F64))  # z < threshold and u0 thresholded away
    ixg = saliency(model, x, {0: [2]}, method="input_x_gradient")
    torch.testing.assert_close(ixg, x * maps)
    normed = saliency(model, x, {0: [2]}, normalize=True)
    torch.testing.assert_close(normed[0].abs().max(), torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(normed[0], maps[0] / maps[0].abs().max())
    assert torch.equal(normed[2], torch.zeros(2, 1, dtype=F64))

    net = small_net(7)
    deep = MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=3, idx_to_group=net.idx_to_group, dtype=F64)
    x = torch.rand(2, 8, 3, generator=torch.Generator().manual_seed(3), dtype=F64) * 0.6 + 0.2
    interest = {1: [20, 30], 2: [40]}
    maps = saliency(deep, x, interest)

    def signal(v):
        out = deep(v)
        return out[:, [20, 30], 1].sum(1) + out[:, 40, 2]

    eps = 1e-6
    for b, s, t in [(0, 0, 0), (1, 3, 1), (0, 5, 2), (1, 7, 0)]:
        up, down = x.clone(), x.clone()
        up[b, s, t] += eps
        down[b, s, t] -= eps
        numeric = (signal(up)[b] - signal(down)[b]) / (2 * eps)
        assert maps[b, s, t].item() == pytest.approx(numeric.item(), abs=1e-7)
    with pytest.raises(ValueError, match="unknown saliency"):
        saliency(deep, x, interest, method="smoothgrad")


# ------------------------------------------------------------------ training


@pytest.mark.quality
def test_train_model_reduces_validation_loss():
    net = random_connectome(120, 1500, 12, seed=8, n_groups=4, n_sensory_groups=1)
    kwargs = dict(num_layers=3, idx_to_group=net.idx_to_group)
    true_slopes = {"type_0": 2.0, "type_1": 9.0, "type_2": 3.0, "type_3": 7.0}
    teacher = MultilayeredNetwork(net.weights, net.sensory_indices, slope_dict=true_slopes, **kwargs)
    inputs = torch.rand(30, 12, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        truth = teacher(inputs)
    observed = np.arange(12, 120, 6)  # a subset of the neurons, at every layer
    frame = activation_table(truth, neuron_ids=observed).rename(columns={"activation": "value"})
    student = MultilayeredNetwork(net.weights, net.sensory_indices, **kwargs)
    before = student.slope.detach().clone()
    student, history = train_model(student, inputs, frame, epochs=40, lr=0.2, val_fraction=0.2, seed=1,
                                   param_change_penalty=1e-4)
    assert list(history.columns[:3]) == ["epoch", "train_loss", "val_loss"] and len(history) == 41
    at_most("last/first val loss", history.val_loss.iloc[-1] / history.val_loss.iloc[0], 0.4)
    at_most("last/first train loss", history.train_loss.iloc[-1] / history.train_loss.iloc[0], 0.4)
    fitted = dict(zip(student.groups, student.slope.detach().tolist()))
    assert all(abs(fitted[g] - v) < abs(5.0 - v) for g, v in true_slopes.items()), fitted  # moved towards the truth
    assert not torch.equal(student.slope.detach(), before)
    assert student.slope.requires_grad and student.slope.grad is None  # restored

    again = MultilayeredNetwork(net.weights, net.sensory_indices, **kwargs)
    _, history2 = train_model(again, inputs, frame, epochs=3, lr=0.2, seed=1, param_change_penalty=1e-4)
    pd.testing.assert_frame_equal(history2, history.iloc[:4].reset_index(drop=True))  # seeded: reproducible
    _, history3 = train_model(MultilayeredNetwork(net.weights, net.sensory_indices, **kwargs), inputs, frame,
                              epochs=0, seed=2)
    assert history3.val_loss.iloc[0] != history.val_loss.iloc[0]  # another split


# ------------------------------------------------------------------ tables and targets


def test_activation_table_for_a_batch():
    activations = torch.arange(3 * 7 * 2, dtype=torch.float32).reshape(3, 7, 2)
    groups = {i: f"g{i % 3}" for i in range(7)}
    table = activation_table(activations, idx_to_group=groups)
    assert list(table.columns) == ["batch", "neuron", "layer", "activation", "group"] and len(table) == 42
    for row in table.sample(10, random_state=0).itertuples():
        assert row.activation == activations[row.batch, row.neuron, row.layer].item()
        assert row.group == groups[row.neuron]
    subset = activation_table(activations, neuron_ids=[5, 1])
    assert len(subset) == 3 * 2 * 2 and list(subset.neuron[:4]) == [5, 5, 1, 1] and "group" not in subset
    single = activation_table(activations[1])
    assert set(single.batch) == {0} and len(single) == 14


def test_target_losses_for_a_batch_of_different_targets():
    activations = torch.rand(3, 10, 2, generator=torch.Generator().manual_seed(0))
    frame = pd.DataFrame({
        "batch": [0, 0, 1, 2, 2, 2],
        "layer": [0, 1, 1, 0, 0, 1],
        "neuron": [3, 4, 9, 0, 1, 2],
        "value": [0.5, 1.0, 0.0, 0.2, 0.3, 0.4],
    })
    target = TargetActivation(frame)
    errors: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for row in frame.itertuples():
        errors[row.batch].append((activations[row.batch, row.neuron, row.layer].item() - row.value) ** 2)
    expected = torch.tensor([np.mean(errors[b]) for b in range(3)], dtype=torch.float32)
    assert target.batch_size == 3
    torch.testing.assert_close(target.loss(activations), expected)
    torch.testing.assert_close(target.loss(activations[[2, 0]], rows=torch.tensor([2, 0])), expected[[2, 0]])
    rows, layers, neurons, values = (torch.tensor(frame[c].to_list()) for c in ("batch", "layer", "neuron", "value"))
    torch.testing.assert_close(target_loss(activations, rows, layers, neurons, values), expected)
    absolute = target_loss(activations, rows, layers, neurons, values, p=1)
    assert absolute[1].item() == pytest.approx(abs(activations[1, 9, 1].item()))

    same = TargetActivation({1: {4: 0.5, 7: 0.1}, 0: {2: 1.0}})
    manual = ((activations[:, 4, 1] - 0.5) ** 2 + (activations[:, 7, 1] - 0.1) ** 2 + (activations[:, 2, 0] - 1.0) ** 2) / 3
    torch.testing.assert_close(same.loss(activations), manual)
    torch.testing.assert_close(same.loss(activations[1:], rows=torch.tensor([1, 2])), manual[1:])
    legacy = TargetActivation(frame.rename(columns={"neuron": "neuron_idx"}), batch_size=4)
    torch.testing.assert_close(legacy.loss(torch.cat([activations, activations[:1]])), torch.cat([expected, torch.zeros(1)]))
    with pytest.raises(ValueError, match="lacks columns"):
        TargetActivation(frame.drop(columns="value"))


def test_random_connectome_properties():
    a = random_connectome(300, 4000, 30, seed=11)
    b = random_connectome(300, 4000, 30, seed=11)
    assert (a.weights != b.weights).nnz == 0 and np.array_equal(a.sensory_indices, b.sensory_indices)
    w = a.weights
    assert w.nnz == 4000 and w.shape == (300, 300)
    assert w[a.sensory_indices].nnz == 0  # sensory neurons receive no synapses
    row_sums = np.asarray(abs(w).sum(1)).ravel()
    assert np.allclose(row_sums[row_sums > 0], 1.0, atol=1e-5)
    coo = w.tocoo()
    inhibitory = np.array([a.idx_to_group[int(j)] in a.inhibitory_groups for j in coo.col])
    assert (coo.data[inhibitory] < 0).all() and (coo.data[~inhibitory] > 0).all()  # Dale's law
    assert len(set(a.idx_to_group.values())) == 24


def test_load_network_reads_a_json_description_or_a_sensory_list_and_a_group_table(tmp_path):
    import pandas as pd

    from mei_core.models.connectome import load_network, random_connectome, save_connectome

    connectome = random_connectome(60, 400, 8, seed=3)
    save_connectome(connectome, str(tmp_path / "W.npz"), str(tmp_path / "network.json"))
    from_json = load_network(str(tmp_path / "W.npz"), str(tmp_path / "network.json"), num_layers=3)
    pd.DataFrame({"neuron": connectome.sensory_indices}).to_csv(tmp_path / "sensory.csv", index=False)
    pd.DataFrame({"neuron": range(60), "group": [connectome.idx_to_group[i] for i in range(60)]}).to_csv(tmp_path / "groups.csv", index=False)
    from_tables = load_network(str(tmp_path / "W.npz"), sensory_indices=str(tmp_path / "sensory.csv"), groups=str(tmp_path / "groups.csv"), num_layers=3)
    x = torch.rand(2, 8, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(from_json(x), from_tables(x))
    assert from_tables.neuron_groups == from_json.neuron_groups
