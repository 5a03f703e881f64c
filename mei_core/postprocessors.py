"""Postprocessors project each row after the optimiser step (outside autograd)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

import torch
from torch import Tensor

from .components import Postprocessor, Step
from .ops import TEMPORAL_PADDINGS, ScheduledGaussianBlur, float_array, per_row, row_mean, row_norm, row_std, temporal_gaussian_blur

__all__ = [
    "ChangeNormAroundMean",
    "ChangeNorm",
    "ClipRange",
    "PNormConstraintAndClip",
    "ChangeStd",
    "GaussianBlurInput",
    "ChangeNormJointlyClipRangeSeparately",
    "TemporalGaussianLowPass",
    "FixRegion",
    "ZeroOutsideMask",
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
    """Clip pixels to ``[x_min, x_max]`` (floats, or one value per channel)."""

    def __init__(self, x_min: float | Sequence[float] = -1.0, x_max: float | Sequence[float] = 1.0):
        self.per_channel = isinstance(x_min, (list, tuple)) or isinstance(x_max, (list, tuple))
        if self.per_channel:
            self.x_min, self.x_max = _channel_vector(x_min), _channel_vector(x_max)
            if len(self.x_min) != len(self.x_max) and 1 not in (len(self.x_min), len(self.x_max)):
                raise ValueError(f"x_min has {len(self.x_min)} values and x_max {len(self.x_max)}: give one value or one per channel")
            bad = bool((self.x_max < self.x_min).any())
        else:
            self.x_min, self.x_max = float(x_min), float(x_max)
            bad = self.x_max < self.x_min
        if bad:
            raise ValueError(f"x_max ({x_max}) must be >= x_min ({x_min})")

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        if not self.per_channel:
            return x.clamp(self.x_min, self.x_max)
        low, high = _broadcast_channels(self.x_min, x), _broadcast_channels(self.x_max, x)
        return torch.maximum(torch.minimum(x, high), low)


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
    """Rescale every row to standard deviation ``std``: around its mean (``keep_mean: true``, the
    default), or by plain multiplication ``x · std/σ(x)`` (``keep_mean: false``, which also scales the
    mean: sinzlab/mei's ``ChangeStd(zero_mean=True)``, whose default that is)."""

    def __init__(self, std: float, keep_mean: bool = True):
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.std = float(std)
        self.keep_mean = bool(keep_mean)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        scale = per_row(self.std / row_std(x).clamp_min(1e-12), x)
        if not self.keep_mean:
            return x * scale
        mean = per_row(row_mean(x), x)
        return (x - mean) * scale + mean


class GaussianBlurInput(ScheduledGaussianBlur, Postprocessor):
    """Blur the input itself after each step, with the sigma schedule and options of
    :class:`mei_core.preconditioners.GaussianBlur` (``decay: multiplicative | additive | linear``, ``pad_mode``,
    ``kernel_radius``, ``exclude_last_channel``)."""

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return self.blur(x, step.i_iter)


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
    """Low-pass every pixel's time course of videos ``B×C×T×H×W`` with a Gaussian of ``sigma`` frames
    (``kernel_size`` frames long; default ``2·ceil(4·sigma) + 1``). ``padding``: ``replicate`` (the
    first and last frames continue) or ``zeros`` (openretina's filter, which darkens the ends)."""

    def __init__(self, sigma: float, kernel_size: int | None = None, padding: str = "replicate"):
        if padding not in TEMPORAL_PADDINGS:
            raise ValueError(f"padding must be one of {TEMPORAL_PADDINGS}, got {padding!r}")
        self.sigma = float(sigma)
        self.kernel_size = kernel_size
        self.padding = padding

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return temporal_gaussian_blur(x, self.sigma, self.kernel_size, self.padding)


REGIONS = ("centre", "surround", "ring")


def _mei_map(mei: str | Sequence | np.ndarray, channel: int, who: str) -> Tensor:
    """One channel of an earlier MEI as an ``H×W`` map: ``H×W`` as given, ``C×H×W`` or ``1×C×H×W``
    (or a video's ``…×T×H×W``: the maximum over time) at ``channel``."""
    if isinstance(mei, str):
        try:
            mei = np.load(mei)
        except OSError as error:
            raise ValueError(f"{who}: cannot read {mei!r}: {error}") from error
    array = torch.as_tensor(np.asarray(mei, dtype=np.float32))
    if array.dim() == 2:
        return array
    if array.dim() == 5 or (array.dim() == 4 and array.shape[0] == 1):
        array = array[0]
    picked = array[channel]
    return picked if picked.dim() == 2 else picked.amax(dim=0)


class FixRegion(Postprocessor):
    """Centre, surround or ring MEIs: optimise only a region given by an earlier MEI and hold the rest
    at ``fixed_value`` (a number or an array broadcast to the row).

    The region comes from the earlier MEI ``mei`` (an ``.npy`` file or array; ``H×W``, ``C×H×W`` or
    ``1×C×H×W``), read at ``channel`` (default the last: a transparency MEI's alpha) as
    ``mask = map > threshold``:

    - ``region: centre``: free inside the mask (sinzlab/mei's ``GaussianBlurforCenter``);
    - ``region: surround``: free outside it (``GaussianBlurforSurround``);
    - ``region: ring``: free where ``outer_mei − mei > threshold`` (``GaussianBlurforRing``, with the
      inner MEI as ``mei`` and the larger one as ``outer_mei``).

    Every channel (and frame) of a row gets the same ``H×W`` mask.
    """

    def __init__(
        self,
        mei: str | Sequence | np.ndarray,
        region: str = "centre",
        threshold: float = 0.3,
        channel: int = -1,
        outer_mei: str | Sequence | np.ndarray | None = None,
        fixed_value: float | Sequence = 0.0,
    ):
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        if (region == "ring") != (outer_mei is not None):
            raise ValueError("region 'ring' needs outer_mei (and only it takes one)")
        inner = _mei_map(mei, channel, "FixRegion.mei")
        if region == "ring":
            outer = _mei_map(outer_mei, channel, "FixRegion.outer_mei")
            if outer.shape != inner.shape:
                raise ValueError(f"FixRegion: outer_mei {tuple(outer.shape)} and mei {tuple(inner.shape)} differ in size")
            free = (outer - inner) > threshold
        else:
            free = inner > threshold if region == "centre" else ~(inner > threshold)
        self.region, self.threshold, self.channel = region, float(threshold), int(channel)
        self.free = free
        self.fixed_value = torch.as_tensor(np.asarray(fixed_value, dtype=np.float32))

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        if tuple(x.shape[-2:]) != tuple(self.free.shape):
            raise ValueError(f"FixRegion: a mask of size {tuple(self.free.shape)} for inputs of size {tuple(x.shape[-2:])}")
        free = self.free.to(x.device)
        return torch.where(free, x, self.fixed_value.to(device=x.device, dtype=x.dtype))

    def __repr__(self) -> str:
        return f"FixRegion(region={self.region!r}, threshold={self.threshold}, free_pixels={int(self.free.sum())}/{self.free.numel()})"


class ZeroOutsideMask(Postprocessor):
    """openretina's ``ZeroOutsideMaskProcessor``: every row times ``mask`` (values or an ``.npy``
    path; ``H×W`` or anything broadcastable against a row's trailing dims), after every step. Put it
    before the norm postprocessor, so the norm is spent inside the mask."""

    def __init__(self, mask: str | Sequence | np.ndarray):
        self.mask = float_array(mask, "ZeroOutsideMask.mask")

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        if self.mask.dim() > x.dim() - 1 or any(m not in (1, s) for m, s in zip(reversed(self.mask.shape), reversed(x.shape[1:]))):
            raise ValueError(f"ZeroOutsideMask: a mask of shape {tuple(self.mask.shape)} does not broadcast against rows of shape {tuple(x.shape[1:])}")
        return x * self.mask.to(device=x.device, dtype=x.dtype)

    def __repr__(self) -> str:
        return f"ZeroOutsideMask(mask_shape={tuple(self.mask.shape)}, kept={int((self.mask != 0).sum())})"


class ChangeNormAroundMean(Postprocessor):
    """Rescale every row's deviation from the per-channel stimulus ``mean`` to L2 norm ``norm``,
    then clip to ``[x_min, x_max]`` (floats, or one value per channel).

    With ``mean`` 0 and scalar bounds this is ``ChangeNorm`` followed by ``ClipRange``; with a
    non-zero mean the budget is spent on contrast, not on the offset from zero.
    """

    def __init__(self, norm: float, mean: float | Sequence[float] = 0.0,
                 x_min: float | Sequence[float] = -math.inf, x_max: float | Sequence[float] = math.inf):
        if not norm > 0:
            raise ValueError(f"norm must be > 0, got {norm}")
        self.norm = float(norm)
        self.mean, self.x_min, self.x_max = (_channel_vector(v) for v in (mean, x_min, x_max))
        if bool((self.x_max < self.x_min).any()):
            raise ValueError(f"x_max ({x_max}) must be >= x_min ({x_min})")

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        mean, low, high = (_broadcast_channels(v, x) for v in (self.mean, self.x_min, self.x_max))
        contrast = x - mean
        contrast = contrast * per_row(self.norm / row_norm(contrast).clamp_min(1e-12), x)
        return torch.maximum(torch.minimum(mean + contrast, high), low)


def budget_centre(postprocessors: Sequence[Postprocessor]) -> Tensor | None:
    """The per-channel centre (length 1 or C) that the contrast budget of a postprocessing chain
    measures around: the ``mean`` of its first ``ChangeNormAroundMean`` (the presets take it from
    ``input_stats``); ``None`` without one (the other norms measure around 0)."""
    for postprocessor in postprocessors:
        if isinstance(postprocessor, ChangeNormAroundMean):
            return postprocessor.mean
    return None


def _channel_vector(value: float | Sequence[float]) -> Tensor:
    return torch.tensor([float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)])


def _broadcast_channels(values: Tensor, x: Tensor) -> Tensor:
    """A per-channel vector (length 1 or C) shaped to broadcast over rows ``B×C×...``."""
    if len(values) not in (1, x.shape[1]):
        raise ValueError(f"{len(values)} per-channel values for {x.shape[1]} channels")
    return values.to(dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.dim() - 2)))


# --------------------------------------------------------------------------- presets
