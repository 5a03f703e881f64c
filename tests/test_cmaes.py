"""Gradient-free MEIs (``mei_core.cmaes.cma_es``) on the demo's true V1 population, used as a model
that only answers with responses: no autograd graph, spike counts."""

from __future__ import annotations

import copy
import statistics

import numpy as np
import pytest
import torch
from torch import nn
from quality import at_least, at_most

from mei_core import MEIConfigError, batched_gradient_ascent, default_preset
from mei_core.cmaes import cma_es, cma_es_preset
from mei_core.transforms import Jitter
from mei_core.demo.v1 import GroundTruthV1, filter_correlation
from mei_core.objectives import UnitObjective


@pytest.fixture(scope="module")
def population():
    return GroundTruthV1.random(seed=0)


def cells_of(population, kind):
    return [i for i, t in enumerate(population.cell_types) if t == kind]


class ResponsesOnly(nn.Module):
    """A closed-loop rig: rates come back as plain numbers, with no autograd graph."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(len(x))
        with torch.no_grad():
            return torch.from_numpy(self.model(x).numpy().copy())


class PoissonSpikes(nn.Module):
    """Spike counts drawn around the rates (``torch.poisson`` has no gradient)."""

    def __init__(self, model, seed):
        super().__init__()
        self.model = model
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x):
        return torch.poisson(self.model(x), generator=self.generator)


@pytest.mark.quality
def test_gabor_cma_es_on_a_responses_only_model_recovers_the_simple_cells(population):
    simple = cells_of(population, "simple")
    model = ResponsesOnly(population)
    x = torch.zeros(1, 1, 24, 24, requires_grad=True)
    assert not model(x).requires_grad  # no gradient exists: gradient ascent cannot run on it
    model.calls.clear()
    # the demo's contrast budget (L2 norm 24 = a pink-noise image, pixels within ±3)
    config = cma_es_preset("Gabor", norm=24.0, max_generations=150)
    result = cma_es(UnitObjective(model, simple), config, seeds=list(range(len(simple))), shape=(1, 24, 24))
    r = [filter_correlation(result.meis[k], population, unit) for k, unit in enumerate(simple)]
    # the ±3 clip flattens a Gabor's peaks; under it a wider envelope drives the cell more than the
    # true filter does, so r is capped near 0.97 here (1.00 at norm 10, where the clip is inactive)
    at_least("median r", statistics.median(r), 0.95)
    at_least("min r", min(r), 0.88)  # 0.915 with cma 4.5.0, 0.924 with 4.0.0: 3× that spread below 0.915
    assert result.meis.shape == (len(simple), 1, 24, 24)
    torch.testing.assert_close(result.meis.flatten(1).norm(dim=1), torch.full((len(simple),), 24.0), rtol=0.05, atol=0)
    assert result.meis.abs().max() <= 3.0
    # the score is the objective of exactly the returned MEI
    torch.testing.assert_close(result.scores, population(result.meis)[torch.arange(len(simple)), simple])
    assert result.n_iterations == [150] * len(simple) and set(result.stop_reasons) == {"max_generations"}
    # one model call per generation for all items' candidates (10 each for 8 Gabor parameters), one to score
    assert model.calls == [len(simple) * 10] * 150 + [len(simple)]


@pytest.mark.quality
def test_poisson_spike_counts_still_give_the_filter_direction(population):
    simple = cells_of(population, "simple")[:4]
    config = {**cma_es_preset("Gabor", norm=24.0, max_generations=100), "population_size": 40}
    result = cma_es(UnitObjective(PoissonSpikes(population, seed=0), simple), config, seeds=[0, 1, 2, 3], shape=(1, 24, 24))
    r = [filter_correlation(result.meis[k], population, unit) for k, unit in enumerate(simple)]
    at_least("min r", min(r), 0.9)
    assert result.scores.eq(result.scores.round()).all()  # scores are spike counts


@pytest.mark.quality
def test_pixels_on_a_small_image_find_dog_and_simple_cells(population):
    small = GroundTruthV1.random(n_simple=2, n_complex=0, n_dog=2, size=8, seed=1)
    # 64 pixels; norm 4 keeps the ±3 clip inactive, so the optimum is the filter itself
    config = cma_es_preset("Pixels", norm=4.0, max_generations=200)
    result = cma_es(UnitObjective(ResponsesOnly(small), [0, 1, 2, 3]), config, seeds=[0, 1, 2, 3], shape=(1, 8, 8))
    r = [filter_correlation(result.meis[k], small, k) for k in range(4)]
    at_least("min r", min(r), 0.995)


def test_an_item_alone_equals_the_item_in_a_batch_and_stops_on_its_own(population):
    units = cells_of(population, "simple")[:3] + cells_of(population, "dog")[:2]
    seeds = [5, 6, 7, 8, 9]
    config = {**cma_es_preset("Gabor", norm=10.0, max_generations=60), "threshold": 60.0, "returned": "best"}
    batch = cma_es(UnitObjective(population, units), config, seeds=seeds, shape=(1, 24, 24))
    assert len(set(batch.n_iterations)) > 1  # items really stopped at different generations
    assert "threshold" in batch.stop_reasons
    for k in (0, 3):
        alone = cma_es(UnitObjective(population, [units[k]]), config, seeds=[seeds[k]], shape=(1, 24, 24))
        assert torch.equal(alone.meis[0], batch.meis[k])  # same samples, same ranking: bitwise equal
        assert alone.scores[0].item() == pytest.approx(batch.scores[k].item(), rel=1e-6)  # batched matmul rounding
        assert alone.n_iterations[0] == batch.n_iterations[k] and alone.stop_reasons[0] == batch.stop_reasons[k]
    threshold_items = [k for k, reason in enumerate(batch.stop_reasons) if reason == "threshold"]
    assert (batch.scores[threshold_items] >= 60.0).all()  # "best" returns the candidate that crossed it


def test_identical_runs_are_bitwise_identical_whatever_numpys_global_state(population):
    config = {**cma_es_preset("DoG", norm=10.0, max_generations=15), "trace_interval": 5}
    runs = []
    for global_seed in (0, 123):
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        runs.append(cma_es(UnitObjective(population, [20, 21]), copy.deepcopy(config), seeds=[1, 2], shape=(1, 24, 24)))
    assert torch.equal(runs[0].meis, runs[1].meis) and torch.equal(runs[0].scores, runs[1].scores)
    assert runs[0].traces["best"].steps == [0, 5, 10]
    best = torch.stack(runs[0].traces["best"].values)  # generations × items, never decreasing
    assert best.shape == (3, 2) and (best.diff(dim=0) >= 0).all()
    assert not torch.equal(runs[0].meis[0], runs[0].meis[1])  # different seeds, different searches


@pytest.mark.quality
def test_three_meis_of_a_complex_cell_are_three_phases_of_its_filter_and_the_same_in_any_batch(population):
    complex_cells = cells_of(population, "complex")[:3]
    config = {**cma_es_preset("Gabor", norm=10.0, max_generations=80), "n_meis": 3}
    batch = cma_es(UnitObjective(population, complex_cells), config, seeds=[0, 1, 2], shape=(1, 24, 24))
    assert batch.meis.shape == (9, 1, 24, 24) and batch.n_meis == 3
    assert batch.row_items.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(batch.n_iterations) == len(batch.stop_reasons) == 3
    off_diagonal = ~torch.eye(3, dtype=torch.bool)
    between = []
    for k, unit in enumerate(complex_cells):
        meis = batch.meis[3 * k : 3 * k + 3]
        # each MEI is the cell's filter pair at some phase (phase-invariant r), and drives it as much as the best of the three
        at_least(f"cell {k}: min r", min(filter_correlation(mei, population, unit) for mei in meis), 0.95)
        at_least(f"cell {k}: min/max score", batch.scores[3 * k : 3 * k + 3].min() / batch.scores[3 * k : 3 * k + 3].max(), 0.9)
        between.append(torch.corrcoef(meis.flatten(1))[off_diagonal])
    # three searches from three starts land at three phases, some nearly opposite. Which phases is
    # chance (a platform or a cma version acts like another seed: cma 4.0.0 put two of cell 1's at
    # r 0.57): three random phases all lie within a quarter turn (every pair r > 0) with p = 3/16 per
    # cell, all nine pairs of the three cells with p < 0.007, so the pairs are judged together
    at_most("min r between the MEIs of one cell, over the three cells", torch.cat(between).min(), 0.0)
    # the second item (seed 1) alone, and last in a batch of other cells and seeds: the same three MEIs
    alone = cma_es(UnitObjective(population, [complex_cells[1]]), config, seeds=[1], shape=(1, 24, 24))
    mixed = cma_es(UnitObjective(population, [cells_of(population, "simple")[0], complex_cells[1]]), config, seeds=[7, 1], shape=(1, 24, 24))
    for other, rows in ((alone, slice(0, 3)), (mixed, slice(3, 6))):
        assert torch.equal(other.meis[rows], batch.meis[3:6])
        torch.testing.assert_close(other.scores[rows], batch.scores[3:6], rtol=1e-6, atol=0)  # batched matmul rounding
    assert alone.n_iterations == [batch.n_iterations[1]] and alone.stop_reasons == [batch.stop_reasons[1]]


class RecordingJitter(Jitter):
    """Jitter (given by import path) that remembers every row's shift of every call."""

    shifts: list[torch.Tensor] = []

    def __call__(self, x, step):
        RecordingJitter.shifts.append(step.integers(self.stream, 2, (2 * self.max_jitter[0] + 1,) * 2, low=(-self.max_jitter[0],) * 2))
        return super().__call__(x, step)


