"""lucent's layer objectives and objective algebra, per item: each value equals lucent's formula
(lucent/optvis/objectives.py, negated: lucent minimises a loss, we maximise) written out here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mei_core import batched_gradient_ascent, default_preset
from mei_core.demo.v1 import build_demo_cnn
from mei_core.errors import MEIConfigError
from mei_core.models.ensemble import EnsembleModel
from mei_core.objectives import UnitObjective
from mei_core.objectives.base import Product, WeightedSum
from mei_core.objectives.kinds import build_objective, check_spec, table_rows
from mei_core.objectives.layers import ChannelObjective, DirectionNeuronObjective, DirectionObjective, NeuronObjective
from mei_core.pipeline.configfile import validate_config
from mei_core.pipeline.plan import prepare

from workflow_support import make_project, member_spec, tiny_config

torch.set_num_threads(1)
TOLERANCE = 1e-6


def tiny_cnn(seed: int) -> nn.Sequential:
    """Layers ``0``: B×4×7×7 (odd), ``2``: B×5×6×6 (even), ``4``: B×3×4×6 (not square), ``6``: B×3 (flat)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 5, 2), nn.Tanh(), nn.Conv2d(5, 3, (3, 1)),
                         nn.Flatten(), nn.Linear(3 * 4 * 6, 3))


@pytest.fixture(scope="module")
def model():
    return EnsembleModel(tiny_cnn(0), tiny_cnn(1)).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(5, 2, 7, 7, generator=torch.Generator().manual_seed(2))


def acts(model, x, layer):
    """Every member's output of ``layer`` (lucent's ``model(layer)``, one per member)."""
    outputs = []
    for member in model.members:
        caught = []
        handle = dict(member.named_modules())[layer].register_forward_hook(lambda m, i, o: caught.append(o))
        member(x)
        handle.remove()
        outputs.append(caught[0])
    return outputs


def members_mean(values):
    return torch.stack(values).mean(0)


# lucent's formulas for one image (its batch=b), negated; the ensemble value is the members' mean
def lucent_channel(t, b, n_channel):
    return t[b : b + 1][:, n_channel].mean()


def lucent_extract_act_pos(t, x=None, y=None):
    x = t.shape[2] // 2 if x is None else x
    y = t.shape[3] // 2 if y is None else y
    return t[:, :, y : y + 1, x : x + 1]


def lucent_neuron(t, b, n_channel, x=None, y=None):
    return lucent_extract_act_pos(t[b : b + 1], x, y)[:, n_channel].mean()


def cosine_over_channels(d, t):
    """CosineSimilarity(dim=1) of d (1×C×1×1) and t (B×C×H×W), written out: d·t / (|d|·|t|)."""
    return (d * t).sum(1) / (d.norm(dim=1) * t.norm(dim=1))


def lucent_direction(t, b, direction):
    return cosine_over_channels(direction.reshape(1, -1, 1, 1), t[b : b + 1]).mean()


def lucent_direction_neuron(t, b, direction, x=None, y=None):
    return cosine_over_channels(direction.reshape(1, -1, 1, 1), lucent_extract_act_pos(t[b : b + 1], x, y)).mean()


def lucid_dot_direction(t, b, direction):
    return (t[b] * direction.reshape(-1, 1, 1)).sum(0).mean()


def per_row(formula, model, x, layer, *args_per_row):
    """The ensemble's value of ``formula`` for every row, with row ``b``'s own arguments."""
    members = acts(model, x, layer)
    return torch.stack([members_mean([formula(t, b, *args) for t in members]) for b, args in enumerate(args_per_row)])


ITEMS = torch.arange(5)


def test_channel_is_lucents_channel_mean_per_row_with_every_item_its_own_channel(model, x):
    channels = [0, 3, 1, 2, 3]
    got = ChannelObjective(model, "0", channels)(x, ITEMS)
    assert torch.allclose(got, per_row(lucent_channel, model, x, "0", *[(c,) for c in channels]), atol=TOLERANCE, rtol=0)


