"""Postprocessors project each row after the optimiser step (outside autograd)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .components import Postprocessor, Step
from .ops import gaussian_blur, per_row, row_mean, row_norm, row_std, temporal_gaussian_blur

__all__ = [
    "ChangeNorm",
    "ClipRange",
    "PNormConstraintAndClip",
    "ChangeStd",
    "GaussianBlurInput",
    "ChangeNormJointlyClipRangeSeparately",
    "TemporalGaussianLowPass",
]


class ChangeNorm(Postprocessor):
    """Rescale every row to L2 norm ``norm`` (a fixed-contrast MEI)."""

    def __init__(self, norm: float):
        if norm <= 0:
            raise ValueError(f"norm must be > 0, got {norm}")
        self.norm = float(norm)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return x * per_row(self.norm / row_norm(x).clamp_min(1e-12), x)


class ClipRange(Postprocessor):
    """Clip pixels to ``[x_min, x_max]``."""

    def __init__(self, x_min: float = -1.0, x_max: float = 1.0):
        if x_max < x_min:
            raise ValueError(f"x_max ({x_max}) must be >= x_min ({x_min})")
        self.x_min = float(x_min)
        self.x_max = float(x_max)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return x.clamp(self.x_min, self.x_max)


class PNormConstraintAndClip(Postprocessor):
    """Shrink rows whose p-norm exceeds ``norm_value`` onto that norm (each row on its own), then clip."""

    def __init__(self, norm_value: float, p: float = 2.0, x_min: float = -float("inf"), x_max: float = float("inf")):
        self.norm_value = float(norm_value)
        self.p = float(p)
        self.x_min = float(x_min)
        self.x_max = float(x_max)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        norm = row_norm(x, self.p)
        shrink = torch.where(norm > self.norm_value, self.norm_value / norm.clamp_min(1e-12), torch.ones_like(norm))
        return (x * per_row(shrink, x)).clamp(self.x_min, self.x_max)


class ChangeStd(Postprocessor):
    """Rescale every row around its mean to standard deviation ``std``."""

    def __init__(self, std: float):
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.std = float(std)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        mean = per_row(row_mean(x), x)
        return (x - mean) * per_row(self.std / row_std(x).clamp_min(1e-12), x) + mean


class GaussianBlurInput(Postprocessor):
    """Blur the input itself with ``sigma · decay_factor**i`` (a sigma schedule) after each step."""

    def __init__(self, sigma: float = 1.0, decay_factor: float = 1.0, min_sigma: float = 0.0):
        self.sigma = float(sigma)
        self.decay_factor = float(decay_factor)
        self.min_sigma = float(min_sigma)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        sigma = self.sigma * self.decay_factor**step.i_iter
        return x if sigma <= self.min_sigma else gaussian_blur(x, sigma)


class ChangeNormJointlyClipRangeSeparately(Postprocessor):
    """openretina's: rescale every row to a joint L2 ``norm`` over all channels, then clip each
    channel to its own ``[min, max]`` from ``min_max_values = [[min, max], ...]`` (one pair per channel)."""

    def __init__(self, min_max_values: Sequence[Sequence[float]], norm: float):
        self.min_max_values = [(float(lo), float(hi)) for lo, hi in min_max_values]
        self.norm = float(norm)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        if x.shape[1] != len(self.min_max_values):
            raise ValueError(f"{len(self.min_max_values)} min/max pairs for {x.shape[1]} channels")
        x = x * per_row(self.norm / row_norm(x).clamp_min(1e-12), x)
        low = torch.tensor([lo for lo, _ in self.min_max_values], dtype=x.dtype, device=x.device)
        high = torch.tensor([hi for _, hi in self.min_max_values], dtype=x.dtype, device=x.device)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.maximum(torch.minimum(x, high.view(shape)), low.view(shape))


class TemporalGaussianLowPass(Postprocessor):
    """Low-pass every pixel's time course of videos ``B×C×T×H×W`` with a Gaussian of ``sigma`` frames."""

    def __init__(self, sigma: float, kernel_size: int | None = None):
        self.sigma = float(sigma)
        self.kernel_size = kernel_size

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return temporal_gaussian_blur(x, self.sigma, self.kernel_size)
