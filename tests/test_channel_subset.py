"""Optimising a subset of channels with the others fixed (the method option ``fixed_channels``):
the fixed channels are their values bitwise, the optimised ones are openretina's loop with the fixed
channel written back after every step, the budget is spent on the optimised channels, an item in a
batch equals the item alone, and bad configs name their key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mei_core import MEIConfigError, batched_gradient_ascent
from mei_core.method import build_method, validate_method
from mei_core.objectives import IncreaseObjective, SliceMeanReducer, UnitObjective
from mei_core.presets import preset
from openretina_like import SessionModel

torch.set_num_threads(1)

IMAGE_STATS = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.1, 0.3]}
VIDEO_STATS = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}


class ChromaticUnits(nn.Module):
    """Units that mix every channel non-linearly (so a fixed channel changes the optimised ones'
    gradient), with per-row ops only, in float64 (the AVX2 kernels sum a row differently in
    batches of other sizes; rounded back to float32, a row's response does not depend on its batch)."""

    def __init__(self, shape: tuple[int, ...], n_units: int = 3):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.register_buffer("drive", torch.randn(n_units, *shape, generator=generator, dtype=torch.float64) / shape[-1])
        self.register_buffer("gate", torch.randn(n_units, *shape, generator=generator, dtype=torch.float64) / shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        drive = (x[:, None] * self.drive).flatten(2).sum(2)  # B×N
        gate = (x[:, None] * self.gate).flatten(2).sum(2)
        return (nn.functional.softplus(drive) * (1 + torch.tanh(gate))).float()


def default_with(shape: tuple[int, ...], stats: dict, fixed: dict, iterations: int = 20) -> dict:
    config = preset("default", input_shape=list(shape), input_stats=stats, iterations=iterations)
    return {**config, "fixed_channels": fixed}


def optimised_contrast_norm(meis: torch.Tensor, mean: list[float], free: list[int]) -> torch.Tensor:
    centre = torch.tensor(mean).view(1, -1, *[1] * (meis.dim() - 2))
    return (meis - centre)[:, free].flatten(1).norm(dim=1)


# ------------------------------------------------------------------------------- the fixed channels


def test_fixed_channels_are_their_values_bitwise_in_every_mei_of_images_at_the_stimulus_mean_or_given_numbers():
    shape = (3, 10, 10)
    model = ChromaticUnits(shape)
    budget = preset("default", input_shape=list(shape), input_stats=IMAGE_STATS)["postprocessing"][0]["kwargs"]["norm"]
    # green (channel 1) at the stimulus mean, two MEIs per item
    config = {**default_with(shape, IMAGE_STATS, {"channels": [1]}), "n_meis": 2}
    result = batched_gradient_ascent(UnitObjective(model, [0, 2]), config, seeds=[0, 1], shape=shape)
    assert result.meis.shape == (4, 3, 10, 10)
    assert torch.equal(result.meis[:, 1], torch.full((4, 10, 10), 0.5))
    # the budget is spent on the optimised channels alone (here the whole stimulus's contrast too)
    torch.testing.assert_close(optimised_contrast_norm(result.meis, IMAGE_STATS["mean"], [0, 2]), torch.full((4,), budget), rtol=1e-5, atol=0)
    assert result.meis[:, 0].std() > 0.02 and result.meis[:, 2].std() > 0.02  # and the others moved
    # channels 0 and 2 at given numbers (in the order given), channel 1 alone optimised
    config = default_with(shape, IMAGE_STATS, {"channels": [2, 0], "values": [0.9, 0.1]})
    result = batched_gradient_ascent(UnitObjective(model, [1]), config, seeds=[3], shape=shape)
    assert torch.equal(result.meis[0, 2], torch.full((10, 10), 0.9)) and torch.equal(result.meis[0, 0], torch.full((10, 10), 0.1))
    # the fixed channels' own contrast (0.5 and 0.3 from the mean) is neither counted nor changed
    torch.testing.assert_close(optimised_contrast_norm(result.meis, IMAGE_STATS["mean"], [1]), torch.tensor([budget]), rtol=1e-5, atol=0)
    # and the score is the model's response to exactly that MEI
    torch.testing.assert_close(result.scores, model(result.meis)[:, 1], rtol=1e-6, atol=0)


def test_a_video_channel_fixed_to_an_earlier_mei_from_a_npy_file_is_that_channel_bitwise(tmp_path):
    shape = (2, 6, 8, 8)
    model = ChromaticUnits(shape)
    earlier = batched_gradient_ascent(UnitObjective(model, [0]), preset("default", input_shape=list(shape), input_stats=VIDEO_STATS, iterations=10),
                                      seeds=[5], shape=shape).meis
    np.save(tmp_path / "earlier.npy", earlier.numpy())  # 1×C×T×H×W, as the store holds one MEI
    config = default_with(shape, VIDEO_STATS, {"channels": [0], "values": str(tmp_path / "earlier.npy")}, iterations=10)
    result = batched_gradient_ascent(UnitObjective(model, [0, 1]), config, seeds=[0, 1], shape=shape)
    assert result.meis.shape == (2, 2, 6, 8, 8)
    assert torch.equal(result.meis[:, 0], earlier[:, 0].expand(2, 6, 8, 8))
    # the fixed channel alone (T×H×W with its channel axis) gives the same MEIs
    alone = default_with(shape, VIDEO_STATS, {"channels": [0], "values": earlier[0, :1].numpy()}, iterations=10)
    assert torch.equal(batched_gradient_ascent(UnitObjective(model, [0, 1]), alone, seeds=[0, 1], shape=shape).meis, result.meis)


# ------------------------------------------------------------------- against openretina's loop


def openretina_loop(model: nn.Module, start: torch.Tensor, fixed_green: torch.Tensor, steps: int, lr: float,
                    joint_norm: tuple[float, list[tuple[float, float]]] | None = None) -> torch.Tensor:
    """openretina's ``optimize_stimulus`` (0aadd97) written out for one stimulus ``1×2×T×H×W``: per
    step the objective (neuron 0, ``SliceMeanReducer`` frames 10-20), ``loss = −objective``,
    ``zero_grad``, ``backward``, ``SGD.step``, then every ``StimulusPostprocessor`` on
    ``stimulus.data``: a user postprocessor that writes the green channel back (openretina has no
    option for fixed channels: its loop steps the whole tensor), then
    ``ChangeNormJointlyClipRangeSeparately`` when given."""
    stimulus = start.clone()
    stimulus[:, 0] = fixed_green
    stimulus.requires_grad_(True)
    optimizer = torch.optim.SGD([stimulus], lr=lr)

    def write_back_green(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([fixed_green.expand_as(x[:, 0]), x[:, 1]], dim=1)

    def change_norm_jointly_clip_range_separately(x: torch.Tensor) -> torch.Tensor:
        norm, ranges = joint_norm
        renorm = x * (norm / torch.linalg.vector_norm(x.view(len(x), -1), dim=-1)).view(len(x), *[1] * (x.dim() - 1))
        return torch.stack([torch.clamp(renorm[:, i], min=lo, max=hi) for i, (lo, hi) in enumerate(ranges)], dim=1)

    # the write-back first: after the norm it would leave the optimised channel a budget shrunk by
    # the green contrast that the step had put there (the UV norm 3.93 instead of 4 after 5 steps here)
    postprocessors = [write_back_green] + ([change_norm_jointly_clip_range_separately] if joint_norm else [])
    for _ in range(steps):
        responses = model(stimulus, data_key="session_a").squeeze(0)  # T'×N
        objective = responses[:, [0]].mean(dim=-1).narrow(0, 10, 10).mean(dim=0)
        loss = -objective
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for postprocessor in postprocessors:
            stimulus.data = postprocessor(stimulus.data)
    return stimulus.detach()


@pytest.mark.parametrize("joint_norm", [None, (4.0, [(-3.0, 3.0), (-1.0, 1.0)])], ids=["plain SGD", "openretina's joint norm and clip"])
def test_the_optimised_channel_is_openretinas_loop_with_the_fixed_channel_written_back(joint_norm):
    torch.manual_seed(0)
    model = SessionModel(n_neurons=2, channels=2, frames_kernel=5, size=8).eval()
    shape = (2, 30, 8, 8)  # T' = 26 frames: the window 10-20 lies inside
    start = 0.3 * torch.randn((1, *shape), generator=torch.Generator().manual_seed(3))
    # plain SGD: green held at an earlier stimulus's green; with the joint norm at 0, the z-scored
    # mean, where the budget over the whole stimulus and over the optimised channel agree
    green = torch.randn(shape[1:], generator=torch.Generator().manual_seed(4)) if joint_norm is None else torch.zeros(shape[1:])
    config = {
        "initial": {"path": "FromArray", "kwargs": {"array": start[0].numpy()}},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 20.0}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 5}},
        "fixed_channels": {"channels": [0], "values": green[None].numpy()},
    }
    if joint_norm is not None:
        norm, ranges = joint_norm
        config["postprocessing"] = {"path": "ChangeNormJointlyClipRangeSeparately", "kwargs": {"min_max_values": ranges, "norm": norm}}
    objective = IncreaseObjective(model, [0], data_key="session_a", response_reducer=SliceMeanReducer(axis=0, start=10, length=10))
    ours = batched_gradient_ascent(objective, config, seeds=[0], shape=shape).meis
    theirs = openretina_loop(model, start, green, steps=5, lr=20.0, joint_norm=joint_norm)
    assert torch.equal(ours[:, 0], theirs[:, 0])
    assert (theirs[:, 1] - start[:, 1]).abs().max() > 0.05  # the loop moved the UV channel
    torch.testing.assert_close(ours[:, 1], theirs[:, 1], rtol=0, atol=1e-6)
    if joint_norm is not None:  # the UV channel spends the whole budget
        assert ours[0, 1].norm().item() == pytest.approx(joint_norm[0], rel=1e-5)


