"""Preconditioners rewrite each row's gradient before the optimiser step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .components import Preconditioner, Step
from .ops import DECAYS, ScheduledGaussianBlur, check_spatial, per_row, scheduled

__all__ = ["GaussianBlur", "FourierSmoothing", "DivideByMeanOfAbsolute", "DivideByNorm", "MultiplyBy"]


class GaussianBlur(ScheduledGaussianBlur, Preconditioner):
    """Blur the gradient spatially with a sigma schedule: ``sigma · decay_factor**i`` (``decay:
    multiplicative``, the default), ``sigma + decay_factor·(i − 1)`` (``decay: additive``,
    sinzlab/mei's meaning of ``decay_factor``) or ``sigma + decay_factor·i`` (``decay: linear``);
    ``decay_factor: null`` keeps sigma constant. Stops
    blurring once sigma is at or below ``min_sigma``. Large early blur finds the coarse structure; the
    decay lets detail in later.

    ``sigma`` may be a ``(y, x)`` pair; ``pad_mode``: reflect | symmetric | replicate | constant | circular;
    ``kernel_radius``: ``ceil`` (ours) or ``round`` (sinzlab's) of ``truncate·sigma``;
    ``exclude_last_channel``: leave a transparency MEI's alpha channel unblurred (sinzlab's ``mei_only``).
    """

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        return self.blur(grad, step.i_iter)


class FourierSmoothing(Preconditioner):
    """Scale every spatial frequency ``f`` (cycles per pixel) of the gradient, via ``torch.fft.rfft2``
    over the last two dims, by a mask that favours natural-image-like MEIs:

    - ``mask: inverse_power`` (default): ``1/max(f, min_frequency)**exponent``, normalised to peak 1
      (``min_frequency`` defaults to ``1/max(H, W)``);
    - ``mask: linear_falloff``: ``(1 − √2·f)**exponent`` (1 at f = 0, 0 at the corner frequency
      ``f = √2/2``): sinzlab/mei's ``FourierSmoothing(freq_exp)``;
    - ``mask: index_power``: Walker et al. 2019's ``fft_smooth``: ``1/max(1, k)**exponent`` with ``k``
      the frequency index radius ``√(k_y² + k_x²)`` (per-axis indices, so non-square images weigh x
      and y apart), each index counted as theirs, ``min(i, N − 1 − i)`` (one off for negative
      frequencies), normalised to mean 1, applied to the full complex spectrum (the real part is kept).
    """

    MASKS = ("inverse_power", "linear_falloff", "index_power")

    def __init__(self, exponent: float = 1.0, min_frequency: float | None = None, mask: str = "inverse_power"):
        if mask not in self.MASKS:
            raise ValueError(f"mask must be one of {self.MASKS}, got {mask!r}")
        self.exponent = float(exponent)
        self.min_frequency = min_frequency
        self.mask = mask

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        check_spatial(grad, "FourierSmoothing")
        height, width = grad.shape[-2:]
        if self.mask == "index_power":
            return self._index_power(grad, height, width)
        fy = torch.fft.fftfreq(height, device=grad.device)
        fx = torch.fft.rfftfreq(width, device=grad.device)
        frequency = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        if self.mask == "linear_falloff":
            scale = (1 - frequency * 2**0.5).clamp_min(0) ** self.exponent
        else:
            floor = self.min_frequency if self.min_frequency is not None else 1.0 / max(height, width)
            scale = 1.0 / frequency.clamp_min(floor) ** self.exponent
            scale = scale / scale.max()
        spectrum = torch.fft.rfft2(grad) * scale.to(grad.dtype)
        return torch.fft.irfft2(spectrum, s=(height, width))

    def _index_power(self, grad: Tensor, height: int, width: int) -> Tensor:
        def indices(n: int) -> Tensor:
            i = torch.arange(n, dtype=torch.float32, device=grad.device)
            return torch.minimum(i, n - 1 - i)

        squared = indices(height)[:, None] ** 2 + indices(width)[None, :] ** 2
        scale = 1.0 / (squared ** (self.exponent / 2)).clamp_min(1.0)
        scale = (scale / scale.mean()).to(grad.dtype)
        return torch.fft.ifft2(torch.fft.fft2(grad) * scale).real


class DivideByMeanOfAbsolute(Preconditioner):
    """``g / mean|g|`` per row: every row takes a step of the same size whatever its gradient scale.
    With SGD this is the "normalised gradient" that reaches the true filter of a linear neuron."""

    def __init__(self, eps: float = 1e-12):
        self.eps = float(eps)

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        scale = grad.abs().flatten(1).mean(1).clamp_min(self.eps)
        return grad / per_row(scale, grad)


class DivideByNorm(Preconditioner):
    """``g / (‖g‖ + eps)`` with the L2 norm taken over ``dims`` of every row (dimensions of the row,
    counted without the batch: ``[0]`` is the first dim after it; default all). For connectome inputs
    ``B×S×L``, ``dims: [0]`` normalises every layer's gradient on its own (connectome_interpreter's
    ``normalize_gradients``, per row)."""

    def __init__(self, dims: Sequence[int] | None = None, eps: float = 1e-8):
        self.dims = None if dims is None else [int(d) for d in dims]
        self.eps = float(eps)

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        dims = list(range(1, grad.dim())) if self.dims is None else [d + 1 if d >= 0 else d for d in self.dims]
        return grad / (torch.linalg.vector_norm(grad, dim=dims, keepdim=True) + self.eps)


class MultiplyBy(Preconditioner):
    """Multiply the gradient by ``const · decay_factor**i`` (``decay: multiplicative``, the default),
    by ``const + decay_factor·(i − 1)`` (``decay: additive``, sinzlab/mei's meaning) or by ``const +
    decay_factor·i`` (``decay: linear``: a step size ramped linearly); ``decay_factor: null`` keeps
    ``const``."""

    def __init__(self, const: float = 1.0, decay_factor: float | None = 1.0, decay: str = "multiplicative"):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        self.const = float(const)
        self.decay_factor = None if decay_factor is None else float(decay_factor)
        self.decay = decay

    def __call__(self, grad: Tensor, step: Step) -> Tensor:
        return grad * scheduled(self.const, self.decay_factor, step.i_iter, self.decay)
