"""The component options and components added for other tools' semantics, on real values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import small_cnn
from mei_core.backgrounds import ConstantBackground, NaturalImageBackground, WhiteNoiseBackground
from mei_core.components import Step
from mei_core.errors import MEIConfigError
from mei_core.initial import WithAlphaChannel
from mei_core.method import build_method
from mei_core.methods import batched_gradient_ascent
from mei_core.objectives import UnitObjective
from mei_core.objectives.base import Objective
from mei_core.ops import gaussian_kernel_1d, scheduled
from mei_core.postprocessors import ChangeStd, FixRegion, GaussianBlurInput
from mei_core.preconditioners import FourierSmoothing, GaussianBlur, MultiplyBy
from mei_core.regularizers import BoxContrast, BoxContrastPixelL2, OpacityPenalty, RowFunction, TotalVariation
from mei_core.transforms import AlphaBlend, Jitter


def step(n_rows, i_iter=0, seeds=None, row_items=None):
    row_items = torch.arange(n_rows) if row_items is None else torch.as_tensor(row_items)
    seeds = list(range(int(row_items.max()) + 1)) if seeds is None else seeds
    return Step.of_seeds(seeds, row_items, i_iter)


def test_additive_and_multiplicative_schedules():
    assert scheduled(2.0, 0.5, 3) == 0.25
    assert scheduled(2.0, -0.5, 0, "additive") == 2.5  # sinzlab/mei: sigma + decay·(i − 1)
    assert scheduled(2.0, -0.5, 3, "additive") == 1.0
    assert scheduled(2.0, None, 9, "additive") == 2.0
    assert MultiplyBy(const=2.0, decay_factor=0.5, decay="additive")(torch.ones(1, 1, 1, 1), step(1, i_iter=3)).item() == 3.0
    blur = GaussianBlur(sigma=(2.0, 1.0), decay_factor=-0.5, decay="additive", min_sigma=0.0)
    assert blur.sigma_at(0) == (2.5, 1.5) and blur.sigma_at(3) == (1.0, 0.0)


def test_gaussian_blur_options_pad_mode_radius_and_alpha_channel():
    assert gaussian_kernel_1d(0.625, 4.0, radius="ceil").numel() == 7  # ceil(2.5) = 3
    assert gaussian_kernel_1d(0.625, 4.0, radius="round").numel() == 5  # round(2.5) = 2 (half to even)
    x = torch.zeros(1, 2, 9, 9)
    x[0, :, 0, 4] = 1.0  # an impulse on the top edge
    zero_padded = GaussianBlur(sigma=1.0, pad_mode="constant")(x, step(1))
    replicated = GaussianBlur(sigma=1.0, pad_mode="replicate")(x, step(1))
    reflected = GaussianBlur(sigma=1.0, pad_mode="reflect")(x, step(1))
    half_kernel = gaussian_kernel_1d(1.0)[4:].sum().item()  # zeros let the upper half out of the image
    assert zero_padded[0, 0].sum().item() == pytest.approx(half_kernel)
    assert replicated[0, 0].sum().item() > 1.0  # the edge row is counted again above the image
    kept = GaussianBlurInput(sigma=1.0, exclude_last_channel=True)(x, step(1))
    assert torch.equal(kept[:, 1], x[:, 1]) and torch.allclose(kept[:, 0], reflected[:, 0])


def test_fourier_linear_falloff_is_one_minus_root_two_f():
    impulse = torch.zeros(1, 1, 8, 8)
    impulse[0, 0, 0, 0] = 1.0  # flat spectrum: the output's spectrum is the mask itself
    out = FourierSmoothing(exponent=2.0, mask="linear_falloff")(impulse, step(1))
    spectrum = torch.fft.rfft2(out)[0, 0].real
    fy, fx = torch.fft.fftfreq(8), torch.fft.rfftfreq(8)
    expected = (1 - torch.sqrt(fy[:, None] ** 2 + fx[None] ** 2) * 2**0.5) ** 2
    assert torch.allclose(spectrum, expected, atol=1e-6)


def test_isotropic_total_variation_and_change_std_without_keeping_the_mean():
    x = torch.tensor([[0.0, 3.0], [4.0, 0.0]]).view(1, 1, 2, 2)
    assert TotalVariation(isotropic=True)(x, step(1)).item() == pytest.approx(5.0)  # √(4² + 3²) at (0, 0)
    assert TotalVariation()(x, step(1)).item() == pytest.approx(4 + 3 + 3 + 4)
    y = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(1, 1, 2, 2)
    scaled = ChangeStd(2.0, keep_mean=False)(y, step(1))
    assert torch.allclose(scaled, y * 2.0 / y.std())


def test_box_contrast_regularisers_on_known_values():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 3.0  # energy 9 in every 3×3 window that covers (1, 1): 4 of the 4 valid windows
    penalty = BoxContrast(weight=1.0, filter_size=3, box_constraint=5.0, p=2, l1_weight=0.1)(x, step(1))
    assert penalty.item() == pytest.approx((9 - 5) ** 2 + 0.1 * 3.0)
    y = torch.tensor([2.5, -3.0, 0.0, 0.0]).view(1, 1, 2, 2)
    no_smooth = BoxContrastPixelL2(weight=1.0, upper=2.0, lower=-1.5, p=1, l2_weight=0.0)(y, step(1))
    assert no_smooth.item() == pytest.approx(0.5 + 1.5)
    assert BoxContrastPixelL2(weight=1.0, upper=2.0, lower=None, p=2, l2_weight=0.0)(y, step(1)).item() == pytest.approx(0.25)
    laplace = BoxContrastPixelL2(weight=0.0, l2_weight=1.0)(torch.ones(1, 1, 3, 3), step(1))
    # zero padding: corners 2, edges 1, centre 0 → mean of squares / 2
    assert laplace.item() == pytest.approx((4 * 4 + 4 * 1 + 0) / 9 / 2)
    assert RowFunction(lambda r: r.abs().sum(), weight=2.0)(torch.stack([y[0], -2 * y[0]]), step(2)).tolist() == pytest.approx([11.0, 22.0])


def test_jitter_reflect_shifts_and_reflects_the_border():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    shifted = Jitter(1, pad_mode="reflect").shift(x[0], 1, 0)
    assert shifted[0, 1:].tolist() == x[0, 0, :3].tolist() and shifted[0, 0].tolist() == x[0, 0, 1].tolist()
    assert torch.equal(Jitter(1).shift(x[0], 1, 0), torch.roll(x[0], 1, dims=-2))


def test_backgrounds_are_drawn_per_item_whatever_the_batch():
    images = np.random.default_rng(0).normal(size=(6, 5, 5)).astype(np.float32)
    natural = NaturalImageBackground(images, norm=2.0, x_min=-0.5, x_max=0.5)
    assert natural.images.abs().max() <= 0.5
    blend = AlphaBlend(background=natural, alpha="linear")
    x = torch.zeros(3, 2, 5, 5)  # alpha 0: the model sees the background alone
    together = blend(x, step(3, seeds=[4, 5, 6]))
    alone = blend(x[2:], Step.of_seeds([6]))
    assert torch.equal(together[2], alone[0])
    assert any(torch.allclose(together[0, 0], image) for image in natural.images)
    assert torch.allclose(blend.at_evaluation(x)[0, 0], natural.images.mean(0))
    noise = WhiteNoiseBackground(std=1.0, peak=2.12)((1, 5, 5), step(3), 0)
    assert noise.shape == (3, 1, 5, 5) and noise.flatten(1).abs().amax(1).tolist() == pytest.approx([2.12] * 3)
    assert torch.equal(AlphaBlend(background=ConstantBackground(1.5), alpha="linear")(x, step(3)), torch.full((3, 1, 5, 5), 1.5))
    assert AlphaBlend(background={"path": "WhiteNoiseBackground", "kwargs": {"std": 0.1}}).random


def test_a_white_noise_background_is_the_same_alone_and_in_a_batch_and_is_standard_normal():
    noise = WhiteNoiseBackground(mean=0.5, std=2.0)
    blend = AlphaBlend(background=noise, alpha="linear")
    x = torch.zeros(5, 2, 16, 16)  # alpha 0: the model sees the background alone
    # item 1 (seed 30) has rows 1–3 (three MEIs); alone it has the same three rows
    together = blend(x, Step.of_seeds([10, 30, 20], [0, 1, 1, 1, 2], i_iter=40))
    alone = blend(x[:3], Step.of_seeds([30], [0, 0, 0], i_iter=40))
    assert torch.equal(together[1:4], alone)
    assert not torch.equal(together[1], together[2])  # rows of one item draw their own background
    assert not torch.equal(alone, blend(x[:3], Step.of_seeds([30], [0, 0, 0], i_iter=41)))  # a new one every step
    # 2000 rows × 256 pixels: mean 0.5 and std 2 within 1 %, tails of a normal
    many = noise((1, 16, 16), Step.of_seeds(list(range(2000))), 0)
    assert abs(many.mean().item() - 0.5) < 0.02 and abs(many.std().item() - 2.0) < 0.02
    assert abs(((many - 0.5).abs() > 2 * 2.0).float().mean().item() - 0.0455) < 0.002
    assert torch.equal(blend.at_evaluation(x[:1]), torch.full((1, 1, 16, 16), 0.5))


def test_linear_alpha_and_the_alpha_channel_of_the_initial_guess():
    start = WithAlphaChannel({"path": "RandomNormal"}, alpha=0.5)((2, 1, 3, 3), torch.Generator().manual_seed(0))
    assert start.shape == (2, 2, 3, 3) and torch.all(start[:, 1] == 0.5)
    assert torch.equal(start[:, :1], torch.randn((2, 1, 3, 3), generator=torch.Generator().manual_seed(0)))
    assert OpacityPenalty(weight=2.0, alpha="linear")(start, step(2)).tolist() == [1.0, 1.0]


def test_fix_region_keeps_centre_surround_or_ring_fixed():
    yy, xx = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
    radius = ((yy - 3) ** 2 + (xx - 3) ** 2).sqrt()
    inner = torch.stack([torch.zeros(7, 7), (radius <= 1).float()])[None].numpy()  # 1×2×H×W, alpha in channel 1
    outer = torch.stack([torch.zeros(7, 7), (radius <= 2).float()])[None].numpy()
    x = torch.ones(2, 1, 7, 7)
    centre = FixRegion(inner, region="centre", channel=1)(x, step(2))
    surround = FixRegion(inner, region="surround", channel=1, fixed_value=-1.0)(x, step(2))
    ring = FixRegion(inner, region="ring", outer_mei=outer, channel=1)(x, step(2))
    assert centre[0, 0].sum().item() == 5  # the plus of radius ≤ 1
    assert torch.equal(surround[0, 0] == 1, radius > 1) and surround[0, 0, 3, 3].item() == -1.0
    assert torch.equal(ring[1, 0] == 1, (radius > 1) & (radius <= 2))
    with pytest.raises(ValueError, match="needs outer_mei"):
        FixRegion(inner, region="ring")


def test_regularize_transformed_and_model_forward_kwargs_method_options():
    config = {
        "initial": {"path": "RandomNormal"},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 0}},
        "transform": {"path": "ChangeRange", "kwargs": {"x_min": 0.0, "x_max": 1.0}},
        "regularization": {"path": "LpNorm", "kwargs": {"p": 1, "weight": 1.0}},
        "objectives": {"penalty": "PenaltyObjective"},
    }
    model = small_cnn()
    on_input = batched_gradient_ascent(UnitObjective(model, [0]), config, seeds=[0], shape=(1, 24, 24))
    on_model_view = batched_gradient_ascent(UnitObjective(model, [0]), {**config, "regularize": "transformed"}, seeds=[0], shape=(1, 24, 24))
    x = torch.randn((1, 1, 24, 24), generator=torch.Generator().manual_seed(0))
    assert on_input.traces["penalty"].values[0].item() == pytest.approx(x.abs().sum().item(), rel=1e-5)
    assert on_model_view.traces["penalty"].values[0].item() == pytest.approx(torch.sigmoid(x).sum().item(), rel=1e-5)

    class Gain(torch.nn.Module):
        def forward(self, x, gain=1.0):
            return gain * x.flatten(1)[:, :3]

    plain = batched_gradient_ascent(UnitObjective(Gain(), [2]), {**config, "transform": None, "regularization": None}, seeds=[0], shape=(1, 2, 2))
    gained = batched_gradient_ascent(UnitObjective(Gain(), [2]), {**config, "transform": None, "regularization": None,
                                                                  "model_forward_kwargs": {"gain": 5.0}}, seeds=[0], shape=(1, 2, 2))
    assert gained.scores.item() == pytest.approx(5 * plain.scores.item())
    # video objectives take them too (one door for every model call); an objective that calls no model refuses them

    class Brightness(Objective):
        def __call__(self, x, items):
            return x.flatten(1).mean(1)

    with pytest.raises(MEIConfigError, match=r"config\.model_forward_kwargs: Brightness does not pass"):
        batched_gradient_ascent(Brightness(), {**config, "model_forward_kwargs": {"gain": 2.0}}, seeds=[0], shape=(1, 2, 2))
    with pytest.raises(MEIConfigError, match=r"config\.regularize: must be one of input, transformed"):
        build_method({**config, "regularize": "both"})


def test_project_initial_applies_the_postprocessing_or_its_own_specs_before_the_first_step():
    config = {
        "initial": {"path": "RandomNormal", "kwargs": {"std": 0.1}},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 0}},
        "postprocessing": [{"path": "ChangeNorm", "kwargs": {"norm": 5.0}}, {"path": "ClipRange", "kwargs": {"x_min": -0.2, "x_max": 0.3}}],
    }
    objective = UnitObjective(small_cnn(), [0, 1])
    draws = torch.cat([torch.randn((1, 1, 24, 24), generator=torch.Generator().manual_seed(s)) * 0.1 for s in (3, 4)])
    # zero steps: the MEI is the start itself
    raw = batched_gradient_ascent(objective, config, seeds=[3, 4], shape=(1, 24, 24)).meis
    assert torch.equal(raw, draws)
    projected = batched_gradient_ascent(objective, {**config, "project_initial": True}, seeds=[3, 4], shape=(1, 24, 24)).meis
    rescaled = draws * (5.0 / draws.flatten(1).norm(dim=1)).view(2, 1, 1, 1)
    torch.testing.assert_close(projected, rescaled.clamp(-0.2, 0.3), rtol=0, atol=1e-7)
    clip_only = {**config, "project_initial": {"path": "ClipRange", "kwargs": {"x_min": -0.05, "x_max": 0.05}}}
    assert torch.equal(batched_gradient_ascent(objective, clip_only, seeds=[3, 4], shape=(1, 24, 24)).meis, draws.clamp(-0.05, 0.05))


def test_project_initial_is_checked_when_the_method_is_built_or_validated():
    from mei_core.method import validate_method

    config = {"initial": "RandomNormal", "optimizer": "SGD", "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 1}}}
    assert build_method({**config, "project_initial": True}).initial_projection == []  # no postprocessing: nothing to apply
    with pytest.raises(MEIConfigError, match=r"^config\.project_initial: must be true, false or postprocessor specs"):
        build_method({**config, "project_initial": None})
    with pytest.raises(MEIConfigError, match=r"^config\.project_initial"):
        build_method({**config, "project_initial": "NoSuchPostprocessor"})
    with pytest.raises(MEIConfigError, match=r"^config\.project_initial.*must subclass mei_core\.components\.Postprocessor"):
        build_method({**config, "project_initial": "DivideByMeanOfAbsolute"})
    two_channels = {"path": "ChangeNormJointlyClipRangeSeparately", "kwargs": {"min_max_values": [[-1, 1], [-1, 1]], "norm": 3.0}}
    with pytest.raises(MEIConfigError, match=r"^config\.project_initial: ValueError: 2 min/max pairs for 1 channels \(inputs of this ensemble are \[1, 8, 8\]\)"):
        validate_method({**config, "project_initial": two_channels}, "config", [1, 8, 8])
    validate_method({**config, "project_initial": two_channels}, "config", [2, 8, 8])


def test_linear_schedule_ramps_from_the_first_step():
    assert scheduled(1.5, -0.5, 0, "linear") == 1.5 and scheduled(1.5, -0.5, 2, "linear") == 0.5
    ramp = MultiplyBy(const=3.0, decay_factor=-1.0, decay="linear")
    assert [ramp(torch.ones(1, 1, 1, 1), step(1, i_iter=i)).item() for i in range(3)] == [3.0, 2.0, 1.0]


def test_symmetric_padding_blurs_as_scipy_ndimage_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    image = torch.randn(1, 1, 9, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.6, 1.5, 4.0):  # 4.0: the kernel (radius 16) is longer than the image
        ours = GaussianBlurInput(sigma=sigma, decay_factor=None, pad_mode="symmetric", kernel_radius="round")(image, step(1))
        theirs = gaussian_filter(image[0, 0].numpy(), sigma, mode="reflect", truncate=4.0)
        if sigma < 2:
            np.testing.assert_allclose(ours[0, 0].numpy(), theirs, rtol=0, atol=1e-12)
        else:  # scipy mirrors again past the far edge; ours clips the kernel to the image and renormalises
            np.testing.assert_allclose(ours[0, 0].numpy(), theirs, rtol=0, atol=0.05)


def test_clip_range_takes_one_bound_per_channel():
    from mei_core.postprocessors import ClipRange

    x = torch.linspace(-3, 3, 2 * 2 * 4).view(2, 2, 2, 2)
    clipped = ClipRange(x_min=[-1.0, -0.5], x_max=[1.0, 2.0])(x, step(2))
    assert clipped[:, 0].min() == -1.0 and clipped[:, 0].max() == 1.0
    assert clipped[:, 1].min() == -0.5 and clipped[:, 1].max() == 2.0
    assert torch.equal(ClipRange(x_min=-1.0, x_max=1.0)(x, step(2)), x.clamp(-1, 1))
    with pytest.raises(ValueError, match=r"x_max \(\[0\.0, 0\.0\]\) must be >= x_min \(\[1\.0, -1\.0\]\)"):
        ClipRange(x_min=[1.0, -1.0], x_max=[0.0, 0.0])
    with pytest.raises(ValueError, match="2 per-channel values for 3 channels"):
        ClipRange(x_min=[0.0, 0.0], x_max=1.0)(torch.zeros(1, 3, 2, 2), step(1))


def test_temporal_low_pass_with_zero_padding_is_openretinas_same_convolution():
    from mei_core.postprocessors import TemporalGaussianLowPass

    video = torch.randn(2, 2, 9, 3, 4, generator=torch.Generator().manual_seed(1))
    # openretina's TemporalGaussianLowPassFilterProcessor(sigma=0.5, kernel_size=5), written out
    taps = torch.arange(5).float() - 2
    kernel = torch.exp(-(taps**2) / (2 * 0.5**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 5, 1, 1).repeat(2, 1, 1, 1, 1)
    theirs = torch.nn.functional.conv3d(video, kernel, padding="same", groups=2)
    ours = TemporalGaussianLowPass(sigma=0.5, kernel_size=5, padding="zeros")(video, step(2))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # replicate padding (the default) keeps a constant time course constant; zeros darken its ends
    constant = torch.ones(1, 1, 9, 2, 2)
    assert torch.allclose(TemporalGaussianLowPass(sigma=0.5, kernel_size=5)(constant, step(1)), constant)
    assert TemporalGaussianLowPass(sigma=0.5, kernel_size=5, padding="zeros")(constant, step(1))[0, 0, 0, 0, 0] < 0.9
    with pytest.raises(ValueError, match=r"padding must be one of \('replicate', 'zeros'\), got 'reflect'"):
        TemporalGaussianLowPass(sigma=0.5, padding="reflect")


def test_the_config_schema_takes_project_initial_as_a_flag_or_postprocessor_specs():
    from mei_core.pipeline.configfile import validate_config

    def config(project_initial):
        return {"seeds": [0], "ensembles": {"e": {"input_shape": [1, 8, 8], "outputs": 1, "members": [{"torchscript": "m.ts"}]}},
                "objectives": {"e": {}}, "methods": {"m": {"preset": "mds", "config": {"project_initial": project_initial}}}}

    for accepted in (True, False, "ClipRange", [{"path": "ClipRange", "kwargs": {"x_min": 0.0, "x_max": 1.0}}]):
        validate_config(config(accepted))
    with pytest.raises(MEIConfigError, match=r"^config key methods\.m\.config\.project_initial: 3 is not valid"):
        validate_config(config(3))
