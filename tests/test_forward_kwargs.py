"""Every keyword a model call receives (a row's data_key, a method's model_forward_kwargs) reaches the
model through one door, in optimisation and in held-out scoring alike."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from mei_core.errors import MEIConfigError
from mei_core.objectives.base import UnitObjective, with_model_forward_kwargs
from mei_core.objectives.kinds import build_objective
from mei_core.objectives.video import IncreaseObjective
from workflow_support import method, snakemake, tiny_config, write_config


class GainModel(nn.Module):
    """B×1×12×12 → B×5, multiplied by ``gain`` (a forward keyword, as sinzlab's ``data_key``)."""

    def __init__(self, init_seed: int = 0):
        super().__init__()
        torch.manual_seed(init_seed)
        self.conv = nn.Conv2d(1, 2, 5)
        self.readout = nn.Linear(2 * 8 * 8, 5)

    def forward(self, x: torch.Tensor, gain: float = 1.0, data_key: str | None = None) -> torch.Tensor:
        return gain * nn.functional.softplus(self.readout(torch.relu(self.conv(x)).flatten(1)))


def build_gain_model(init_seed: int = 0) -> GainModel:
    return GainModel(init_seed)


def test_a_methods_forward_kwargs_reach_the_model_beside_the_rows_data_key():
    model, x = GainModel(), torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    rows = pd.DataFrame({"neuron_id": [0, 1, 2], "output_unit": [0, 1, 2], "data_key": ["s"] * 3, "kind": ["unit"] * 3, "kwargs": ["{}"] * 3})
    objective = with_model_forward_kwargs(build_objective(model, rows), {"model_forward_kwargs": {"gain": 10.0}})
    with torch.no_grad():
        expected = model(x, gain=10.0, data_key="s")[torch.arange(3), torch.arange(3)]
        assert torch.equal(objective(x, torch.arange(3)), expected)


def test_a_video_objective_takes_a_methods_forward_kwargs_too():
    model = lambda x, gain=1.0: gain * x.flatten(2).mean(2)[:, None, :].expand(-1, 4, -1)  # B×C×T×H×W → B×4×C
    x = torch.randn(2, 3, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    objective = with_model_forward_kwargs(IncreaseObjective(model, [0, 2]), {"model_forward_kwargs": {"gain": 3.0}})
    assert torch.equal(objective(x, torch.arange(2)), 3.0 * x.flatten(2).mean(2)[torch.arange(2), torch.tensor([0, 2])])


def test_a_data_key_set_both_in_the_row_and_in_the_method_differently_is_an_error_naming_the_key():
    objective = UnitObjective(GainModel(), [0], forward_kwargs={"data_key": "s1"})
    with pytest.raises(MEIConfigError, match=r"config\.model_forward_kwargs: data_key='s2' contradicts .*data_key='s1'"):
        with_model_forward_kwargs(objective, {"model_forward_kwargs": {"data_key": "s2"}})
    assert with_model_forward_kwargs(objective, {"model_forward_kwargs": {"data_key": "s1"}}).selector.forward_kwargs == {"data_key": "s1"}


@pytest.mark.slow
def test_held_out_scoring_calls_the_model_with_the_methods_forward_kwargs(tmp_path):
    """The held-out ensemble is the members' one model: its score of every MEI equals the members'
    score (before the fix it scored without ``gain: 10``, a tenth of it)."""
    member = {"checkpoint": "models/gain.pt", "builder": "test_forward_kwargs.build_gain_model", "builder_kwargs": {"init_seed": 4}}
    (tmp_path / "models").mkdir()
    torch.save(GainModel(4).state_dict(), tmp_path / "models" / "gain.pt")
    config = tiny_config()
    config["ensembles"]["tiny"].update(members=[member], validation_members=[member])
    config["objectives"]["tiny"] = {"neurons": [0, 1]}
    gained = method(3)
    gained["config"]["model_forward_kwargs"] = {"gain": 10.0}
    config["methods"] = {"gained": gained}
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/scores.parquet")
    scores = pd.read_parquet(tmp_path / "results" / "scores.parquet")
    assert len(scores) == 2 and (scores["score"] > 0).all()
    torch.testing.assert_close(torch.tensor(scores["heldout_score"].to_numpy()), torch.tensor(scores["score"].to_numpy()), rtol=1e-6, atol=0)
