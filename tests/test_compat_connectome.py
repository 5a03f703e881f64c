"""connectome_interpreter inputs and call shape: targets as its dict / DataFrame, activation
regularisers by import path, and ``activation_maximisation`` against its loop written out in torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from quality import at_least, at_most
import torch

from mei_core.compat.connectome_interpreter import activation_maximisation
from mei_core.errors import MEIConfigError
from mei_core.methods import batched_gradient_ascent
from mei_core.models.connectome import MultilayeredNetwork, random_connectome
from mei_core.objectives.kinds import check_spec, table_rows
from mei_core.objectives.targets import TargetActivationObjective

LAYERS = 3


def network() -> MultilayeredNetwork:
    net = random_connectome(300, 3000, 20, seed=1, n_groups=5, n_sensory_groups=2)
    return MultilayeredNetwork(net.weights, net.sensory_indices, num_layers=LAYERS, idx_to_group=net.idx_to_group)


def reachable_targets(model: MultilayeredNetwork, neurons=(40, 41, 42), layer=LAYERS - 1, seed=123) -> dict[int, dict[int, float]]:
    """``{layer: {neuron: value}}`` that a hidden uniform input produces (so they can be met)."""
    hidden = torch.rand((1, model.n_sensory, LAYERS), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reached = model(hidden)[0]
    return {layer: {n: float(reached[n, layer]) for n in neurons}}


def mean_activation(activations: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """An activation regulariser given by import path: ``scale · mean a`` per row."""
    return scale * activations.flatten(1).mean(1)


def adam_method(iterations: int = 150) -> dict:
    return {
        "initial": {"path": "RandomUniform", "kwargs": {"low": 0.0, "high": 1.0}},
        "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
    }


def rmse(model, mei, targets):
    with torch.no_grad():
        reached = model(mei)
    return float(np.sqrt(np.mean([(reached[0, n, l].item() - v) ** 2 for l, d in targets.items() for n, v in d.items()])))


@pytest.mark.quality
def test_connectome_interpreter_dict_and_dataframe_targets_run_through_the_batched_engine():
    model = network()
    targets = reachable_targets(model)
    start = rmse(model, torch.rand((1, model.n_sensory, LAYERS), generator=torch.Generator().manual_seed(0)), targets)
    from_dict = batched_gradient_ascent(TargetActivationObjective(model, targets), adam_method(), seeds=[0], shape=(model.n_sensory, LAYERS))
    at_most("rmse from dict", rmse(model, from_dict.meis, targets), 0.02)
    assert start > 0.02
    # the same targets as connectome_interpreter's DataFrame (neuron_idx), one row per batch item; item 1 other targets
    other = reachable_targets(model, neurons=(50, 51), layer=1, seed=7)
    frame = pd.DataFrame(
        [{"batch": k, "layer": l, "neuron_idx": n, "value": v} for k, t in enumerate([targets, other]) for l, d in t.items() for n, v in d.items()]
    )
    from_frame = batched_gradient_ascent(TargetActivationObjective(model, frame), adam_method(), seeds=[0, 0], shape=(model.n_sensory, LAYERS))
    assert torch.allclose(from_frame.meis[0], from_dict.meis[0], atol=1e-6)  # item 0: same targets, same seed
    at_most("rmse from frame", rmse(model, from_frame.meis[1:], other), 0.02)
    assert rmse(model, from_frame.meis[:1], other) > 0.02


def test_activation_regularizers_by_import_path_add_to_the_penalty():
    model = network()
    x = torch.rand((2, model.n_sensory, LAYERS), generator=torch.Generator().manual_seed(0))
    targets = [[[2, 40, 0.5]], [[1, 41, 0.2]]]
    plain = TargetActivationObjective(model, targets)
    regularised = TargetActivationObjective(model, targets, activation_regularizers=[
        {"path": "test_compat_connectome.mean_activation", "kwargs": {"scale": 3.0}, "weight": 0.5},
        lambda a: a.pow(2).flatten(1).sum(1),
    ])
    items = torch.arange(2)
    with torch.no_grad():
        a = model(x)
        expected = plain(x, items) - 1.5 * a.flatten(1).mean(1) - a.pow(2).flatten(1).sum(1)
        assert torch.allclose(regularised(x, items), expected, atol=1e-5)
    assert torch.allclose(regularised.last_terms["activation_penalty"], 1.5 * a.flatten(1).mean(1) + a.pow(2).flatten(1).sum(1), atol=1e-5)
    bad = TargetActivationObjective(model, targets, activation_regularizers=[lambda a: a.sum()])
    with pytest.raises(ValueError, match=r"activation_regularizers\[0\] must return one value per row"):
        bad(x, items)


def test_the_targets_kind_takes_activation_regularizers_and_names_a_bad_one(tmp_path: Path):
    file = tmp_path / "targets.csv"
    pd.DataFrame({"item": [0, 1], "layer": [2, 1], "neuron": [40, 41], "value": [0.5, 0.2]}).to_csv(file, index=False)
    spec = {"kind": "targets", "targets": {"file": "targets.csv"},
            "kwargs": {"activation_regularizers": [{"path": "test_compat_connectome.mean_activation", "kwargs": {"scale": 2.0}}]}}
    rows = table_rows(spec, 300, tmp_path, "objectives.fly")
    assert len(rows) == 2 and "activation_regularizers" in rows[0]["kwargs"]
    from mei_core.objectives import build_objective

    objective = build_objective(network(), rows)
    assert len(objective.activation_regularizers) == 1
    bad = {**spec, "kwargs": {"activation_regularizers": [{"path": "test_compat_connectome.no_such_function"}]}}
    with pytest.raises(MEIConfigError, match=r"objectives\.fly\.kwargs\.activation_regularizers\[0\]\.path: module 'test_compat_connectome' has no attribute"):
        check_spec(bad, "objectives.fly")
    wrong = {**spec, "kwargs": {"activation_regularizers": [{"path": "test_compat_connectome.mean_activation", "kwargs": {"factor": 2.0}}]}}
    with pytest.raises(MEIConfigError, match=r"activation_regularizers\[0\]\.kwargs: unknown argument 'factor'"):
        check_spec(wrong, "objectives.fly")


@dataclass
class TheirTargetActivation:
    """connectome_interpreter 2.9.5's TargetActivation, its fields and __post_init__ written out."""

    targets: dict | pd.DataFrame
    batch_size: int | None = None

    def __post_init__(self):
        if isinstance(self.targets, dict):
            self.batch_size = self.batch_size or 1
            self.targets_df = pd.DataFrame([{"batch": b, "layer": layer, "neuron": n, "value": v}
                                            for layer, neurons in self.targets.items() for n, v in neurons.items()
                                            for b in range(self.batch_size)])
        else:
            self.batch_size = self.batch_size or (self.targets["batch"].max() + 1)
            self.targets_df = self.targets.copy()