# ------------------------------------------------------------------------------- per item


def test_an_item_in_a_batch_is_bitwise_the_item_alone():
    shape = (3, 10, 10)
    model = ChromaticUnits(shape, n_units=4)
    config = {**default_with(shape, IMAGE_STATS, {"channels": [1], "values": 0.2}), "n_meis": 2}
    batch = batched_gradient_ascent(UnitObjective(model, [0, 3, 1]), config, seeds=[7, 8, 9], shape=shape)
    alone = batched_gradient_ascent(UnitObjective(model, [3]), config, seeds=[8], shape=shape)
    assert torch.equal(batch.meis[2:4], alone.meis) and torch.equal(batch.scores[2:4], alone.scores)


# ------------------------------------------------------------------------------- bad configs


def base(**fixed) -> dict:
    return {**preset("default", input_shape=[2, 8, 8], input_stats={"mean": [0.5, 0.5], "std": [0.2, 0.2]}), "fixed_channels": fixed}


BAD = {
    "a channel the stimuli lack": ({"channels": [2]}, [2, 8, 8], r"config\.fixed_channels\.channels: channel 2 does not exist: the stimuli \[2, 8, 8\] have 2 channel"),
    "a channel twice": ({"channels": [0, -2]}, [2, 8, 8], r"config\.fixed_channels\.channels: \[0, -2\] names a channel twice"),
    "every channel": ({"channels": [0, 1]}, [2, 8, 8], r"config\.fixed_channels\.channels: .* nothing is left to optimise"),
    "not a list": ({"channels": 0}, [2, 8, 8], r"config\.fixed_channels\.channels: must be a non-empty list"),
    "not integers": ({"channels": [True]}, [2, 8, 8], r"config\.fixed_channels\.channels: must be a non-empty list"),
    "numbers for other channels": ({"channels": [0], "values": [0.1, 0.2]}, [2, 8, 8], r"config\.fixed_channels\.values: 2 numbers for 1 fixed channels"),
    "an array of other channels": ({"channels": [0], "values": np.zeros((3, 8, 8))}, [2, 8, 8], r"config\.fixed_channels\.values: an array of shape \[3, 8, 8\]"),
    "an array of another size": ({"channels": [0], "values": np.zeros((1, 7, 8))}, [2, 8, 8], r"config\.fixed_channels\.values: an array of shape \[1, 7, 8\] does not fit"),
    "a missing file": ({"channels": [0], "values": "missing.npy"}, [2, 8, 8], r"config\.fixed_channels\.values: .*cannot read 'missing\.npy'"),
    "an unknown key": ({"channels": [0], "value": 0.5}, [2, 8, 8], r"config\.fixed_channels\.value: unknown key; fixed_channels has: channels, values"),
    "no channels": ({"values": 0.5}, [2, 8, 8], r"config\.fixed_channels\.channels: missing"),
    "a connectome": ({"channels": [0]}, [4, 6], r"config\.fixed_channels: fixed channels need images C×H×W or videos C×T×H×W"),
}