def test_neuron_reads_lucents_centre_by_default_and_any_position_given(model, x):
    # 7×7 (odd: the middle) and 6×6 (even: lower right of the central 2×2), as lucent's docstring draws
    for layer in ("0", "2"):
        got = NeuronObjective(model, layer, [0, 1, 2, 3, 1])(x, ITEMS)
        assert torch.allclose(got, per_row(lucent_neuron, model, x, layer, *[(c,) for c in [0, 1, 2, 3, 1]]), atol=TOLERANCE, rtol=0)
    # on a 4×6 map x is the column and y the row, as lucent's slicing t[:, :, y, x]
    positions = [(0, 0), (5, 3), (2, 1), (4, 0), (1, 3)]
    got = NeuronObjective(model, "4", [0, 1, 2, 0, 1], x=[p[0] for p in positions], y=[p[1] for p in positions])(x, ITEMS)
    want = per_row(lucent_neuron, model, x, "4", *[(c, px, py) for c, (px, py) in zip([0, 1, 2, 0, 1], positions)])
    assert torch.allclose(got, want, atol=TOLERANCE, rtol=0)


def test_a_neuron_of_a_flat_layer_is_its_index_and_of_the_output_the_unit_objective(model, x):
    got = NeuronObjective(model, "6", [2, 0, 1, 1, 2])(x, ITEMS)
    members = acts(model, x, "6")
    assert torch.allclose(got, members_mean([t[ITEMS, torch.tensor([2, 0, 1, 1, 2])] for t in members]), atol=TOLERANCE, rtol=0)
    assert torch.allclose(NeuronObjective(model, "", [2, 0, 1, 1, 2])(x, ITEMS), UnitObjective(model, [2, 0, 1, 1, 2])(x, ITEMS), atol=TOLERANCE, rtol=0)


def test_direction_and_direction_neuron_are_lucents_cosine_and_lucids_dot(model, x):
    directions = torch.randn(5, 5, generator=torch.Generator().manual_seed(3))  # one per item
    got = DirectionObjective(model, "2", directions)(x, ITEMS)
    assert torch.allclose(got, per_row(lucent_direction, model, x, "2", *[(d,) for d in directions]), atol=TOLERANCE, rtol=0)
    got = DirectionNeuronObjective(model, "2", directions, x=[None, 1, 5, None, 0], y=[None, 0, 5, 2, None])(x, ITEMS)
    want = per_row(lucent_direction_neuron, model, x, "2", *[(d, px, py) for d, px, py in zip(directions, [None, 1, 5, None, 0], [None, 0, 5, 2, None])])
    assert torch.allclose(got, want, atol=TOLERANCE, rtol=0)
    got = DirectionObjective(model, "2", directions[0], similarity="dot")(x, ITEMS)
    assert torch.allclose(got, per_row(lucid_dot_direction, model, x, "2", *[(directions[0],)] * 5), atol=TOLERANCE, rtol=0)


def test_the_algebra_is_the_weighted_formula_of_its_terms(model, x):
    a = ChannelObjective(model, "0", [0, 1, 2, 3, 0])
    b = NeuronObjective(model, "2", 4)
    c = DirectionObjective(model, "4", [1.0, -2.0, 0.5])
    va, vb, vc = a(x, ITEMS), b(x, ITEMS), c(x, ITEMS)
    cases = {
        "a + 0.5 * b": (a + 0.5 * b, va + 0.5 * vb),
        "a * b": (a * b, va * vb),
        "-a": (-a, -va),
        "2 - a / 4": (2 - a / 4, 2 - va / 4),
        "sum([a, b, c])": (sum([a, b, c]), va + vb + vc),
        "(a + b) * c - 3 * (a * b * c)": ((a + b) * c - 3 * (a * b * c), (va + vb) * vc - 3 * va * vb * vc),
    }
    for name, (objective, want) in cases.items():
        assert torch.allclose(objective(x, ITEMS), want, atol=TOLERANCE, rtol=0), name
    total = a + 0.5 * b - c
    assert isinstance(total, WeightedSum) and total.weights == [1.0, 0.5, -1.0]  # flattened, as lucent's Objective.sum
    assert isinstance(a * b * c, Product) and len((a * b * c).terms) == 3
    assert (a + UnitObjective(model, [0, 1, 2, 0, 1]))(x, ITEMS).shape == (5,)  # any objective takes part


def test_the_terms_of_a_sum_share_one_forward_per_member(model, x):
    calls = []
    handles = [member.register_forward_hook(lambda m, i, o: calls.append(1)) for member in model.members]
    try:
        objective = ChannelObjective(model, "0", 1) + NeuronObjective(model, "2", 0) * DirectionObjective(model, "4", [1.0, 0.0, 1.0])
        objective(x, ITEMS)
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) == len(model.members)