def test_the_objective_takes_connectome_interpreters_target_object_as_its_own_targets():
    model = network()
    targets = reachable_targets(model)
    theirs = TheirTargetActivation(targets, batch_size=3)
    frame = pd.DataFrame({"batch": [0, 1, 1], "layer": [2, 1, 2], "neuron": [40, 50, 41], "value": [0.5, 0.4, 0.2]})
    for given, rows in ((theirs, 3), (TheirTargetActivation(frame), 2)):
        objective = TargetActivationObjective(model, given, reduction="mean")
        assert objective.targets.batch_size == rows
        x = torch.rand(rows, model.n_sensory, LAYERS, generator=torch.Generator().manual_seed(1))
        same = TargetActivationObjective(model, given.targets_df, reduction="mean")
        assert torch.equal(objective(x, torch.arange(rows)), same(x, torch.arange(rows)))
    result = batched_gradient_ascent(TargetActivationObjective(model, theirs), adam_method(20), seeds=[0, 1, 2], shape=(model.n_sensory, LAYERS))
    assert result.meis.shape == (3, model.n_sensory, LAYERS)


# ------------------------------------------------------------- connectome_interpreter's loop, written out

def ci_activation_maximisation(model, targets, num_iterations, learning_rate, in_reg_lambda, out_reg_lambda,
                               custom=None, early_stopping=True, stopping_threshold=1e-5, n_runs=10, seed=0):
    """The released connectome_interpreter 2.9.5's activation_maximisation for one row, from its code."""
    def default_reg(x):
        return torch.norm(x, p=1) + torch.norm(x, p=2)

    custom = custom or {}
    torch.manual_seed(seed)
    x = torch.rand((1, model.n_sensory, model.num_layers), requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=learning_rate)
    snapshots, act_loss, out_reg, in_reg, losses = [], [], [], [], []
    for iteration in range(num_iterations):
        optimizer.zero_grad()
        activations = model(x)
        if iteration % 5 == 0:
            snapshot = x.clone().detach().numpy()
            snapshots.append(np.tanh(np.where(snapshot >= model.threshold, snapshot, 0)))
        entries = [(activations[0, n, l] - v) ** 2 for l, d in targets.items() for n, v in d.items()]
        activation_loss = torch.stack(entries).sum() / len(entries)
        in_loss = in_reg_lambda * custom.get("in", default_reg)(x)
        out_loss = out_reg_lambda * custom.get("out", default_reg)(activations)
        loss = activation_loss + in_loss + out_loss
        losses.append(loss.item())
        if early_stopping and iteration > n_runs and np.max(losses[-n_runs:]) - np.min(losses[-n_runs:]) < stopping_threshold:
            break
        act_loss.append(activation_loss.item())
        out_reg.append(out_loss.item())
        in_reg.append(in_loss.item())
        loss.backward()
        optimizer.step()
    x = torch.tanh(torch.where(x >= model.threshold, x, 0))
    output = model(x).detach().numpy()
    return x.detach().numpy()[0], output[0], act_loss, out_reg, in_reg, [s[0] for s in snapshots]