@pytest.mark.parametrize("fixed, shape, message", list(BAD.values()), ids=list(BAD))
def test_a_bad_fixed_channels_config_names_its_key(fixed, shape, message):
    with pytest.raises(MEIConfigError, match=message):
        validate_method(base(**fixed), "config", shape=shape)


def test_values_mean_needs_a_budget_around_a_mean_and_a_wrong_channel_fails_at_the_run_too():
    plain = {"initial": "RandomNormal", "optimizer": "SGD", "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 1}},
             "postprocessing": {"path": "ChangeNorm", "kwargs": {"norm": 1.0}}, "fixed_channels": {"channels": [0]}}
    with pytest.raises(MEIConfigError, match=r"methods\.m\.config\.fixed_channels\.values: 'mean' is the centre of the method's contrast budget"):
        build_method(plain, "methods.m.config")
    # a number is fine there; a channel the stimuli lack fails when the engine meets the shape
    plain["fixed_channels"] = {"channels": [3], "values": 0.0}
    with pytest.raises(MEIConfigError, match=r"config\.fixed_channels\.channels: channel 3 does not exist"):
        batched_gradient_ascent(UnitObjective(ChromaticUnits((2, 4, 4)), [0]), plain, seeds=[0], shape=(2, 4, 4))


def test_the_yaml_method_config_takes_fixed_channels_and_its_schema_names_a_wrong_key():
    from mei_core.pipeline.configfile import validate_config

    def config(fixed: str) -> dict:
        return {"seeds": [0], "ensembles": {"e": {"input_shape": [2, 8, 8], "outputs": 1, "members": [{"torchscript": "m.ts"}]}},
                "objectives": {"e": {}}, "methods": {"m": {"preset": "default", "config": yaml.safe_load(f"fixed_channels: {fixed}")}}}

    for accepted in ("{channels: [1]}", "{channels: [0], values: mean}", "{channels: [0], values: [0.2]}", "{channels: [0], values: earlier.npy}"):
        validate_config(config(accepted))
    with pytest.raises(MEIConfigError, match=r"^config key methods\.m\.config\.fixed_channels: 'channels' is a required property"):
        validate_config(config("{channel: [1]}"))
    with pytest.raises(MEIConfigError, match=r"^config key methods\.m\.config\.fixed_channels\.value: unknown key; known: channels, values"):
        validate_config(config("{channels: [1], value: 0.5}"))
    with pytest.raises(MEIConfigError, match=r"^config key methods\.m\.config\.fixed_channels\.channels\[0\]: 'green' is not of type 'integer'"):
        validate_config(config("{channels: [green]}"))


