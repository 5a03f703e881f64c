"""Tests for the embedded ground-truth demo (mei_core.demo.v1); small settings, < 60 s."""

from __future__ import annotations

import json
import math

import pytest
from quality import at_least, at_most
import torch

from mei_core.demo.v1 import (
    PINK_NOISE_STD,
    DemoCNN,
    GroundTruthV1,
    build_demo_cnn,
    demo_dataset,
    filter_correlation,
    optimal_stimulus,
    pink_noise,
    relative_activation,
    simulate_responses,
    train_demo_cnn,
)

torch.set_num_threads(1)

SIZE = 24


@pytest.fixture(scope="module")
def population() -> GroundTruthV1:
    return GroundTruthV1.random(n_simple=4, n_complex=3, n_dog=2, size=SIZE, seed=0)


def _indices(population: GroundTruthV1, cell_type: str) -> list[int]:
    return [i for i, t in enumerate(population.cell_types) if t == cell_type]


def _quadrature_gabor(population: GroundTruthV1, neuron: int, phase: float, norm: float) -> torch.Tensor:
    even, odd = population.filters(neuron)
    return norm * (math.cos(phase) * even + math.sin(phase) * odd)


def test_population_structure(population: GroundTruthV1) -> None:
    assert population.cell_types == ["simple"] * 4 + ["complex"] * 3 + ["dog"] * 2
    assert population.filters(0).shape == (1, SIZE, SIZE)
    assert population.filters(4).shape == (2, 1, SIZE, SIZE)
    assert population.filters(7).shape == (1, SIZE, SIZE)
    rates = population(pink_noise(16, SIZE, torch.Generator().manual_seed(1)))
    assert rates.shape == (16, population.n_neurons)
    assert bool((rates >= 0).all())


