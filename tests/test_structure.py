"""One home per concept: items at the objective boundary, per-item data keys, gradients in the State,
the objective-kind registry, and what a change of code or held-out members reruns (real Snakemake)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn

from mei_core import batched_gradient_ascent, default_preset
from mei_core.components import Tracker
from mei_core.objectives import UnitObjective, build_objective, get_kind, kind_names
from mei_core.objectives.base import Objective
from mei_core.objectives.kinds import Items, ObjectiveKind

from helpers import LinearNeurons, gabor
from workflow_support import copy_project, planned_outputs, save_member, snakemake, tiny_config, write_config


# ------------------------------------------------------------------------------------------ engine


def test_an_objective_of_one_item_serves_all_of_its_n_meis_rows():
    filters = torch.stack([gabor(theta=0.3), gabor(theta=1.4)])
    config = {**default_preset(norm=8.0, iterations=20), "n_meis": 3}
    result = batched_gradient_ascent(UnitObjective(LinearNeurons(filters), [1]), config, seeds=[0], shape=(1, 24, 24))
    assert result.meis.shape == (3, 1, 24, 24) and result.n_meis == 3
    assert result.row_items.tolist() == [0, 0, 0]
    with torch.no_grad():
        expected = LinearNeurons(filters)(result.meis)[:, 1]
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-6)


class GradientRecorder(Tracker):
    """Records the State's gradient and preconditioned gradient, and the evaluated and next inputs."""

    def __init__(self):
        super().__init__(interval=1)
        self.grads, self.preconditioned, self.inputs, self.next_inputs = [], [], [], []

    def read(self, state):
        self.grads.append(state.grad.clone())
        self.preconditioned.append(state.preconditioned_grad.clone())
        self.inputs.append(state.input_.clone())
        self.next_inputs.append(state.post_processed_input.clone())
        return state.evaluation


def test_a_tracker_reading_state_grad_sees_the_gradient_of_that_step():
    weights = gabor(theta=0.7)[None]
    recorder = GradientRecorder()
    config = {
        "initial": "RandomNormal",
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 3}},
        "precondition": {"path": "MultiplyBy", "kwargs": {"const": 2.0}},
    }
    from mei_core.engine import optimize
    from mei_core.method import build_method

    method = build_method(config)
    method.trackers["recorder"] = recorder
    model = LinearNeurons(weights)
    optimize(UnitObjective(model, [0]), method, [5], (1, 24, 24))
    assert len(recorder.grads) == 4  # steps 0, 1, 2 and the final evaluation at step 3
    for step in range(3):
        x = recorder.inputs[step].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(-model(x)[:, 0].sum(), x)  # the loss is −objective
        torch.testing.assert_close(recorder.grads[step], expected)
        torch.testing.assert_close(recorder.preconditioned[step], 2 * expected)
        # SGD: the next input is this one minus lr × the preconditioned gradient
        torch.testing.assert_close(recorder.next_inputs[step], recorder.inputs[step] - 0.1 * 2 * expected)
        torch.testing.assert_close(recorder.inputs[step + 1], recorder.next_inputs[step])


def test_trackers_is_the_slot_name_and_objectives_its_sinzlab_alias():
    from mei_core import MEIConfigError
    from mei_core.method import build_method

    base = default_preset(iterations=2)
    tracker = {"evaluation": {"path": "EvaluationObjective", "kwargs": {"interval": 1}}}
    assert list(build_method({**base, "trackers": tracker}).trackers) == ["evaluation"]
    assert list(build_method({**base, "objectives": tracker}).trackers) == ["evaluation"]
    with pytest.raises(MEIConfigError, match="config.objectives: give either 'trackers' or its sinzlab name 'objectives'"):
        build_method({**base, "trackers": tracker, "objectives": tracker})


# ----------------------------------------------------------------------------- objective kinds


class SessionVideoModel(nn.Module):
    """B×C×T×H×W → B×T×N whose answer depends on the session: session "b" doubles and shifts it."""

    def __init__(self):
        super().__init__()
        self.core = nn.Conv3d(1, 3, (1, 4, 4), bias=False)
        with torch.no_grad():
            self.core.weight.copy_(torch.randn(self.core.weight.shape, generator=torch.Generator().manual_seed(0)))
        self.keys_seen: list[str] = []

    def forward(self, x, data_key=None):
        self.keys_seen.append(data_key)
        response = self.core(x).flatten(3).mean(3).transpose(1, 2)
        return response if data_key == "a" else 2.0 * response + 1.0


def rows(kind, units, keys, **kwargs):
    return pd.DataFrame({"neuron_id": range(len(units)), "output_unit": units, "data_key": keys,
                         "kind": [kind] * len(units), "kwargs": [json.dumps(kwargs)] * len(units)})


