"""Preconditioners rewrite each row's gradient before the optimiser step."""

from __future__ import annotations

import torch
from torch import Tensor

from .components import Preconditioner, Step
from .ops import check_spatial, gaussian_blur, per_row

__all__ = ["GaussianBlur", "FourierSmoothing", "DivideByMeanOfAbsolute", "MultiplyBy"]


class GaussianBlur(Preconditioner):
    """Blur the gradient spatially with ``sigma · decay_factor**i`` (stops blurring below
    ``min_sigma``). Large early blur finds the coarse structure; the decay lets detail in later."""

    def __init__(self, sigma: float = 1.0, decay_factor: float = 1.0, min_sigma: float = 0.0, truncate: float = 4.0):
        if sigma < 0 or decay_factor <= 0:
            raise ValueError(f"need sigma >= 0 and decay_factor > 0, got {sigma}, {decay_factor}")
        self.sigma = float(sigma)
        self.decay_factor = float(decay_factor)
        self.min_sigma = float(min_sigma)
        self.truncate = float(truncate)

    def sigma_at(self, i_iter: int) -> float:
        return self.sigma * self.decay_factor**i_iter

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        sigma = self.sigma_at(step.i_iter)
        if sigma <= self.min_sigma:
            return grad
        return gaussian_blur(grad, sigma, self.truncate)


class FourierSmoothing(Preconditioner):
    """Scale every spatial frequency of the gradient by ``1/max(f, f_min)**exponent`` (a 1/f prior
    that favours natural-image-like MEIs), via ``torch.fft.rfft2`` over the last two dims."""

    def __init__(self, exponent: float = 1.0, min_frequency: float | None = None):
        self.exponent = float(exponent)
        self.min_frequency = min_frequency

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        check_spatial(grad, "FourierSmoothing")
        height, width = grad.shape[-2:]
        fy = torch.fft.fftfreq(height, device=grad.device)
        fx = torch.fft.rfftfreq(width, device=grad.device)
        frequency = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        floor = self.min_frequency if self.min_frequency is not None else 1.0 / max(height, width)
        scale = 1.0 / frequency.clamp_min(floor) ** self.exponent
        scale = scale / scale.max()
        spectrum = torch.fft.rfft2(grad) * scale.to(grad.dtype)
        return torch.fft.irfft2(spectrum, s=(height, width))


class DivideByMeanOfAbsolute(Preconditioner):
    """``g / mean|g|`` per row: every row takes a step of the same size whatever its gradient scale.
    With SGD this is the "normalised gradient" that reaches the true filter of a linear neuron."""

    def __init__(self, eps: float = 1e-12):
        self.eps = float(eps)

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        scale = grad.abs().flatten(1).mean(1).clamp_min(self.eps)
        return grad / per_row(scale, grad)


class MultiplyBy(Preconditioner):
    """Multiply the gradient by ``const · decay_factor**i``."""

    def __init__(self, const: float = 1.0, decay_factor: float = 1.0):
        self.const = float(const)
        self.decay_factor = float(decay_factor)

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        return grad * (self.const * self.decay_factor**step.i_iter)
