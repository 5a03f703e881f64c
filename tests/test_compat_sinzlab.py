"""sinzlab/mei method configs: the translation gives the MEI of sinzlab's own formulas.

``sinzlab_mei`` below is sinzlab/mei's ``MEI.step`` loop and the ``mei.legacy.ops`` /
``mei.postprocessing`` components it uses, written out as plain torch from sinzlab's code (their
``torch.rfft`` as ``torch.fft.rfft2``, ``scipy.signal.gaussian`` as ``scipy.signal.windows.gaussian``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal.windows import gaussian as scipy_gaussian
from torch import nn

from helpers import small_cnn
from mei_core.compat.sinzlab import SinzlabTranslationWarning, translate, translate_with_notes
from mei_core.errors import MEIConfigError
from mei_core.methods import gradient_ascent
from mei_core.models.ensemble import ConstrainedOutputModel

SHAPE = (1, 1, 24, 24)


# ------------------------------------------------------------------ sinzlab/mei, written out

def s_blur(x, i, sigma, decay_factor=None, truncate=4, pad_mode="reflect"):
    sigma = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    if decay_factor is not None:
        sigma = tuple(s + decay_factor * (i - 1) for s in sigma)
    yh = max(int(round(sigma[0] * truncate)), 1)
    xh = max(int(round(sigma[1] * truncate)), 1)
    yg = torch.as_tensor(scipy_gaussian(2 * yh + 1, std=sigma[0]), dtype=x.dtype)
    xg = torch.as_tensor(scipy_gaussian(2 * xh + 1, std=sigma[1]), dtype=x.dtype)
    c = x.shape[1]
    padded = F.pad(x, pad=(xh, xh, yh, yh), mode=pad_mode)
    blurred = F.conv2d(padded, yg.repeat(c, 1, 1)[..., None], groups=c)
    blurred = F.conv2d(blurred, xg.repeat(c, 1, 1, 1), groups=c)
    return blurred / (yg.sum() * xg.sum())


def s_lpnorm(x, weight=1, p=6):
    return weight * torch.mean((torch.abs(x) ** p).reshape(len(x), -1).sum(-1) ** (1 / p))


def s_box_contrast(x, weight=0.1, filter_size=7, box_constraint=10, p=2, padding=0, l1_weight=1e-3):
    box = torch.ones([1, 1, filter_size, filter_size])
    box_loss = weight * torch.mean(torch.relu(F.conv2d(x**2, box, padding=padding) - box_constraint) ** p)
    return box_loss + s_lpnorm(x, weight=l1_weight, p=1)


def s_box_contrast_pixel_l2(x, weight=0.1, upper=2.0, lower=-1.5, p=2, l2_weight=1, l1_weight=0):
    pixel = weight * torch.sum(torch.relu(x - upper) ** p + torch.relu(-((x - lower) ** p)))
    laplace = torch.tensor([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=x.dtype)[None, None]
    oc, ic, k1, k2 = x.size()
    l2 = l2_weight * torch.mean(F.conv2d(x.reshape(oc * ic, 1, k1, k2), laplace, padding=1).pow(2)) / 2
    return pixel + l2 + s_lpnorm(x, weight=l1_weight, p=1)


def s_fourier(x, freq_exp):
    h, w = x.shape[-2:]
    freq_y = torch.cat([torch.arange((h - 1) // 2 + 1, dtype=torch.float32), -torch.arange(h // 2, 0, -1, dtype=torch.float32)]) / h
    freq_x = torch.arange(w // 2 + 1, dtype=torch.float32) / w
    mask = (1 - torch.sqrt(freq_y[:, None] ** 2 + freq_x**2) * torch.sqrt(torch.tensor(2.0))) ** freq_exp
    return torch.fft.irfft2(torch.fft.rfft2(x) * mask, s=x.shape[-2:])


def s_change_std(x, std, zero_mean=True):
    x_std = torch.std(x.view(len(x), -1), dim=-1)
    x_mean = torch.mean(x.view(len(x), -1), dim=-1)
    fixed = x * (std / (x_std + 1e-9)).view(len(x), *[1] * (x.dim() - 1))
    shifted = fixed + (x_mean - torch.mean(fixed.view(len(fixed), -1), dim=-1)).view(len(x), *[1] * (x.dim() - 1))
    return fixed if zero_mean else shifted


def s_pnorm_clip(img, norm_value=30.0, p=1, max_pixel_value=1.0, min_pixel_value=-1.0):
    norm = torch.norm(img, p)
    img = img * (norm_value / (norm + 1e-12)) if norm > norm_value else img
    img = torch.where(img > max_pixel_value, torch.tensor(max_pixel_value), img)
    return torch.where(img < min_pixel_value, torch.tensor(min_pixel_value), img)


def s_change_norm(x, norm):
    return x * (norm / torch.norm(x.view(len(x), -1), dim=-1)).view(len(x), *[1] * (x.dim() - 1))


def sinzlab_mei(model, seed, lr, num_iterations, transform=None, regularization=None, precondition=None,
                postprocessing=None, inhibitory=False, forward_kwargs=None):
    """mei.methods.gradient_ascent with RandomNormal, SGD and NumIterations, and MEI.step."""
    torch.manual_seed(seed)
    x = torch.randn(*SHAPE).requires_grad_()
    optimizer = torch.optim.SGD([x], lr=lr)
    i = 0
    while True:
        optimizer.zero_grad()
        transformed = transform(x, i) if transform else x
        evaluation = model(transformed, **(forward_kwargs or {})).sum() * (-1 if inhibitory else 1)
        reg = regularization(transformed, i) if regularization else torch.tensor(0.0)
        (-evaluation + reg).backward()
        x.grad = precondition(x.grad, i) if precondition else x.grad
        optimizer.step()
        x.data = postprocessing(x.data, i) if postprocessing else x.data
        if i == num_iterations:  # NumIterations: the state of step i is checked after the step
            return x.detach()
        i += 1


class GainModel(nn.Module):
    """A model with a keyword argument (what model_forward_kwargs is for)."""

    def __init__(self):
        super().__init__()
        self.cnn = small_cnn()

    def forward(self, x, gain=1.0):
        return gain * self.cnn(x)


def masks():
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    radius = ((yy - 11.5) ** 2 + (xx - 11.5) ** 2).sqrt()
    inner = torch.stack([torch.zeros(24, 24), (radius < 5).float()])[None].numpy()
    outer = torch.stack([torch.zeros(24, 24), (radius < 9).float()])[None].numpy()
    return inner, outer


def s_ring(x, i, inner, outer):
    ring = (torch.as_tensor(outer[0][1]) - torch.as_tensor(inner[0][1]) > 0.3) * 1
    return s_blur(x, i, sigma=1.0) * ring


CASES = {
    "blur_lp_changestd": (
        {
            "transform": {"path": "mei.legacy.ops.ChangeRange", "kwargs": {"x_min": -2.0, "x_max": 2.0}},
            "regularization": {"path": "mei.legacy.ops.LpNorm", "kwargs": {"weight": 0.05}},
            "precondition": {"path": "mei.legacy.ops.GaussianBlur", "kwargs": {"sigma": 2.0, "decay_factor": -0.1, "truncate": 3, "pad_mode": "replicate"}},
            "postprocessing": {"path": "mei.legacy.ops.ChangeStd", "kwargs": {"std": 1.0}},
        },
        dict(lr=1.0, transform=lambda x, i: torch.sigmoid(x) * 4 - 2, regularization=lambda x, i: s_lpnorm(x, weight=0.05),
             precondition=lambda g, i: s_blur(g, i, 2.0, -0.1, 3, "replicate"), postprocessing=lambda x, i: s_change_std(x, 1.0)),
    ),
    "box_multiply_pnorm_inhibitory": (
        {
            "regularization": {"path": "mei.legacy.ops.BoxContrast", "kwargs": {"weight": 0.5, "filter_size": 5, "box_constraint": 2.0, "padding": 2}},
            "precondition": {"path": "mei.legacy.ops.MultiplyBy", "kwargs": {"const": 2.0, "decay_factor": -0.05}},
            "postprocessing": {"path": "mei.postprocessing.PNormConstraintAndClip", "kwargs": {"norm_value": 20.0, "p": 2, "max_pixel_value": 1.5, "min_pixel_value": -1.5}},
            "inhibitory": True,
        },
        dict(lr=0.1, inhibitory=True, regularization=lambda x, i: s_box_contrast(x, 0.5, 5, 2.0, 2, 2),
             precondition=lambda g, i: (2.0 - 0.05 * (i - 1)) * g,
             postprocessing=lambda x, i: s_pnorm_clip(x, 20.0, 2, 1.5, -1.5)),
    ),
    "fourier_pixel_l2_input_blur": (
        {
            "regularization": {"path": "mei.legacy.ops.BoxContrastPixelL2", "kwargs": {"weight": 0.2, "upper": 1.0, "lower": -1.0, "p": 1, "l2_weight": 0.5, "l1_weight": 0.01}},
            "precondition": {"path": "mei.legacy.ops.FourierSmoothing", "kwargs": {"freq_exp": 2.0}},
            "postprocessing": {"path": "mei.legacy.ops.GaussianBlur", "kwargs": {"sigma": [1.0, 0.5], "decay_factor": -0.02, "pad_mode": "constant"}},
        },
        dict(lr=0.5, regularization=lambda x, i: s_box_contrast_pixel_l2(x, 0.2, 1.0, -1.0, 1, 0.5, 0.01),
             precondition=lambda g, i: s_fourier(g, 2.0), postprocessing=lambda x, i: s_blur(x, i, (1.0, 0.5), -0.02, 4, "constant")),
    ),
    "ring_divide_pixel_l2_even_p": (
        {
            "regularization": {"path": "mei.legacy.ops.BoxContrastPixelL2", "kwargs": {"weight": 0.2, "upper": 1.0, "p": 2}},
            "precondition": {"path": "mei.legacy.ops.DivideByMeanOfAbsolute"},
            "postprocessing": {"path": "mei.legacy.ops.GaussianBlurforRing", "kwargs": {"sigma": 1.0, "key": {"unit_id": 3}}},
        },
        dict(lr=0.1, regularization=lambda x, i: s_box_contrast_pixel_l2(x, 0.2, 1.0, -1.5, 2),
             precondition=lambda g, i: g / torch.abs(g).view(len(g), -1).mean(-1),
             postprocessing=lambda x, i: s_ring(x, i, *masks())),
    ),
    "forward_kwargs_blur_change_norm": (
        {
            "precondition": {"path": "mei.legacy.ops.GaussianBlur", "kwargs": {"sigma": 1.5}},
            "postprocessing": {"path": "mei.legacy.ops.ChangeNorm", "kwargs": {"norm": 8.0}},
            "model_forward_kwargs": {"gain": 3.0},
        },
        dict(lr=0.2, forward_kwargs={"gain": 3.0}, precondition=lambda g, i: s_blur(g, i, 1.5),
             postprocessing=lambda x, i: s_change_norm(x, 8.0)),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_translated_config_gives_sinzlabs_mei(case):
    parts, reference = CASES[case]
    num_iterations = 12
    config = {
        "device": "cpu",
        "initial": {"path": "mei.initial.RandomNormal"},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": reference["lr"]}},
        "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": num_iterations}},
        "objectives": [{"path": "mei.objectives.EvaluationObjective", "kwargs": {"interval": 1}}],
        **parts,
    }
    inner, outer = masks()
    ours, notes = translate_with_notes(config, meis={"inner": inner, "outer": outer})
    if case == "ring_divide_pixel_l2_even_p":
        assert any("always 0 for even p" in note for note in notes)
    base = GainModel() if "forward_kwargs" in case else small_cnn()
    model = ConstrainedOutputModel(base, 3)
    mei, score, output = gradient_ascent(model, ours, seed=7, shape=SHAPE)
    expected = sinzlab_mei(model, 7, reference["lr"], num_iterations, reference.get("transform"), reference.get("regularization"),
                           reference.get("precondition"), reference.get("postprocessing"), reference.get("inhibitory", False),
                           reference.get("forward_kwargs"))
    error = (mei - expected).abs().max().item()
    assert error < 1e-5, f"{case}: max |ours − sinzlab| = {error:.2e}"
    assert (mei - torch.randn(*SHAPE, generator=torch.Generator().manual_seed(7))).abs().max() > 0.1  # it did move
    assert len(output["EvaluationObjective"]["values"]) == num_iterations + 2  # n + 1 steps, then the returned MEI's
    assert case != "box_multiply_pnorm_inhibitory" or ours["direction"] == "minimize"


def test_the_translation_spells_out_sinzlabs_semantics():
    config = {
        "initial": {"path": "mei.initial.RandomNormalNullChannel", "kwargs": {"null_channel": 0}},
        "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
        "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": 99}},
        "transform": {"path": "mei.legacy.ops.Jitter", "kwargs": {"max_jitter": 3}},
        "regularization": {"path": "mei.legacy.ops.TotalVariation", "kwargs": {"isotropic": True}},
        "precondition": {"path": "mei.legacy.ops.GaussianBlur", "kwargs": {"sigma": 3, "decay_factor": None}},
        "postprocessing": {"path": "mei.legacy.ops.ChangeStd", "kwargs": {"std": 0.5, "zero_mean": False}},
        "mei_shape": [1, 1, 36, 64],
    }
    before = repr(config)
    with pytest.warns(SinzlabTranslationWarning) as caught:
        ours = translate(config)
    assert repr(config) == before  # never mutated
    assert {str(w.message).split(":")[0] for w in caught} == {"config.transform", "config.regularization", "config.mei_shape"}
    assert ours == {
        "initial": {"path": "RandomNormalNullChannel", "kwargs": {"null_channel": 0, "null_value": 0.0}},
        "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 100}},
        "transform": {"path": "Jitter", "kwargs": {"max_jitter": 3, "pad_mode": "reflect"}},
        "regularization": {"path": "TotalVariation", "kwargs": {"weight": 1.0, "isotropic": True}},
        "regularize": "transformed",
        "precondition": {"path": "GaussianBlur", "kwargs": {"sigma": 3, "truncate": 4.0, "pad_mode": "reflect", "kernel_radius": "round",
                                                            "exclude_last_channel": False, "decay_factor": None}},
        "postprocessing": {"path": "ChangeStd", "kwargs": {"std": 0.5, "keep_mean": True}},
    }
    mei, _, _ = gradient_ascent(small_cnn(), {**ours, "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 2}}}, seed=0, shape=SHAPE)
    assert mei.shape == SHAPE


def test_transparency_translates_to_alpha_blend_on_per_item_backgrounds(tmp_path):
    images = np.random.default_rng(0).normal(size=(5, 24, 24)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    config = {
        "initial": {"path": "mei.initial.RandomNormal"},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": 5}},
        "transparency": True,
        "transparency_weight": 0.5,
        "background": {"path": "mei.legacy.ops.NatImgBackground", "kwargs": {"dataset_fn": "f", "dataset_path": "p", "norm": 10.0}},
        "regularization": {"path": "mei.legacy.ops.RegTransparency", "kwargs": {"weight": 0.2}},
        "precondition": {"path": "mei.legacy.ops.GaussianBlur", "kwargs": {"sigma": 1.0, "mei_only": True}},
    }
    with pytest.raises(MEIConfigError, match=r"config\.background\.kwargs\.dataset_fn: .*background_images"):
        translate(config)
    with pytest.warns(SinzlabTranslationWarning, match="config.transparency"):
        ours = translate(config, background_images=str(tmp_path / "images.npy"))
    assert ours["initial"] == {"path": "WithAlphaChannel", "kwargs": {"initial": {"path": "RandomNormal", "kwargs": {}}, "alpha": 0.5}}
    assert ours["transform"]["kwargs"]["alpha"] == "linear"
    assert ours["transform"]["kwargs"]["background"]["kwargs"] == {"images": str(tmp_path / "images.npy"), "norm": 10.0, "x_min": -1.96, "x_max": 2.12, "scale": 0.5}
    assert ours["regularization"] == {"path": "OpacityPenalty", "kwargs": {"weight": 0.2, "alpha": "linear"}}
    assert ours["precondition"]["kwargs"]["exclude_last_channel"] is True
    mei, score, _ = gradient_ascent(ConstrainedOutputModel(small_cnn(), 0), ours, seed=1, shape=SHAPE)
    assert mei.shape == (1, 2, 24, 24)  # the alpha channel came along, as in sinzlab
    start = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(mei[:, 1], torch.full((1, 24, 24), 0.5))  # alpha was optimised
    assert mei[:, :1].sub(start).abs().max() > 0


@pytest.mark.parametrize("config_part, key", [
    ({"regularization": {"path": "mei.legacy.ops.Similarity"}}, r"config\.regularization\.path: sinzlab's Similarity"),
    ({"transform": {"path": "mei.legacy.ops.BatchedCrops", "kwargs": {"height": 2, "width": 2, "step_size": 1}}}, r"config\.transform\.path: BatchedCrops"),
    ({"precondition": {"path": "mylab.ops.Sharpen"}}, r"config\.precondition\.path: 'mylab\.ops\.Sharpen' is not a sinzlab/mei component"),
    ({"precondition": {"path": "mei.legacy.ops.GaussianBlur", "kwargs": {"sigma": 1, "decay": 0.9}}}, r"config\.precondition\.kwargs\.decay: not an argument"),
    ({"postprocessing": {"path": "mei.legacy.ops.ChangeNorm"}}, r"config\.postprocessing\.kwargs\.norm: required"),
    ({"postprocessing": {"path": "mei.legacy.ops.GaussianBlurforCenter", "kwargs": {"sigma": 1, "key": {}}}}, r"config\.postprocessing\.kwargs\.key: .*meis="),
    ({"transparency_wieght": 0.3}, r"config\.transparency_wieght: not a sinzlab/mei method config key"),
    ({"background": {"path": "mei.legacy.ops.WhiteNoiseBackground", "kwargs": {"mean": 0, "std": 1}}}, r"config\.background: .*transparency"),
])
def test_untranslatable_parts_are_refused_by_key(config_part, key):
    config = {
        "initial": {"path": "mei.initial.RandomNormal"},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": 5}},
        **config_part,
    }
    with pytest.raises(MEIConfigError, match=key):
        translate(config)