def test_with_a_parameterisation_the_fixed_channel_is_written_over_the_decoded_stimulus():
    shape = (2, 8, 8)
    config = {"initial": {"path": "RandomNormal", "kwargs": {"std": 0.1}}, "optimizer": {"path": "SGD", "kwargs": {"lr": 0.1}},
              "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 5}}, "parameterisation": "Spectral",
              "fixed_channels": {"channels": [1], "values": 0.25}}
    result = batched_gradient_ascent(UnitObjective(ChromaticUnits(shape), [0, 1]), config, seeds=[0, 1], shape=shape)
    assert torch.equal(result.meis[:, 1], torch.full((2, 8, 8), 0.25)) and result.meis[:, 0].std() > 0.01


def test_fixed_channels_refuse_an_alpha_channel_naming_the_key():
    config = {"initial": {"path": "WithAlphaChannel", "kwargs": {"initial": "RandomNormal"}}, "optimizer": "SGD",
              "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 1}}, "transform": "AlphaBlend",
              "fixed_channels": {"channels": [0], "values": 0.0}}
    with pytest.raises(MEIConfigError, match=r"^config\.fixed_channels: fixed channels do not combine with an alpha channel \(AlphaBlend in config\.transform\)"):
        validate_method(config, "config", shape=[2, 8, 8])