@pytest.mark.parametrize("kind", ["increase", "unit"])
def test_a_shard_mixing_two_data_keys_evaluates_each_row_with_its_own_key(kind):
    model = SessionVideoModel()
    x = torch.randn(4, 1, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    objective = build_objective(model, rows(kind, [0, 2, 1, 2], ["a", "b", "a", "b"]))
    model.keys_seen.clear()
    values = objective(x, torch.arange(4))
    assert sorted(model.keys_seen) == ["a", "b"]  # one forward per session, not per row
    with torch.no_grad():
        expected = torch.stack([model(x[i : i + 1], data_key=k)[0, :, u].mean() for i, (u, k) in enumerate(zip([0, 2, 1, 2], "abab"))])
    torch.testing.assert_close(values, expected)
    # items of one session alone give the same values as inside the mixed batch
    torch.testing.assert_close(objective(x[[1, 3]], torch.tensor([1, 3])), expected[[1, 3]])


def test_an_objective_kind_is_one_class_found_by_its_name():
    assert {"unit", "increase", "decrease", "inner", "contrastive", "targets", "custom"} <= set(kind_names())

    class Negated(ObjectiveKind):
        name = "test_negated_unit"
        description = "the negative of a unit's response"

        def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
            unit = UnitObjective(model, items.units)

            class Negate(Objective):
                def __call__(self, x, item_index):
                    return -unit(x, item_index)

            return Negate()

    assert isinstance(get_kind("test_negated_unit"), Negated)
    model = LinearNeurons(torch.stack([gabor(), gabor(theta=1.0)]))
    x = torch.randn(2, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    objective = build_objective(model, rows("test_negated_unit", [1, 0], [None, None]))
    torch.testing.assert_close(objective(x, torch.arange(2)), -model(x)[[0, 1], [1, 0]])


# ---------------------------------------------------------------- the pipeline on a user's project

USER_MODELS = '''
from mei_core.demo.v1 import build_demo_cnn


def build(**kwargs):
    """A lab's builder: the demo CNN under another name."""
    return build_demo_cnn(**kwargs)
'''

USER_COMPONENTS = '''
from mei_core.components import Postprocessor


class Halve(Postprocessor):
    """Halves the input after each step."""

    def __call__(self, x, step):
        return x * 0.5
'''


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    """A tiny project whose members come from the lab's own builder module and one of whose methods
    uses the lab's own component; another method asks for 3 diverse MEIs per item."""
    folder = tmp_path_factory.mktemp("user") / "project"
    (folder / "lab").mkdir(parents=True)
    (folder / "lab" / "user_models.py").write_text(USER_MODELS)
    (folder / "lab" / "user_components.py").write_text(USER_COMPONENTS)
    config = tiny_config()
    config["pythonpath"] = ["lab"]
    config["shard_size"] = 4  # one shard per method: few jobs
    for group in ("members", "validation_members"):
        for member in config["ensembles"]["tiny"][group]:
            member["builder"] = "user_models.build"
    for seed in (1, 2, 3):
        save_member(folder, seed)
    fast = config["methods"]["fast"]
    config["methods"] = {
        "fast": fast,
        "halved": {"config": {**fast["config"], "postprocessing": [{"path": "user_components.Halve"}]}},
        "diverse": {"config": {**fast["config"], "n_meis": 3, "regularization": {"path": "Similarity", "kwargs": {"weight": 0.5}}}},
    }
    write_config(folder, config)
    snakemake(folder)
    return folder


@pytest.mark.slow
def test_n_meis_3_runs_through_the_pipeline_with_an_mei_index_dimension(user_project):
    dataset = xr.open_zarr(user_project / "results" / "tiny.zarr")
    assert dataset["mei"].dims == ("method", "seed", "neuron", "mei_index", "channel", "y", "x")
    diverse = dataset["mei"].sel({"method": "diverse", "seed": 0}).values  # neuron × mei_index × C×H×W
    assert diverse.shape == (4, 3, 1, 12, 12) and np.isfinite(diverse).all()
    # the three MEIs of an item differ (the Similarity penalty pushes them apart)
    assert not np.allclose(diverse[:, 0], diverse[:, 1])
    scores = pd.read_parquet(user_project / "results" / "scores.parquet")
    assert sorted(scores.loc[scores["method"] == "diverse", "mei_index"].unique()) == [0, 1, 2]
    assert (scores.loc[scores["method"] == "fast", "mei_index"] == 0).all()
    assert len(scores) == 4 * (1 + 1 + 3) and scores["heldout_score"].notna().all()
    # methods with one MEI per item fill index 0 only
    assert np.isnan(dataset["mei"].sel({"method": "fast", "seed": 0, "mei_index": 1}).values).all()
    assert (user_project / "results" / "figures" / "tiny" / "diverse.png").stat().st_size > 1000


@pytest.mark.slow
def test_touching_nothing_in_a_user_project_reruns_nothing(user_project, tmp_path):
    assert planned_outputs(copy_project(user_project, tmp_path / "p")) == {}


@pytest.mark.slow
def test_editing_a_user_builder_module_reruns_that_ensemble(user_project, tmp_path):
    project = copy_project(user_project, tmp_path / "p")
    with open(project / "lab" / "user_models.py", "a") as handle:
        handle.write("\n# a changed builder\n")
    planned = planned_outputs(project)
    assert sorted(planned["assemble_ensemble"]) == ["resources/ensembles/tiny/members.manifest.json", "resources/ensembles/tiny/validation_members.manifest.json"]
    assert len(planned["generate_meis"]) == 3


@pytest.mark.slow
def test_editing_a_user_component_module_reruns_the_methods_that_use_it(user_project, tmp_path):
    project = copy_project(user_project, tmp_path / "p")
    (project / "lab" / "user_components.py").write_text(USER_COMPONENTS.replace("0.5", "0.25"))
    planned = planned_outputs(project)
    assert sorted(planned["generate_meis"]) == ["resources/meis/tiny/halved/seed0/shard0.npz"]
    assert "assemble_ensemble" not in planned


@pytest.mark.slow
def test_changing_a_validation_member_reruns_scoring_but_no_generation(user_project, tmp_path):
    project = copy_project(user_project, tmp_path / "p")
    save_member(project, 3, weight_seed=42)
    planned = planned_outputs(project)
    assert planned["assemble_ensemble"] == ["resources/ensembles/tiny/validation_members.manifest.json"]
    assert "generate_meis" not in planned
    assert len(planned["score_heldout"]) == 3
