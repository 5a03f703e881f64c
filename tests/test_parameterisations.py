"""Parameterisations: the optimised variable decoded into the stimulus, in the gradient engine too."""

from __future__ import annotations

import math

import numpy as np
import pytest
from quality import at_least, at_most
import torch
from torch import nn

from mei_core import MEIConfigError, batched_gradient_ascent, default_preset
from mei_core.demo.v1 import GroundTruthV1, filter_correlation, pink_noise
from mei_core.method import build_method
from mei_core.objectives import UnitObjective
from mei_core.parameterisations import CPPN, DoG, Gabor, LinearBasis, Pixels, Sigmoid, Spectral, Tanh, ColourDecorrelated, pca_basis

from helpers import LinearNeurons, correlation, gabor


def draw(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stimulus_shape", [(1, 24, 24), (3, 23, 25), (2, 5, 16, 16)])
def test_spectral_decodes_real_images_of_the_stimulus_shape_row_by_row(stimulus_shape):
    spectral = Spectral()
    *lead, h, w = stimulus_shape
    assert spectral.initial_shape(stimulus_shape) == (*lead, h, w // 2 + 1, 2)
    variable = draw((4, *spectral.initial_shape(stimulus_shape)))
    images = spectral(variable)
    assert images.shape == (4, *stimulus_shape) and images.dtype == torch.float32
    # a row alone decodes as in the batch, to float32 rounding: the FFT may vectorise across rows (differs
    # by 6e-7 at 1×24×24 on an AVX-512 Xeon, on every torch CPU code path)
    torch.testing.assert_close(spectral(variable[2:3]), images[2:3], rtol=1e-6, atol=1e-6)
    # the reference: numpy's inverse real FFT of the scaled coefficients
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(h, w))
    coefficients = variable[0].double().numpy()
    expected = np.fft.irfft2((coefficients[..., 0] + 1j * coefficients[..., 1]) * scale, s=(h, w), norm="ortho")
    actual = images[0].double().numpy()
    constant = (actual * expected).sum() / (expected**2).sum()  # equal up to the normalisation constant
    np.testing.assert_allclose(actual, constant * expected, rtol=0, atol=1e-5 * np.abs(actual).max())
    assert constant > 0


def radial_power(images):
    h, w = images.shape[-2:]
    power = (torch.fft.rfft2(images.double(), norm="ortho").abs() ** 2).mean(dim=tuple(range(images.dim() - 2)))
    radius = torch.sqrt(torch.fft.fftfreq(h, dtype=torch.float64)[:, None] ** 2 + torch.fft.rfftfreq(w, dtype=torch.float64)[None, :] ** 2)
    return radius.flatten(), power.flatten()


@pytest.mark.quality
def test_spectral_1_over_f_scaling_makes_low_frequencies_dominate():
    spectral = Spectral(decay_power=1.0)
    images = spectral(draw((512, *spectral.initial_shape((1, 32, 32)))))
    at_least("pixel std", images.std(), 0.85)
    at_most("pixel std", images.std(), 1.1)  # about unit pixel variance, like the demo's pink noise
    radius, power = radial_power(images)
    low, high = power[(radius > 0) & (radius < 0.1)].mean(), power[radius > 0.3].mean()
    at_least("low/high power", low / high, 20.0)
    # power falls as 1/f² (amplitude as 1/f): the log-log slope is −2
    keep = radius > 0
    slope = np.polyfit(np.log(radius[keep].numpy()), np.log(power[keep].numpy()), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.1)
    flat = Spectral(decay_power=0.0)
    radius, power = radial_power(flat(draw((512, *flat.initial_shape((1, 32, 32))))))
    assert np.polyfit(np.log(radius[keep].numpy()), np.log(power[keep].numpy()), 1)[0] == pytest.approx(0.0, abs=0.1)


def test_a_truncated_spectral_basis_has_no_energy_above_its_frequency():
    spectral = Spectral(max_frequency=3)
    assert spectral.initial_shape((1, 24, 24)) == (1, 7, 4, 2)
    spectrum = torch.fft.rfft2(spectral(draw((8, 1, 7, 4, 2))), norm="ortho").abs()
    ky = torch.fft.fftfreq(24, d=1 / 24).abs()[:, None]
    kx = torch.fft.rfftfreq(24, d=1 / 24)[None, :]
    outside = ((ky > 3) | (kx > 3)).expand(24, 13)
    assert spectrum[..., outside].max() < 1e-5
    assert spectrum[..., ~outside].mean() > 0.1


def spectral_method(iterations=100):
    # Adam in Fourier space; the L2 penalty on the *stimulus* (regularizers see the decoded stimulus)
    # bounds it: for a linear neuron f the optimum of f·s − 0.5·‖s‖² is s = f
    return {
        "initial": {"path": "RandomNormal", "kwargs": {"std": 0.01}},
        "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
        "parameterisation": "Spectral",
        "regularization": {"path": "LpNorm", "kwargs": {"p": 2, "weight": 0.5, "powered": True}},
    }


@pytest.mark.quality
def test_an_mei_through_spectral_on_the_linear_gabor_neuron_is_the_filter():
    true_filter = gabor()
    objective = UnitObjective(LinearNeurons(true_filter[None]), [0])
    result = batched_gradient_ascent(objective, spectral_method(), seeds=[0], shape=(1, 24, 24))
    assert result.meis.shape == (1, 1, 24, 24)  # the decoded stimulus, not the Fourier variable
    at_least("r", correlation(result.meis[0], true_filter), 0.99)
    at_most("relative error", (result.meis[0, 0] - true_filter).norm() / true_filter.norm(), 0.02)  # f·s − 0.5·‖s‖² peaks at s = f
    assert result.scores[0].item() == pytest.approx((result.meis[0, 0] * true_filter).sum().item(), rel=1e-5)


@pytest.mark.quality
def test_through_spectral_an_item_in_a_batch_equals_the_item_alone():
    filters = torch.stack([gabor(theta=t, phase=p) for t, p in [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]])
    config = {**spectral_method(iterations=40), "transform": {"path": "Jitter", "kwargs": {"max_jitter": 2}}}
    batch = batched_gradient_ascent(UnitObjective(LinearNeurons(filters), [0, 1, 2, 1]), config, seeds=[0, 1, 2, 3], shape=(1, 24, 24))
    alone = batched_gradient_ascent(UnitObjective(LinearNeurons(filters), [1]), config, seeds=[3], shape=(1, 24, 24))
    torch.testing.assert_close(alone.meis[0], batch.meis[3], rtol=0, atol=1e-5)
    assert alone.scores[0].item() == pytest.approx(batch.scores[3].item(), rel=1e-5)
    # jitter blurs the optimum of a linear neuron, but every MEI is still closest to its own unit's filter
    for row, unit in enumerate([0, 1, 2, 1]):
        r = [correlation(batch.meis[row], f) for f in filters]
        assert max(r) == r[unit]
        at_least(f"row {row}: r", r[unit], 0.7)


def test_pixels_is_the_default_and_changes_nothing():
    objective = UnitObjective(LinearNeurons(gabor()[None]), [0])
    plain = batched_gradient_ascent(objective, default_preset(iterations=10), seeds=[4], shape=(1, 24, 24))
    explicit = batched_gradient_ascent(objective, {**default_preset(iterations=10), "parameterisation": "Pixels"}, seeds=[4], shape=(1, 24, 24))
    assert torch.equal(plain.meis, explicit.meis) and isinstance(build_method(default_preset()).parameterisation, Pixels)


@pytest.mark.quality
def test_spectral_colour_decorrelation_and_a_squashing_chain_in_the_engine():
    filters = torch.stack([gabor(size=16), -gabor(size=16), 0.5 * gabor(size=16)])[None]  # one unit, 3 channels
    objective = UnitObjective(LinearNeurons(filters), [0])
    config = spectral_method(iterations=100)
    config["parameterisation"] = ["Spectral", "ColourDecorrelated"]
    config["optimizer"]["kwargs"]["lr"] = 0.2
    assert build_method(config).parameterisation.initial_shape((3, 16, 16)) == (3, 16, 9, 2)
    result = batched_gradient_ascent(objective, config, seeds=[0], shape=(3, 16, 16))
    assert result.meis.shape == (1, 3, 16, 16)
    at_least("r", correlation(result.meis[0], filters[0]), 0.99)  # both linear and invertible: the optimum is f
    # squashed into [−1, 1]: every decoded stimulus stays inside, and the objective rises
    config["parameterisation"].append({"path": "Sigmoid", "kwargs": {"x_min": -1.0, "x_max": 1.0}})
    config["trackers"] = {"evaluation": {"path": "EvaluationObjective", "kwargs": {"interval": 99}}}
    del config["regularization"]
    result = batched_gradient_ascent(objective, config, seeds=[0], shape=(3, 16, 16))
    assert result.meis.min() >= -1.0 and result.meis.max() <= 1.0
    first, last = result.traces["evaluation"].values
    at_most("|first objective|", abs(first.item()), 1.0)
    at_least("last objective", last, 60.0)  # of at most Σ|f| = 146 (sign(f) everywhere)


def test_colour_decorrelation_mixes_channels_with_lucents_matrix():
    colour = ColourDecorrelated()
    lucent = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    torch.testing.assert_close(colour.matrix, lucent / lucent.norm(dim=0).max())
    variable = torch.zeros(1, 3, 2, 2)
    variable[0, 1, 0, 1] = 1.0  # the second decorrelated component at one pixel
    torch.testing.assert_close(colour(variable)[0, :, 0, 1], colour.matrix[:, 1])
    assert colour(variable)[0, :, 1, 1].abs().max() == 0
    with pytest.raises(ValueError, match="needs 3 channels, the stimulus has 1"):
        colour.initial_shape((1, 8, 8))


def test_sigmoid_and_tanh_squash_into_their_range():
    values = torch.linspace(-30, 30, 101)
    for squash, centre in ((Sigmoid(-2.0, 3.0), 0.5), (Tanh(-2.0, 3.0), 0.5)):
        out = squash(values)
        assert out.min() >= -2.0 and out.max() <= 3.0 and out.min() < -1.99 and out.max() > 2.99
        assert squash(torch.zeros(1)).item() == pytest.approx(centre)
        assert (out.diff() >= 0).all()


def logit(p):
    return math.log(p / (1 - p))


def test_gabor_and_dog_parameters_reproduce_the_demos_true_filters():
    population = GroundTruthV1.random(seed=0)
    cell = population.cells[0]
    gabor_parameterisation = Gabor()
    assert gabor_parameterisation.initial_shape((1, 24, 24)) == (1, 8)
    raw = [logit(cell["cx"] / 23), logit(cell["cy"] / 23), cell["theta"] / (math.pi / 2),
           logit((cell["wavelength"] - 2.5) / 21.5), logit((cell["sigma"] - 1.0) / 11.0),
           math.atanh(math.log(cell["aspect"]) / math.log(2.0)), cell["phase"] / math.pi, 1.0]
    image = gabor_parameterisation(torch.tensor([[raw]], dtype=torch.float64))
    assert filter_correlation(image[0], population, 0) >= 0.999  # the truth is zero-mean, the Gabor nearly
    dog_cell = population.cells[20]
    dog = DoG()
    assert dog.initial_shape((1, 24, 24)) == (6,)
    raw = [logit(dog_cell["cx"] / 23), logit(dog_cell["cy"] / 23), logit((dog_cell["sigma_center"] - 0.5) / 5.5),
           logit((dog_cell["sigma_surround"] / dog_cell["sigma_center"] - 1.0) / 3.0), 0.0, dog_cell["polarity"]]
    assert filter_correlation(dog(torch.tensor([raw], dtype=torch.float64))[0], population, 20) >= 0.999


def test_a_pca_basis_spans_its_images():
    images = pink_noise(200, 12, torch.Generator().manual_seed(0))
    basis, mean = pca_basis(images, 10)
    assert basis.shape == (10, 1, 12, 12) and mean.shape == (1, 12, 12)
    gram = basis.flatten(1) @ basis.flatten(1).T
    torch.testing.assert_close(gram - torch.diag(gram.diagonal()), torch.zeros(10, 10), atol=1e-4, rtol=0)  # orthogonal
    assert (gram.diagonal().diff() <= 1e-4).all()  # variances in decreasing order
    linear = LinearBasis(basis.numpy(), mean.numpy())
    assert linear.initial_shape((1, 12, 12)) == (10,)
    torch.testing.assert_close(linear(torch.eye(10)[2:3])[0], mean + basis[2])


def test_a_wrong_parameterisation_names_its_slot():
    with pytest.raises(MEIConfigError, match=r"config\.parameterisation: RandomNormal must subclass mei_core\.components\.Parameterisation"):
        build_method({**default_preset(), "parameterisation": "RandomNormal"})
    with pytest.raises(MEIConfigError, match=r"config\.parameterisation\[1\]: ClipRange must subclass"):
        build_method({**default_preset(), "parameterisation": ["Spectral", "ClipRange"]})
    with pytest.raises(MEIConfigError, match=r"config\.parameterisation\.kwargs: unknown argument 'decay'"):
        build_method({**default_preset(), "parameterisation": {"path": "Spectral", "kwargs": {"decay": 1.0}}})


# ------------------------------------------------------------------------------------- lucent's CPPN


def lucent_cppn(size: int, out_channels: int, hidden: int, layers: int, normalize: bool) -> tuple[nn.Sequential, torch.Tensor]:
    """lucent.optvis.param.cppn's network and its coordinate input, written out (square images)."""

    class CompositeActivation(nn.Module):
        def forward(self, x):
            x = torch.atan(x)
            return torch.cat([x / 0.67, (x * x) / 0.6], 1)

    r = 3**0.5
    coord_range = torch.linspace(-r, r, size)
    x = coord_range.view(-1, 1).repeat(1, coord_range.size(0))
    y = coord_range.view(1, -1).repeat(coord_range.size(0), 1)
    modules = []
    for i in range(layers):
        in_c = 2 if i == 0 else 2 * hidden
        out_c = out_channels if i == layers - 1 else hidden
        modules.append(nn.Conv2d(in_c, out_c, 1))
        if normalize:
            modules.append(nn.InstanceNorm2d(out_c))
        modules.append(CompositeActivation() if i < layers - 1 else nn.Sigmoid())
    return nn.Sequential(*modules), torch.stack([x, y], dim=0).unsqueeze(0)


@pytest.mark.parametrize("normalize", [False, True])
def test_every_row_of_the_cppn_is_lucents_network_with_that_rows_weights(normalize):
    cppn = CPPN(hidden_channels=6, layers=4, normalize=normalize)
    shape = cppn.initial_shape((3, 10, 10))
    variable = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    images = cppn(variable)
    assert images.shape == (3, 3, 10, 10) and images.min() > 0 and images.max() < 1
    for row in range(3):
        net, coordinates = lucent_cppn(10, 3, 6, 4, normalize)
        convs = [m for m in net if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv, (weight, bias) in zip(convs, cppn.weights(variable[row : row + 1])):
                conv.weight.copy_(weight[0, :, :, None, None])
                conv.bias.copy_(bias[0])
            expected = net(coordinates)[0]
        torch.testing.assert_close(images[row], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.quality
def test_a_cppn_mei_drives_its_neuron_in_a_batch_as_alone():
    filters = torch.stack([gabor(size=12, wavelength=6.0), gabor(size=12, theta=1.2, wavelength=6.0)])
    config = {"initial": {"path": "RandomNormal"}, "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
              "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 40}},
              "parameterisation": {"path": "CPPN", "kwargs": {"hidden_channels": 8, "layers": 3, "x_min": -1.0, "x_max": 1.0}}}
    model = LinearNeurons(filters)
    batch = batched_gradient_ascent(UnitObjective(model, [0, 1]), config, seeds=[3, 4], shape=(1, 12, 12))
    alone = batched_gradient_ascent(UnitObjective(model, [1]), config, seeds=[4], shape=(1, 12, 12))
    torch.testing.assert_close(alone.meis[0], batch.meis[1], rtol=1e-5, atol=1e-6)
    assert batch.meis.abs().max() <= 1.0
    # the best image in [−1, 1] is the filter's sign (response Σ|f| = 48); a random network gives
    # −1.4 and 0.3; 40 Adam steps on the networks' weights reach 32 and 31
    best = filters.flatten(1).abs().sum(1)
    at_least("worst CPPN MEI score ÷ the best image's", (batch.scores / best).min(), 0.5)  # measured 0.65