def test_every_candidate_of_a_search_sees_the_same_new_jitter_draws_each_generation(population):
    RecordingJitter.shifts = []
    model = ResponsesOnly(population)
    config = {**cma_es_preset("Gabor", norm=10.0, max_generations=3), "transform": {"path": "test_cmaes.RecordingJitter", "kwargs": {"max_jitter": 2}},
              "transform_draws": 4, "n_meis": 2, "max_batch": 50}
    cma_es(UnitObjective(model, [0, 1]), config, seeds=[3, 4], shape=(1, 24, 24))
    # 2 items × 2 MEIs × 10 candidates × 4 draws = 160 rows per generation, in calls of at most 50 rows
    assert model.calls == [50, 50, 50, 10] * 3 + [4]
    generations = [torch.cat(RecordingJitter.shifts[4 * g : 4 * g + 4]).view(4, 10, 4, 2) for g in range(3)]  # search, candidate, draw
    for shifts in generations:
        assert (shifts == shifts[:, :1]).all()  # the candidates of a search share its 4 draws
        assert len({tuple(s.flatten().tolist()) for s in shifts[:, 0]}) == 4  # each search (item, MEI) has its own
    assert not torch.equal(generations[0], generations[1])  # new draws every generation


@pytest.mark.quality
def test_a_jittered_search_gives_the_same_meis_in_any_batch_and_they_still_drive_the_cells_under_jitter(population):
    simple = cells_of(population, "simple")[:4]
    plain = {**cma_es_preset("Gabor", norm=10.0, max_generations=150), "population_size": 20}
    # 16 draws per generation (4 by default): a search on 4 draws of 25 shifts wanders, and its MEIs
    # spread so widely over seeds, and so over platforms, that no threshold holds (benchmarks/README.md)
    jittered = {**plain, "transform": {"path": "Jitter", "kwargs": {"max_jitter": 2}}, "transform_draws": 16}
    with_jitter = cma_es(UnitObjective(population, simple), jittered, seeds=[0, 1, 2, 3], shape=(1, 24, 24))
    without = cma_es(UnitObjective(population, simple), plain, seeds=[0, 1, 2, 3], shape=(1, 24, 24))

    def response_under_jitter(meis):  # the mean over the 25 shifts Jitter(2) draws from
        shifted = [population(torch.roll(meis, (dy, dx), (-2, -1)))[torch.arange(4), simple] for dy in range(-2, 3) for dx in range(-2, 3)]
        return torch.stack(shifted).mean(0)

    # a jittered objective pins the position only loosely: the MEI is the filter up to a small shift
    r = [max(filter_correlation(torch.roll(mei, (dy, dx), (-2, -1)), population, unit) for dy in range(-2, 3) for dx in range(-2, 3))
         for mei, unit in zip(with_jitter.meis, simple)]
    ratio = response_under_jitter(with_jitter.meis) / response_under_jitter(without.meis)
    # the unjittered MEI of these linear-nonlinear cells is their filter, already the most jitter-robust
    # stimulus: the jittered search comes close to it (over 10 groups of 4 seeds: median r 0.92–0.98,
    # min r 0.92–0.97, median ratio 0.97–1.02; thresholds 3× that spread below the worst)
    at_least("median r", statistics.median(r), 0.75)
    at_least("min r", min(r), 0.75)
    at_least("median ratio under jitter", ratio.median(), 0.84)
    # the score is of the unshifted MEI
    torch.testing.assert_close(with_jitter.scores, population(with_jitter.meis)[torch.arange(4), simple])
    # the third cell alone, and first in another batch: the same MEI, bitwise
    alone = cma_es(UnitObjective(population, [simple[2]]), jittered, seeds=[2], shape=(1, 24, 24))
    other = cma_es(UnitObjective(population, [simple[2], simple[0]]), {**jittered, "max_batch": 30}, seeds=[2, 9], shape=(1, 24, 24))
    assert torch.equal(alone.meis[0], with_jitter.meis[2]) and torch.equal(other.meis[0], with_jitter.meis[2])