@pytest.mark.parametrize("settings", [
    dict(num_iterations=300, early_stopping=True, stopping_threshold=1e-3),
    dict(num_iterations=37, early_stopping=False),
    dict(num_iterations=60, early_stopping=True, custom={"in": lambda x: x.pow(2).sum(), "out": lambda a: a.abs().mean()}),
])
def test_activation_maximisation_returns_connectome_interpreters_results(settings):
    model = network()
    targets = reachable_targets(model)
    custom = settings.pop("custom", None)
    kwargs = dict(learning_rate=0.05, in_reg_lambda=0.001, out_reg_lambda=0.001, **settings)
    ours = activation_maximisation(model, targets, custom_reg_functions=custom, seed=3, device="cpu", **kwargs)
    theirs = ci_activation_maximisation(model, targets, custom=custom, seed=3, **kwargs)
    assert ours[0].shape == theirs[0].shape == (model.n_sensory, LAYERS)
    assert ours[1].shape == theirs[1].shape == (model.n_neurons, LAYERS)
    assert np.abs(ours[0] - theirs[0]).max() < 1e-5
    assert np.abs(ours[1] - theirs[1]).max() < 1e-5
    for mine, reference in zip(ours[2:5], theirs[2:5]):
        assert len(mine) == len(reference)
        assert np.allclose(mine, reference, rtol=1e-4, atol=1e-6)
    assert len(ours[5]) == len(theirs[5]) and all(np.abs(a - b).max() < 1e-5 for a, b in zip(ours[5], theirs[5]))
    if settings.get("stopping_threshold"):
        assert len(ours[2]) < settings["num_iterations"]  # it did stop early, at the same iteration
    assert ours[2][-1] < ours[2][0]


def test_activation_maximisation_batches_target_sets_and_keeps_the_tuple_shape():
    model = network()
    frame = pd.DataFrame({"batch": [0, 1], "layer": [2, 1], "neuron": [40, 50], "value": [0.5, 0.4]})
    inputs, outputs, act_loss, out_reg, in_reg, snapshots = activation_maximisation(
        model, frame, num_iterations=30, learning_rate=0.05, early_stopping=False, seed=0, device="cpu")
    assert inputs.shape == (2, model.n_sensory, LAYERS) and outputs.shape == (2, model.n_neurons, LAYERS)
    assert len(act_loss) == len(out_reg) == len(in_reg) == 30 and len(snapshots) == 6
    assert snapshots[0].shape == (2, model.n_sensory, LAYERS)
    assert inputs.min() >= -1.0 and inputs.max() <= 1.0
    with pytest.raises(ValueError, match="wandb"):
        activation_maximisation(model, frame, wandb=True)
