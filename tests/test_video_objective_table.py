"""openretina-style objective kinds built from objective-table rows, for video models (B×T'×N)."""

import json

import pandas as pd
import pytest
import torch
from torch import nn

from mei_core import MEIConfigError
from mei_core.objectives import build_objective


class LinearVideoModel(nn.Module):
    """B×C×T×H×W → B×T×N: each neuron a fixed spatial filter applied frame by frame."""

    def __init__(self, n_neurons=4, channels=2, size=5):
        super().__init__()
        self.core = nn.Conv3d(channels, n_neurons, (1, size, size), bias=False)
        with torch.no_grad():
            self.core.weight.copy_(torch.randn(self.core.weight.shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x, data_key=None):
        return self.core(x).flatten(3).mean(3).transpose(1, 2)  # B×T×N


def rows(kind, units, **kwargs):
    return pd.DataFrame({"neuron_id": range(len(units)), "output_unit": units, "data_key": [None] * len(units),
                         "kind": [kind] * len(units), "kwargs": [json.dumps(kwargs)] * len(units)})


def test_increase_with_a_slice_mean_reducer_averages_the_units_response_over_those_frames():
    model = LinearVideoModel()
    x = torch.randn(3, 2, 12, 5, 5, generator=torch.Generator().manual_seed(1))
    objective = build_objective(model, rows("increase", [2, 0, 3], reducer={"slice_mean": {"start": 4, "length": 5}}))
    expected = model(x)[torch.arange(3), 4:9][:, :, [2, 0, 3]].diagonal(dim1=0, dim2=2).T.mean(1)
    torch.testing.assert_close(objective(x, torch.arange(3)), expected)
    decrease = build_objective(model, rows("decrease", [2, 0, 3], reducer={"slice_mean": {"start": 4, "length": 5}}))
    torch.testing.assert_close(decrease(x, torch.arange(3)), -expected)


def test_inner_and_contrastive_kinds_need_their_keys():
    model = LinearVideoModel()
    with pytest.raises(MEIConfigError, match="kwargs.layer: required for kind 'inner'"):
        build_objective(model, rows("inner", [0]))
    with pytest.raises(MEIConfigError, match="kwargs.clusters: required for kind 'contrastive'"):
        build_objective(model, rows("contrastive", [0]))
    inner = build_objective(model, rows("inner", [1, 3], layer="core"))
    x = torch.randn(2, 2, 6, 5, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        centre = model.core(x)[:, :, :, 0, 0]  # the 1×1 output map's centre
    torch.testing.assert_close(inner(x, torch.arange(2)), centre[torch.arange(2), [1, 3]].mean(1))
    contrastive = build_objective(model, rows("contrastive", [0, 1], clusters=[[0, 1], [2, 3]]))
    assert contrastive(x, torch.arange(2)).shape == (2,)