@pytest.mark.quality
def test_minimising_gives_the_inverted_filter(population):
    config = {**cma_es_preset("Gabor", norm=10.0, max_generations=150), "direction": "minimize"}
    # a linear readout of the filter: its minimum is the inverted filter
    linear = nn.Linear(24 * 24, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(population.primary[0].reshape(1, -1))
    result = cma_es(UnitObjective(nn.Sequential(nn.Flatten(), linear), [0]), config, seeds=[0], shape=(1, 24, 24))
    at_most("r", filter_correlation(result.meis[0], population, 0), -0.98)
    assert result.scores[0] < 0


def gabor_decoder(z: torch.Tensor, size: int = 24) -> torch.Tensor:
    """A lab's own decoder by import path: 2 numbers → a vertical grating of that phase and amplitude."""
    x = torch.arange(size, dtype=z.dtype)
    grating = torch.cos(2 * torch.pi * x / 8.0 + z[:, :1]) * z[:, 1:2]
    return grating[:, None, None, :].expand(len(z), 1, size, size)


@pytest.mark.quality
def test_a_decoder_given_by_import_path():
    target = gabor_decoder(torch.tensor([[1.0, 1.0]]))[0]
    model = nn.Sequential(nn.Flatten(), nn.Linear(24 * 24, 1, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(target.reshape(1, -1))
    config = {**cma_es_preset({"path": "Decoder", "kwargs": {"decoder": "test_cmaes.gabor_decoder", "dimension": 2}}, norm=5.0, max_generations=40)}
    result = cma_es(UnitObjective(model, [0]), config, seeds=[0], shape=(1, 24, 24))
    at_least("r with the target", torch.corrcoef(torch.stack([result.meis[0].flatten(), target.flatten()]))[0, 1], 0.999)


class ThresholdedSimpleCells(nn.Module):
    """``relu(f·x − θ)`` per simple cell: silent unless the image matches the filter ``f`` with r > ``fraction``
    (θ is that fraction of the best response under the budget), so a first generation sees nothing."""

    def __init__(self, population, units, norm, fraction):
        super().__init__()
        self.filters = population.primary[units].reshape(len(units), -1)
        self.theta = fraction * (self.filters * (norm * self.filters).clamp(-3, 3)).sum(1)

    def forward(self, x):
        return torch.relu(x.reshape(len(x), -1) @ self.filters.T - self.theta)


@pytest.mark.quality
def test_searches_on_a_thresholded_model_restart_until_a_candidate_responds(population):
    from mei_core.presets import preset

    simple = cells_of(population, "simple")[:8]
    model = ThresholdedSimpleCells(population, simple, norm=10.0, fraction=0.6)
    config = preset("cma_es", input_shape=(1, 24, 24), input_stats={"mean": 0.0, "std": 1.0}, norm=10.0)
    seeds = list(range(8))
    searched = cma_es(UnitObjective(model, list(range(8))), config, seeds=seeds, shape=(1, 24, 24))
    # cma's own stops: tolfun ends a search whose first generation saw nothing
    stopped = cma_es(UnitObjective(model, list(range(8))), {**config, "flat_generations": None}, seeds=seeds, shape=(1, 24, 24))
    found = searched.scores > 0
    assert int((stopped.scores > 0).sum()) <= 2 and stopped.stop_reasons.count("tolfun") >= 6
    at_least("searches that found a response", found.sum(), 7)
    at_least("min r of those", min(filter_correlation(searched.meis[k], population, unit) for k, unit in enumerate(simple) if found[k]), 0.95)
    restarted = [k for k in range(8) if searched.n_restarts[k] > 0]
    assert restarted and all(reason in ("max_generations", "flat_restarts_exhausted") for reason in searched.stop_reasons)
    # a restarted search alone: the same MEI, bitwise, after the same restarts
    k = restarted[0]
    alone = cma_es(UnitObjective(model, [k]), config, seeds=[seeds[k]], shape=(1, 24, 24))
    in_batch = searched.items(k, k + 1)
    assert torch.equal(alone.meis, in_batch.meis)
    assert (alone.n_iterations, alone.stop_reasons, alone.n_restarts) == (in_batch.n_iterations, in_batch.stop_reasons, in_batch.n_restarts)


def test_a_search_that_nothing_answers_stops_after_its_flat_restarts(population):
    unreachable = ThresholdedSimpleCells(population, cells_of(population, "simple")[:2], norm=10.0, fraction=1.5)
    config = {**cma_es_preset("Gabor", norm=10.0, max_generations=150), "flat_generations": 4, "flat_restarts": 2}
    result = cma_es(UnitObjective(unreachable, [0, 1]), config, seeds=[0, 1], shape=(1, 24, 24))
    assert result.stop_reasons == ["flat_restarts_exhausted"] * 2
    assert result.n_restarts == [2, 2] and result.n_iterations == [12, 12]  # 4 generations from each of 3 starts
    assert (result.scores == 0).all()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sigma0": -1.0}, r"config\.sigma0: must be > 0, got -1\.0"),
        ({"sigma0": "1e-1"}, r"config\.sigma0: '1e-1' is a string that looks like a number"),
        ({"population_size": 1}, r"config\.population_size: must be >= 2, got 1"),
        ({"max_generations": 2.5}, r"config\.max_generations: must be an integer, got 2\.5"),
        ({"flat_generations": 0}, r"config\.flat_generations: must be >= 1, got 0"),
        ({"flat_restarts": 1.5}, r"config\.flat_restarts: must be an integer or null, got 1\.5"),
        ({"step_size": 0.1}, r"config\.step_size: unknown key for mei_core\.cmaes\.cma_es; known keys: parameterisation"),
        ({"returned": "last"}, r"config\.returned: must be 'mean' \(the search mean\) or 'best'"),
        ({"direction": "up"}, r"config\.direction: must be 'maximize' or 'minimize'"),
        ({"cma_options": {"popsize": 8}}, r"config\.cma_options\.popsize: set by mei_core\.cmaes \(use population_size\)"),
        ({"cma_options": {"tol_fun": 1.0}}, r"config\.cma_options\.tol_fun: unknown cma option"),
        ({"parameterisation": "RandomNormal"}, r"config\.parameterisation: RandomNormal must subclass mei_core\.components\.Parameterisation"),
        ({"parameterisation": {"path": "Gabor", "kwargs": {"components": 2}}}, r"config\.parameterisation\.kwargs: unknown argument 'components'"),
        ({"initial": "ClipRange"}, r"config\.initial: ClipRange must subclass mei_core\.components\.InitialGuess"),
        ({"postprocessing": [{"path": "ChangeNorm", "kwargs": {"norm": -1.0}}]}, r"config\.postprocessing\[0\]: constructing ChangeNorm failed"),
    ],
)
def test_a_bad_config_names_its_key(change, message):
    with pytest.raises(MEIConfigError, match=message):
        cma_es(UnitObjective(nn.Flatten(), [0]), {**cma_es_preset(), **change}, seeds=[0], shape=(1, 24, 24))


def test_the_pipeline_plan_checks_a_cma_es_method_with_its_own_keys(tmp_path):
    from mei_core.pipeline.configfile import validate_config
    from mei_core.pipeline.plan import prepare
    from workflow_support import make_project, tiny_config

    config = tiny_config()
    config["methods"]["cma"] = {"method_fn": "mei_core.cmaes.cma_es", "config": cma_es_preset("Gabor", norm=6.0, max_generations=5)}
    folder = make_project(tmp_path / "project", config)
    validate_config(config)
    plan = prepare(copy.deepcopy(config), folder, write=False)
    assert "cma" in plan.methods
    config["methods"]["cma"]["config"]["sigma0"] = 0.0
    with pytest.raises(MEIConfigError, match=r"methods\.cma\.config\.sigma0: must be > 0"):
        prepare(config, folder, write=False)


@pytest.mark.quality
def test_cma_es_and_gradient_ascent_agree_on_a_differentiable_cell(population):
    """The same cell and budget: gradient ascent on pixels and CMA-ES on Gabor parameters."""
    unit = cells_of(population, "simple")[0]
    gradient = batched_gradient_ascent(UnitObjective(population, [unit]), default_preset(norm=10.0, iterations=100, lr=1.0), seeds=[0], shape=(1, 24, 24))
    search = cma_es(UnitObjective(population, [unit]), cma_es_preset("Gabor", norm=10.0, max_generations=100), seeds=[0], shape=(1, 24, 24))
    at_least("gradient r", filter_correlation(gradient.meis[0], population, unit), 0.99)
    at_least("search r", filter_correlation(search.meis[0], population, unit), 0.99)
    at_least("search/gradient score", search.scores[0] / gradient.scores[0], 0.99)


def transparency_method(backgrounds: str) -> dict:
    """A gradient method making transparency MEIs, written as a YAML user would."""
    return {"config": {
        "initial": {"path": "WithAlphaChannel", "kwargs": {"initial": {"path": "RandomNormal", "kwargs": {"std": 0.5}}, "alpha": 0.0}},
        "optimizer": {"path": "SGD", "kwargs": {"lr": 0.2}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 10}},
        "transform": {"path": "AlphaBlend", "kwargs": {"background": {"path": "NaturalImageBackground", "kwargs": {"images": backgrounds}}}},
        "regularization": {"path": "OpacityPenalty", "kwargs": {"weight": 0.5}},
        "precondition": [{"path": "DivideByMeanOfAbsolute"}],
        "postprocessing": [{"path": "ClipRange", "kwargs": {"x_min": -3.0, "x_max": 3.0}}],
    }}


