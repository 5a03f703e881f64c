"""Tests for the preset registry and the contrast-budget rule (mei_core.presets); < 30 s."""

from __future__ import annotations

import math

import pytest
from quality import at_least, at_most
import torch

from mei_core import presets
from mei_core.errors import MEIConfigError
from mei_core.cmaes import build_settings
from mei_core.method import build_method
from mei_core.methods import batched_gradient_ascent
from mei_core.demo.v1 import filter_correlation
from mei_core.postprocessors import ChangeNormAroundMean
from mei_core.stoppers import Converged
from mei_core.demo.populations import PopulationRecipe, build_population_cnn, train_member
from mei_core.objectives import UnitObjective

torch.set_num_threads(1)

UNIT_STATS = {"mean": [0.0], "std": [1.0]}


def test_every_preset_builds_a_valid_method() -> None:
    steps = {"default": presets.MAX_ITERATIONS, "fixed_budget": 200, "hoefling2024": 10, "walker2019": 1000, "mds": 10,
             "sinzlab_default": 1001, "cma_es": presets.CMA_ES_SEARCH["max_generations"]}
    assert set(presets.PRESETS.names()) == set(steps)
    for info in presets.PRESETS:
        name = info.name
        assert info.description and info.parameters
        derived = {"input_shape": [1, 24, 24], "input_stats": UNIT_STATS}
        config = presets.preset(name, **{k: v for k, v in derived.items() if k in info.parameters})
        if presets.preset_method_fn(name) == "mei_core.cmaes.cma_es":  # its own config keys, checked by its method
            assert build_settings(config, f"preset.{name}").max_generations == steps[name]
            continue
        method = build_method(config, f"preset.{name}")
        if name == "default":  # stops each MEI once converged, at most this many steps
            assert isinstance(method.stopper, Converged) and method.stopper.max_iterations == steps[name]
            assert method.stopper.min_iterations == presets.WARM_STEPS
            continue
        assert method.stopper.num_iterations == steps[name]
    hoefling = presets.preset("hoefling2024", iterations=5)
    assert hoefling["postprocessing"]["kwargs"]["norm"] == 30.0
    assert hoefling["stopper"]["kwargs"]["num_iterations"] == 5


def test_default_norm_follows_the_rule() -> None:
    factor = presets.NORM_FACTOR
    # one channel: factor · std · sqrt(H·W); the mean never changes the contrast
    assert presets.contrast_budget([1, 24, 24], UNIT_STATS)["norm"] == pytest.approx(factor * 24)
    assert presets.contrast_budget([1, 24, 24], {"mean": [5.0], "std": [2.0]})["norm"] == pytest.approx(factor * 48)
    assert presets.contrast_budget([1, 48, 48], UNIT_STATS)["norm"] == pytest.approx(factor * 48)
    # channels add in quadrature; a video counts every frame's pixels
    budget = presets.contrast_budget([3, 16, 16], {"mean": [0, 1, 2], "std": [1.0, 2.0, 2.0]})
    assert budget["norm"] == pytest.approx(factor * math.sqrt(256 * 9))
    assert presets.contrast_budget([2, 10, 8, 8], {"mean": [0, 0], "std": [1, 1]})["norm"] == pytest.approx(factor * math.sqrt(1280))
    # the explicit override wins, and the step size follows the norm
    config = presets.default([1, 24, 24], {"mean": [0.5], "std": [2.0]})
    assert config["optimizer"]["kwargs"]["lr"] == pytest.approx(presets.LR_FACTOR * factor * 48 / 24)
    assert config["postprocessing"][0]["kwargs"]["norm"] == pytest.approx(factor * 48)
    assert presets.default([1, 24, 24], UNIT_STATS, norm=7.0)["postprocessing"][0]["kwargs"]["norm"] == 7.0


def test_blur_ends_at_final_sigma_and_never_switches_off() -> None:
    for iterations in (50, 200, 800):
        method = build_method(presets.default([1, 24, 24], UNIT_STATS, iterations=iterations))
        blur = method.preconditioners[0]
        # sigma per axis (y, x), the same on both
        assert blur.sigma_at(0) == pytest.approx((presets.BLUR_SIGMA,) * 2)
        assert blur.sigma_at(iterations) == pytest.approx((presets.FINAL_BLUR_SIGMA,) * 2)
        assert min(blur.sigma_at(iterations)) > blur.min_sigma