def test_rates_are_maximal_at_true_filter(population: GroundTruthV1) -> None:
    norm = SIZE * PINK_NOISE_STD  # every pink-noise image has this L2 norm
    noise = pink_noise(300, SIZE, torch.Generator().manual_seed(2))
    white = torch.randn(300, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    white = white * norm / white.flatten(1).norm(dim=1)[:, None, None, None]
    with torch.no_grad():
        random_rates = population(torch.cat([noise, white]))
        for neuron in range(population.n_neurons):
            best = population(optimal_stimulus(population, neuron, norm)[None])[0, neuron]
            assert best > random_rates[:, neuron].max(), neuron


def test_complex_cells_are_phase_invariant(population: GroundTruthV1) -> None:
    for neuron in _indices(population, "complex"):
        stimuli = torch.stack([_quadrature_gabor(population, neuron, phase, SIZE) for phase in (0.0, 0.7, 2.0, 4.1)])
        with torch.no_grad():
            rates = population(stimuli)[:, neuron]
        torch.testing.assert_close(rates, rates[:1].expand_as(rates), rtol=1e-5, atol=1e-5)


def test_pink_noise_std_and_falling_spectrum() -> None:
    images = pink_noise(256, SIZE, torch.Generator().manual_seed(4))
    assert images.shape == (256, 1, SIZE, SIZE) and images.dtype == torch.float32
    per_image = images.flatten(1)
    torch.testing.assert_close(per_image.std(dim=1, unbiased=False), torch.full((256,), PINK_NOISE_STD))
    assert per_image.mean(dim=1).abs().max() < 1e-5

    power = torch.fft.fft2(images.double()).abs().pow(2).mean(dim=(0, 1))
    frequency = torch.fft.fftfreq(SIZE, dtype=torch.float64)
    radius = torch.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    edges = torch.linspace(0.02, 0.5, 7)
    band_power = [power[(radius >= lo) & (radius < hi)].mean().item() for lo, hi in zip(edges[:-1], edges[1:])]
    assert all(a > b for a, b in zip(band_power, band_power[1:])), band_power
    assert band_power[0] > 20 * band_power[-1]


def test_simulated_responses_are_poisson_counts(population: GroundTruthV1) -> None:
    images = pink_noise(2000, SIZE, torch.Generator().manual_seed(5))
    counts = simulate_responses(population, images, torch.Generator().manual_seed(6))
    again = simulate_responses(population, images, torch.Generator().manual_seed(6))
    assert torch.equal(counts, again)
    assert torch.equal(counts, counts.round()) and bool((counts >= 0).all())
    rates = population(images)
    # Poisson: mean count tracks the rate; default scale is ~8 counts per image.
    torch.testing.assert_close(counts.mean(0), rates.mean(0), rtol=0.05, atol=0.0)
    assert 5.0 < float(rates.mean()) < 11.0


def test_dict_round_trip_gives_identical_rates(population: GroundTruthV1) -> None:
    restored = GroundTruthV1.from_dict(json.loads(json.dumps(population.to_dict())))
    images = pink_noise(32, SIZE, torch.Generator().manual_seed(7))
    assert restored.cell_types == population.cell_types
    assert torch.equal(restored(images), population(images))
    # state_dict works too (filters are buffers).
    restored.load_state_dict(population.state_dict())
    assert torch.equal(restored(images), population(images))


def test_population_is_seeded() -> None:
    a = GroundTruthV1.random(2, 2, 2, seed=11)
    b = GroundTruthV1.random(2, 2, 2, seed=11)
    c = GroundTruthV1.random(2, 2, 2, seed=12)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()


def test_filter_correlation(population: GroundTruthV1) -> None:
    for neuron in range(population.n_neurons):
        own = population.filters(neuron)
        own = own[0] if population.cell_types[neuron] == "complex" else own
        assert filter_correlation(own, population, neuron) == pytest.approx(1.0, abs=1e-6)
        assert filter_correlation(-own, population, neuron) == pytest.approx(
            1.0 if population.cell_types[neuron] == "complex" else -1.0, abs=1e-6
        )
    for neuron in _indices(population, "complex"):
        for phase in (0.4, 1.3, 2.9):
            shifted = _quadrature_gabor(population, neuron, phase, 3.0)
            assert filter_correlation(shifted, population, neuron) == pytest.approx(1.0, abs=1e-5)
    simple = _indices(population, "simple")[0]
    assert abs(filter_correlation(torch.randn(1, SIZE, SIZE), population, simple)) < 0.3


def test_relative_activation(population: GroundTruthV1) -> None:
    for neuron in range(population.n_neurons):
        best = optimal_stimulus(population, neuron, 17.0)
        assert relative_activation(best, population, neuron) == pytest.approx(1.0, rel=1e-5)
        noise = pink_noise(1, SIZE, torch.Generator().manual_seed(8))[0]
        assert relative_activation(noise, population, neuron) < 0.5
    for neuron in _indices(population, "complex"):
        shifted = _quadrature_gabor(population, neuron, 1.1, 17.0)
        assert relative_activation(shifted, population, neuron) == pytest.approx(1.0, rel=1e-5)


def test_demo_cnn_builder_round_trip_and_rng_hygiene() -> None:
    kwargs = json.loads(json.dumps({"n_neurons": 5, "in_shape": [1, SIZE, SIZE], "channels": 4, "init_seed": 3}))
    rng_state = torch.random.get_rng_state()
    model = build_demo_cnn(**kwargs)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # init never touches the global RNG
    assert isinstance(model, DemoCNN)
    x = torch.randn(3, 1, SIZE, SIZE)
    output = model(x)
    assert output.shape == (3, 5) and bool((output > 0).all())
    clone = build_demo_cnn(**kwargs)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(x), output)
    assert model.readout.mask.shape[0] == 5 and model.readout.features.shape == (5, 4)

    normalised = build_demo_cnn(**kwargs, batchnorm=True).eval()
    # eval mode: no batch coupling (to float32 rounding: a convolution may take another kernel for one row)
    torch.testing.assert_close(normalised(x[:1]), normalised(x)[:1], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_data(population: GroundTruthV1) -> tuple[torch.Tensor, torch.Tensor]:
    return demo_dataset(population, n_images=1500, seed=9)


def test_training_is_bitwise_deterministic(tiny_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, responses = tiny_data[0][:300], tiny_data[1][:300]
    settings = dict(seed=5, epochs=2, batch_size=32, lr=5e-3, model_kwargs={"channels": 4})
    first, _ = train_demo_cnn(images, responses, **settings)
    second, _ = train_demo_cnn(images, responses, **settings)
    other, _ = train_demo_cnn(images, responses, **{**settings, "seed": 6})
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.readout.mask, other.readout.mask)


@pytest.mark.quality
def test_tiny_training_fits_simple_cells(
    population: GroundTruthV1, tiny_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, responses = tiny_data
    _, untrained = train_demo_cnn(images, responses, seed=0, epochs=0, population=population)
    model, trained = train_demo_cnn(images, responses, seed=0, epochs=4, population=population)
    simple_before = untrained["mean_test_correlation_by_type"]["simple"]
    simple_after = trained["mean_test_correlation_by_type"]["simple"]
    at_least("simple cells' test r", simple_after, 0.5)
    at_least("simple cells' test r gained", simple_after - simple_before, 0.2)
    assert trained["target"] == "clean_rates" and len(trained["test_correlation"]) == population.n_neurons
    assert not model.training
    json.dumps(trained)  # metrics must be storable as-is