def mixed(model):
    """Items on different layers, channels, positions and directions, summed with a product."""
    layers = ["0", "2", "4", "6", "2"]
    return (ChannelObjective(model, layers, [1, 4, 2, 0, 3])
            - 0.5 * NeuronObjective(model, layers, [0, 1, 2, 1, 4], x=[3, None, 5, None, 0], y=[None, 2, 3, None, 5])
            + DirectionNeuronObjective(model, ["2", "0", "2", "0", "2"], [[1.0] * 5, [0.5, -1, 0, 2], [0.0, 1, 0, 0, -1], [1.0] * 4, [2.0, 0, 0, 1, 0]])
            * ChannelObjective(model, "2", [0, 1, 2, 3, 4]))


def test_a_batch_of_mixed_items_gives_every_row_its_value_alone(model, x):
    objective = mixed(model)
    # rows of shuffled items, two rows per item (n_meis = 2)
    items = torch.tensor([3, 3, 0, 0, 4, 4, 1, 1, 2, 2])
    batch = x[torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])].clone().requires_grad_(True)
    values = objective(batch, items)
    values.sum().backward()
    for row in range(len(items)):
        alone = batch[row : row + 1].detach().clone().requires_grad_(True)
        value = mixed(model)(alone, items[row : row + 1])
        value.sum().backward()
        assert torch.allclose(values[row], value[0], atol=TOLERANCE, rtol=0), row
        assert torch.allclose(batch.grad[row], alone.grad[0], atol=TOLERANCE, rtol=0), row


DIRECTION = [0.5, -1.0, 2.0, 0.0, 1.0]


def test_the_yaml_kinds_build_the_python_objectives(model, x, tmp_path):
    np.save(tmp_path / "direction.npy", np.array(DIRECTION, dtype=np.float32))
    layer_spec = {"kind": "layer", "items": [{"layer": "0", "channel": 1}, {"layer": "2", "channel": 4, "x": 0, "y": 5}, {"layer": "6", "channel": 2}],
                  "kwargs": {"type": "neuron"}}
    built = build_objective(model, table_rows(layer_spec, 3, tmp_path, "objectives.e"))
    python = NeuronObjective(model, ["0", "2", "6"], [1, 4, 2], x=[None, 0, None], y=[None, 5, None])
    assert torch.equal(built(x[:3], ITEMS[:3]), python(x[:3], ITEMS[:3]))

    combination = {"kind": "combination", "items": [{"unit": 0, "channel": 3}, {"unit": 2, "channel": 1}], "kwargs": {"op": "sum", "terms": [
        {"weight": 1.0, "objective": {"type": "unit"}},
        {"weight": -0.5, "objective": {"type": "channel", "layer": "0", "channel": {"item": "channel"}}},
        {"weight": 2.0, "objective": {"op": "product", "terms": [
            {"objective": {"type": "neuron", "layer": "2", "channel": 0, "x": 1}},
            {"weight": 3.0, "objective": {"type": "direction", "layer": "2", "direction": {"file": "direction.npy"}}},
        ]}},
    ]}}
    check_spec(combination, "objectives.e")
    rows = table_rows(combination, 3, tmp_path, "objectives.e")
    assert [(r["neuron_id"], r["output_unit"]) for r in rows] == [(0, 0), (1, 2)]
    built = build_objective(model, rows)
    python = (NeuronObjective(model, "", [0, 2]) - 0.5 * ChannelObjective(model, "0", [3, 1])
              + 2.0 * (NeuronObjective(model, "2", 0, x=1) * (3.0 * DirectionObjective(model, "2", DIRECTION))))
    assert torch.allclose(built(x[:2], ITEMS[:2]), python(x[:2], ITEMS[:2]), atol=TOLERANCE, rtol=0)


def test_items_from_a_csv_keep_layer_names_as_text_and_blank_positions_at_the_centre(model, x, tmp_path):
    (tmp_path / "items.csv").write_text("neuron_id,layer,channel,x,y\n10,0,1,,\n11,2,4,0,5\n12,6,2,,\n")
    rows = table_rows({"kind": "layer", "items": {"file": "items.csv"}, "kwargs": {"type": "neuron"}}, 3, tmp_path, "objectives.e")
    assert [r["neuron_id"] for r in rows] == [10, 11, 12]
    python = NeuronObjective(model, ["0", "2", "6"], [1, 4, 2], x=[None, 0, None], y=[None, 5, None])
    assert torch.equal(build_objective(model, rows)(x[:3], ITEMS[:3]), python(x[:3], ITEMS[:3]))