@pytest.mark.slow
def test_a_cma_es_method_and_a_transparency_method_run_through_the_pipeline(tmp_path):
    import os

    import pandas as pd
    import xarray as xr

    from mei_core.pipeline.ensembles import load_ensemble
    from mei_core.files import read_json
    from workflow_support import make_project, snakemake, tiny_config

    config = tiny_config()
    config["shard_size"] = 4  # one job per method
    # two MEIs per neuron, each searched through 4 jitter draws per generation
    config["methods"] = {"cma": {"method_fn": "mei_core.cmaes.cma_es", "config": {
        **cma_es_preset("Gabor", norm=6.0, max_generations=8), "trace_interval": 4, "n_meis": 2,
        "transform": {"path": "Jitter", "kwargs": {"max_jitter": 1}}}},
        "transparent": transparency_method("backgrounds.npy")}
    folder = make_project(tmp_path / "project", config)
    backgrounds = np.random.default_rng(0).normal(size=(5, 12, 12)).astype(np.float32)
    np.save(folder / "backgrounds.npy", backgrounds)
    snakemake(folder)
    scores = pd.read_parquet(folder / "results" / "scores.parquet")
    cma = scores[scores["method"] == "cma"]
    assert len(cma) == 8 and (cma["n_iterations"] == 8).all() and (cma["stop_reason"] == "max_generations").all()
    assert cma.groupby("neuron_id")["mei_index"].apply(sorted).tolist() == [[0, 1]] * 4
    assert scores["heldout_score"].notna().all() and len(scores) == 12
    dataset = xr.open_zarr(folder / "results" / "tiny.zarr")
    meis = dataset["mei"].sel({"method": "cma", "seed": 0})
    assert meis.dims[:2] == ("neuron", "mei_index") and meis.sizes["mei_index"] == 2
    values = meis.values
    norms = np.sqrt((values.reshape(8, -1) ** 2).sum(1))
    np.testing.assert_allclose(norms, 6.0, rtol=0.05)  # the budget reached the stored MEIs
    assert all(not np.array_equal(values[n, 0], values[n, 1]) for n in range(4))  # two searches, two MEIs
    traces = pd.read_parquet(folder / "results" / "traces.parquet")
    assert sorted(traces["tracker"].unique()) == ["best", "mean"] and sorted(traces["step"].unique()) == [0, 4]
    assert sorted(traces["mei_index"].unique()) == [0, 1]

    # the transparency MEIs: the image in `mei` (the inputs' one channel), the opacity beside it
    assert dataset["opacity"].dims == ("method", "seed", "neuron", "mei_index", "y", "x")
    image = dataset["mei"].sel({"method": "transparent", "seed": 0, "mei_index": 0}).values  # 4×1×12×12
    opacity = dataset["opacity"].sel({"method": "transparent", "seed": 0, "mei_index": 0}).values  # 4×12×12
    assert np.isfinite(image).all() and ((opacity > 0) & (opacity < 1)).all() and opacity.std() > 0.01
    assert np.isnan(dataset["opacity"].sel({"method": "cma"}).values).all()  # no transparency: no opacity
    # the score and held-out score are of the MEI blended onto the evaluation background (the images' mean)
    blended = torch.from_numpy(image * opacity[:, None] + backgrounds.mean(0) * (1 - opacity[:, None]))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        members, held_out = (load_ensemble(read_json(folder / "resources" / "ensembles" / "tiny" / f"{group}.manifest.json"))
                             for group in ("members", "validation_members"))
        with torch.no_grad():
            expected = {"score": members(blended)[torch.arange(4), torch.arange(4)], "heldout_score": held_out(blended)[torch.arange(4), torch.arange(4)]}
    finally:
        os.chdir(cwd)
    for name, values in expected.items():
        stored = dataset[name].sel({"method": "transparent", "seed": 0, "mei_index": 0}).values
        np.testing.assert_allclose(stored, values.numpy(), rtol=1e-4, atol=1e-6)


def test_editing_a_decoder_module_changes_the_method_hash(tmp_path, monkeypatch):
    from mei_core.hashing import method_hash, source_hashes

    (tmp_path / "lab_decoder.py").write_text("def decode(z):\n    return z\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = cma_es_preset({"path": "Decoder", "kwargs": {"decoder": "lab_decoder.decode", "dimension": 4}})
    before = method_hash("mei_core.cmaes.cma_es", config, source_hashes(config))
    (tmp_path / "lab_decoder.py").write_text("def decode(z):\n    return 2 * z\n")
    assert "lab_decoder.decode" in source_hashes(config)
    assert method_hash("mei_core.cmaes.cma_es", config, source_hashes(config)) != before