def test_with_converged_stopping_the_blur_schedule_ends_with_the_warm_phase_and_is_held() -> None:
    method = build_method(presets.default([1, 24, 24], UNIT_STATS))
    blur = method.preconditioners[0]
    assert blur.sigma_at(0) == pytest.approx((presets.BLUR_SIGMA,) * 2)
    assert blur.sigma_at(presets.WARM_STEPS // 2) > blur.sigma_at(presets.WARM_STEPS)
    # from the end of the warm phase (the first step an item may stop at) to the last step: final_sigma
    for step in (presets.WARM_STEPS, presets.WARM_STEPS + 1, 50, presets.MAX_ITERATIONS):
        assert blur.sigma_at(step) == pytest.approx((presets.FINAL_BLUR_SIGMA,) * 2)
    for bad, key in (({"warm_steps": -1}, "warm_steps"), ({"tolerance": 1.5}, "tolerance"), ({"patience": 0}, "patience"),
                     ({"warm_steps": 20, "max_iterations": 10}, "warm_steps"), ({"iterations": 0}, "iterations")):
        with pytest.raises(MEIConfigError, match=key):
            presets.default([1, 24, 24], UNIT_STATS, **bad)
    with pytest.raises(MEIConfigError, match="final_sigma"):
        presets.default([1, 24, 24], UNIT_STATS, final_sigma=2.0)


def test_clip_from_range_or_mean_plus_k_std() -> None:
    k = presets.CLIP_STDS
    budget = presets.contrast_budget([1, 8, 8], {"mean": [0.3], "std": [0.5]})
    assert (budget["x_min"], budget["x_max"]) == pytest.approx((0.3 - 0.5 * k, 0.3 + 0.5 * k))
    budget = presets.contrast_budget([1, 8, 8], {"mean": [0.3], "std": [0.5], "range": [0.0, 1.0]})
    assert (budget["x_min"], budget["x_max"]) == (0.0, 1.0)
    budget = presets.contrast_budget([2, 8, 8], {"mean": [0.0, 1.0], "std": [1.0, 1.0]})
    assert budget["x_min"] == pytest.approx([-k, 1 - k]) and budget["x_max"] == pytest.approx([k, 1 + k])


@pytest.mark.parametrize(
    ("stats", "key"),
    [
        ([0.0, 1.0], "input_stats"),
        ({"mean": [0.0]}, "input_stats.std"),
        ({"std": [1.0]}, "input_stats.mean"),
        ({"mean": [0.0], "std": [0.0]}, "input_stats.std"),
        ({"mean": ["a"], "std": [1.0]}, "input_stats.mean[0]"),
        ({"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0]}, "input_stats.std"),
        ({"mean": [0.0], "std": [1.0], "range": [1.0, -1.0]}, "input_stats.range"),
        ({"mean": [5.0], "std": [1.0], "range": [0.0, 1.0]}, "input_stats.range"),
        ({"mean": [0.0], "std": [1.0], "scale": 2}, "input_stats.scale"),
    ],
)
def test_bad_input_stats_name_the_key(stats: object, key: str) -> None:
    with pytest.raises(MEIConfigError) as caught:
        presets.preset("default", input_shape=[3, 8, 8], input_stats=stats)
    assert str(caught.value).startswith(key + ":"), str(caught.value)


def test_bad_preset_name_and_parameter() -> None:
    with pytest.raises(MEIConfigError, match="preset: unknown preset 'fancy'.*default, fixed_budget, hoefling2024"):
        presets.preset("fancy")
    with pytest.raises(MEIConfigError, match="preset.norm_factor: preset 'hoefling2024'"):
        presets.preset("hoefling2024", norm_factor=0.3)
    with pytest.raises(MEIConfigError, match="input_shape"):
        presets.preset("default", input_shape=[24, 24], input_stats=UNIT_STATS)


def test_change_norm_around_mean_fixes_contrast_not_offset() -> None:
    project = ChangeNormAroundMean(norm=3.0, mean=[0.5, -1.0], x_min=[-10, -10], x_max=[10, 10])
    x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(0)) * 5
    out = project(x, step=None)
    mean = torch.tensor([0.5, -1.0]).view(1, 2, 1, 1)
    torch.testing.assert_close((out - mean).flatten(1).norm(dim=1), torch.full((4,), 3.0))
    # the same as ChangeNorm on the deviation from the mean: the budget is spent on contrast only
    around_zero = ChangeNormAroundMean(norm=3.0, mean=0.0)(x - mean, step=None)
    torch.testing.assert_close(out, mean + around_zero)
    clipped = ChangeNormAroundMean(norm=100.0, mean=0.0, x_min=-1.0, x_max=2.0)(x, step=None)
    assert float(clipped.min()) == -1.0 and float(clipped.max()) == 2.0


def test_default_is_invariant_to_the_stimulus_units() -> None:
    """A model of standardised inputs seen through (x - m) / s: MEIs are m + s · the unit-stats MEI."""
    model = build_population_cnn(n_neurons=3, in_shape=[1, 12, 12], kernel_sizes=[5], channels=4, init_seed=1).eval()
    mean, std = 0.3, 0.5

    class InStimulusUnits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model((x - mean) / std)

    shape, units, seeds = (1, 12, 12), [0, 1, 2], [0, 1, 2]
    unit_meis = batched_gradient_ascent(UnitObjective(model, units), presets.default(shape, UNIT_STATS, iterations=30), seeds, shape).meis
    scaled = presets.default(shape, {"mean": [mean], "std": [std]}, iterations=30)
    stimulus_meis = batched_gradient_ascent(UnitObjective(InStimulusUnits(), units), scaled, seeds, shape).meis
    torch.testing.assert_close(stimulus_meis, mean + std * unit_meis, atol=1e-4, rtol=1e-4)


@pytest.mark.quality
def test_default_from_input_stats_recovers_a_known_gabor() -> None:
    """End to end: a tiny population with stimuli of mean 0.3 and std 0.5, a CNN fitted in-test,
    and the default preset given only the stimulus statistics."""
    recipe = PopulationRecipe("tiny", size=16, n_simple=3, n_complex=1, n_dog=0, stimulus_mean=0.3,
                              stimulus_std=0.5, mean_rate=10.0, n_images=2000, kernel_sizes=(7, 5),
                              channels=8, epochs=6, population_seed=5)
    member = train_member(recipe, seed=0)
    population = recipe.ground_truth()
    units = list(range(population.n_neurons))
    config = presets.preset("default", input_shape=list(recipe.input_shape), input_stats=recipe.input_stats)
    meis = batched_gradient_ascent(UnitObjective(member.model, units), config, [0] * len(units), recipe.input_shape).meis
    correlations = [filter_correlation(meis[i], population, i) for i in units]
    at_least("min r", min(correlations), 0.9)
    contrast = (meis - 0.3).flatten(1).norm(dim=1)
    torch.testing.assert_close(contrast, torch.full_like(contrast, presets.NORM_FACTOR * 0.5 * 16), atol=0.05, rtol=0)