def layer_table(spec, tmp_path=Path(".")):
    return table_rows({"kind": "layer", **spec}, 3, tmp_path, "objectives.e")


@pytest.mark.parametrize("spec, message", [
    ({"items": [{"layer": "conv9", "channel": 0}], "kwargs": {"type": "channel"}},
     r"objectives\.kwargs\.layer: no layer 'conv9' in the model's members; layers \(named_modules\): '', '0', '1', '2', '3', '4', '5', '6'"),
    ({"items": [{"layer": "2", "channel": 5}], "kwargs": {"type": "channel"}},
     r"objectives\.kwargs\.channel: channel 5 out of range for layer '2' \(B×5×6×6: channels 0…4\)"),
    ({"items": [{"x": 6}], "kwargs": {"type": "neuron", "layer": "2", "channel": 0}},
     r"objectives\.kwargs\.x: x 6 out of range for layer '2' \(B×5×6×6: xs 0…5\)"),
    ({"items": [{"y": 4}], "kwargs": {"type": "direction_neuron", "layer": "4", "direction": [1, 0, 0]}},
     r"objectives\.kwargs\.y: y 4 out of range for layer '4' \(B×3×4×6: ys 0…3\)"),
    ({"items": [{"channel": 0}], "kwargs": {"type": "direction", "layer": "4", "direction": [1, 0]}},
     r"objectives\.e\.items: field 'channel' is not a field of a direction term"),
    ({"items": [{"layer": "4"}], "kwargs": {"type": "direction", "direction": [1, 0]}},
     r"objectives\.kwargs\.direction: a direction of length 2 for layer '4' with 3 channels"),
    ({"items": [{"x": 1}], "kwargs": {"type": "neuron", "layer": "6", "channel": 0}},
     r"objectives\.kwargs\.x: layer '6' is flat \(B×3\): it has no positions"),
])
def test_a_bad_layer_channel_or_position_is_named_with_the_valid_ones(model, x, spec, message):
    with pytest.raises(MEIConfigError, match=message):
        build_objective(model, layer_table(spec))(x[:1], ITEMS[:1])


@pytest.mark.parametrize("spec, message", [
    ({"kind": "layer", "items": [{"layer": "0"}], "kwargs": {"type": "chanel"}}, r"objectives\.e\.kwargs\.type: 'chanel' is not one of"),
    ({"kind": "layer", "items": [{"layer": "0"}], "kwargs": {"type": "channel"}}, r"objectives\.e\.kwargs\.channel: required for a channel term"),
    ({"kind": "layer", "items": [{"layer": "0", "channel": -1}], "kwargs": {"type": "channel"}}, r"objectives\.e\.kwargs\.channel \(item 0\): -1 is not a non-negative integer"),
    ({"kind": "layer", "items": [{"layer": "0", "channel": 1}], "kwargs": {"type": "channel", "layer": "2"}}, r"objectives\.e\.kwargs\.layer: also given per item"),
    ({"kind": "combination", "neurons": [0], "kwargs": {"terms": [{"weight": 1, "objective": {"type": "channel", "layer": "0", "chanel": 1}}]}},
     r"objectives\.e\.kwargs\.terms\[0\]\.objective\.chanel: unknown key"),
    ({"kind": "combination", "neurons": [0], "kwargs": {"op": "mean", "terms": [{"objective": {"type": "unit"}}]}}, r"objectives\.e\.kwargs\.op: 'mean' is not one of"),
    ({"kind": "combination", "items": [{"chan": 1}], "kwargs": {"terms": [{"objective": {"type": "channel", "layer": "0", "channel": {"item": "channel"}}}]}},
     r"objectives\.e\.items\[0\]\.channel: missing; objectives\.e\.kwargs\.terms\[0\]\.objective\.channel reads it"),
    ({"kind": "combination", "items": [{"unit": 1, "chan": 1}], "kwargs": {"terms": [{"objective": {"type": "unit"}}]}},
     r"objectives\.e\.items: field 'chan' is read by no term"),
    ({"kind": "layer", "items": [{"layer": "0", "direction": {"file": "missing.npy"}}], "kwargs": {"type": "direction"}},
     r"objectives\.e\.items\[0\]\.direction: 'missing\.npy' not found"),
])
def test_a_bad_spec_is_refused_at_planning_naming_the_key(spec, message, tmp_path):
    with pytest.raises(MEIConfigError, match=message):
        table_rows(spec, 3, tmp_path, "objectives.e")


def test_an_item_of_a_mixed_batch_gets_the_mei_it_gets_alone_through_the_engine(model):
    config = default_preset(norm=4.0, iterations=8)
    layers, channels, xs = ["0", "2", "4", "2"], [1, 4, 2, 0], [3, None, 5, 1]

    def objective(keep):
        pick = lambda values: [values[k] for k in keep]
        return (NeuronObjective(model, pick(layers), pick(channels), x=pick(xs), n_items=len(keep))
                + 0.25 * ChannelObjective(model, pick(layers), pick(channels), n_items=len(keep)))

    batch = batched_gradient_ascent(objective([0, 1, 2, 3]), config, seeds=[5, 6, 7, 8], shape=(2, 7, 7))
    for item in range(4):
        alone = batched_gradient_ascent(objective([item]), config, seeds=[5 + item], shape=(2, 7, 7))
        torch.testing.assert_close(batch.meis[item], alone.meis[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batch.scores[item], alone.scores[0], rtol=1e-4, atol=1e-5)


class KeyedCNN(nn.Module):
    """A tiny CNN called ``forward(x, data_key=...)`` that remembers the keys it was called with."""

    def __init__(self):
        super().__init__()
        self.conv = tiny_cnn(0)[0]
        self.keys: list = []

    def forward(self, x, data_key=None):
        self.keys.append(data_key)
        return self.conv(x).flatten(1)


def test_a_sums_terms_pass_the_rows_and_the_methods_keywords_to_their_one_forward(x):
    keyed = KeyedCNN()
    spec = {"kind": "combination", "data_key": "s1", "items": [{"channel": 1}, {"channel": 3}], "kwargs": {"terms": [
        {"objective": {"type": "channel", "layer": "conv", "channel": {"item": "channel"}}},
        {"weight": 2.0, "objective": {"type": "neuron", "layer": "conv", "channel": 0}}]}}
    objective = build_objective(keyed, table_rows(spec, 3, Path("."), "objectives.e"))
    objective(x[:2], ITEMS[:2])
    assert keyed.keys == ["s1"]
    with pytest.raises(MEIConfigError, match=r"data_key='s2' contradicts the objective's own data_key='s1'"):
        objective.with_forward_kwargs({"data_key": "s2"})


def test_a_combination_in_the_config_passes_the_schema_and_the_plan_and_its_rows_build_on_the_members(tmp_path):
    folder = make_project(tmp_path / "project")
    np.save(folder / "direction.npy", np.array([1.0, -1.0, 0.5], dtype=np.float32))
    config = tiny_config()
    config["objectives"]["tiny"] = {"kind": "combination", "items": [{"unit": 0, "channel": 2}, {"unit": 3, "channel": 0, "x": 1}], "kwargs": {"terms": [
        {"objective": {"type": "unit"}},
        {"weight": 0.5, "objective": {"type": "neuron", "layer": "core.1", "channel": {"item": "channel"}, "x": {"item": "x"}}},
        {"weight": -1.0, "objective": {"type": "direction", "layer": "core.3", "direction": {"file": "direction.npy"}}}]}}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        validate_config(config)
        prepare(config, ".")
    finally:
        os.chdir(cwd)
    rows = json.loads((folder / "resources/objectives/tiny/shard0.json").read_text())["rows"]
    assert [(r["neuron_id"], r["output_unit"], r["kind"]) for r in rows] == [(0, 0, "combination"), (1, 3, "combination")]
    members = []
    for seed in (1, 2):
        spec = member_spec(seed)
        member = build_demo_cnn(**spec["builder_kwargs"])
        member.load_state_dict(torch.load(folder / spec["checkpoint"]))
        members.append(member.eval())
    ensemble = EnsembleModel(*members)
    images = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    want = (UnitObjective(ensemble, [0, 3]) + 0.5 * NeuronObjective(ensemble, "core.1", [2, 0], x=[None, 1])
            - DirectionObjective(ensemble, "core.3", [1.0, -1.0, 0.5]))
    assert torch.allclose(build_objective(ensemble, rows)(images, ITEMS[:2]), want(images, ITEMS[:2]), atol=TOLERANCE, rtol=0)
