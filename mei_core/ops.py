"""Per-sample tensor helpers shared by the components. Rows are the first dimension.

Images are ``B×C×H×W``, videos ``B×C×T×H×W``; spatial operations act on the last two dimensions and
never mix rows, channels or frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def float_array(value: str | Sequence | np.ndarray | Tensor, what: str) -> Tensor:
    """A float32 tensor from values or from the path of a ``.npy`` file; ``what`` names the argument
    in the error when the file cannot be read."""
    if isinstance(value, str):
        try:
            value = np.load(value)
        except OSError as error:
            raise ValueError(f"{what}: cannot read {value!r}: {error}") from error
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


def per_row(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a length-B vector so it broadcasts against ``like`` (B×...)."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def row_norm(x: Tensor, p: float = 2.0) -> Tensor:
    """The p-norm of every row (over all non-batch dimensions), shape ``B``."""
    return torch.linalg.vector_norm(x.flatten(1), ord=p, dim=1)


def row_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


def row_std(x: Tensor) -> Tensor:
    return x.flatten(1).std(dim=1)


#: how a transparency MEI's alpha channel is read: through a sigmoid, or as it is (sinzlab/mei)
ALPHAS = ("sigmoid", "linear")


def opacity(alpha: Tensor, mode: str = "sigmoid") -> Tensor:
    """The opacity of a raw alpha channel: ``sigmoid(alpha)`` or ``alpha`` itself (``linear``)."""
    if mode == "sigmoid":
        return torch.sigmoid(alpha)
    if mode == "linear":
        return alpha
    raise ValueError(f"alpha must be one of {ALPHAS}, got {mode!r}")


def check_spatial(x: Tensor, who: str) -> None:
    if x.dim() not in (4, 5):
        raise ValueError(f"{who} needs images B×C×H×W or videos B×C×T×H×W, got shape {tuple(x.shape)}")


#: kernel radius of a Gaussian: ``ceil(truncate·sigma)`` (ours) or Python's ``round`` (sinzlab/mei's,
#: half to even), at least 1 either way
KERNEL_RADII = ("ceil", "round")
#: ``reflect`` mirrors about the edge pixel (torch's; d c b | a b c d → c b | a b c); ``symmetric``
#: repeats the edge pixel (b a | a b c: scipy.ndimage's ``reflect``)
PAD_MODES = ("reflect", "symmetric", "replicate", "constant", "circular")
#: what a blur pass computes in: the input's dtype, or float64 rounded back after each axis
#: (scipy.ndimage.gaussian_filter's arithmetic on a float32 image: Walker et al.'s blur)
BLUR_PRECISIONS = ("input", "float64")
DECAYS = ("multiplicative", "additive", "linear")


def scheduled(value: float, decay_factor: float | None, i_iter: int, decay: str = "multiplicative",
              hold_at: float | None = None) -> float:
    """A per-step value: ``value · decay_factor**i`` (multiplicative), ``value + decay_factor·(i − 1)``
    (additive: sinzlab/mei's schedule, so step 0 uses ``value − decay_factor``) or ``value +
    decay_factor·i`` (linear: Walker et al. 2019's start-to-end ramp, step 0 uses ``value``).
    ``None``: no decay. ``hold_at``: once the schedule reaches this value it stays there (a schedule
    that ends by a step, not with the run: an item that stops early has still run all of it)."""
    if decay_factor is None:
        return value
    if decay == "multiplicative":
        current = value * decay_factor**i_iter
    elif decay == "additive":
        current = value + decay_factor * (i_iter - 1)
    elif decay == "linear":
        current = value + decay_factor * i_iter
    else:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if hold_at is None:
        return current
    return max(current, hold_at) if current <= value else min(current, hold_at)


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None, radius: str = "ceil") -> Tensor:
    """A normalised 1-D Gaussian (odd length, radius ``ceil(truncate·sigma)``, or ``round`` with
    ``radius="round"``; at least 1)."""
    if radius not in KERNEL_RADII:
        raise ValueError(f"kernel radius must be one of {KERNEL_RADII}, got {radius!r}")
    reach = truncate * sigma
    size = max(1, int(math.ceil(reach)) if radius == "ceil" else int(round(reach)))
    positions = torch.arange(-size, size + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _blur_axis(planes: Tensor, sigma: float, truncate: float, pad_mode: str, radius: str, axis: int, precision: str = "input") -> Tensor:
    """Blur ``planes`` (N×1×H×W) along ``axis`` (-2: y, -1: x); a kernel longer than the axis is
    clipped (and renormalised) for the padding modes that need it (reflect, circular)."""
    if sigma <= 0:
        return planes
    if precision == "float64" and planes.dtype != torch.float64:
        return _blur_axis(planes.double(), sigma, truncate, pad_mode, radius, axis, "scipy").to(planes.dtype)
    length = planes.shape[axis]
    if precision == "scipy":  # scipy's _gaussian_kernel1d: exp(−0.5/σ² · x²), normalised, in float64
        reach = truncate * sigma
        size = max(1, int(math.ceil(reach)) if radius == "ceil" else int(round(reach)))
        positions = torch.arange(-size, size + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 / sigma**2 * positions**2)
        kernel = (kernel / kernel.sum()).to(device=planes.device)
    else:
        kernel = gaussian_kernel_1d(sigma, truncate, dtype=planes.dtype, device=planes.device, radius=radius)
    half = kernel.numel() // 2
    if pad_mode in ("reflect", "symmetric", "circular"):
        keep = min(half, length if pad_mode == "symmetric" else length - 1)
        if keep < half:
            kernel = kernel[half - keep : half + keep + 1]
            kernel = kernel / kernel.sum()
            half = keep
    if half == 0:
        return planes
    if pad_mode == "symmetric":  # F.pad has no such mode: the mirrored edges, edge pixel included
        padded = torch.cat([planes.narrow(axis, 0, half).flip(axis), planes, planes.narrow(axis, length - half, half).flip(axis)], dim=axis)
    else:
        pad = (0, 0, half, half) if axis == -2 else (half, half, 0, 0)
        padded = F.pad(planes, pad, mode=pad_mode) if pad_mode != "constant" else F.pad(planes, pad)
    weight = kernel.view(1, 1, -1, 1) if axis == -2 else kernel.view(1, 1, 1, -1)
    return F.conv2d(padded, weight)


def gaussian_blur(
    x: Tensor, sigma: float | tuple[float, float], truncate: float = 4.0, pad_mode: str = "reflect", radius: str = "ceil",
    precision: str = "input",
) -> Tensor:
    """Separable Gaussian blur of the last two (spatial) dims, per row and channel (and frame).

    ``sigma``: one value or ``(sigma_y, sigma_x)``; an axis with sigma ``<= 0`` is left as it is.
    ``pad_mode``: ``reflect`` (default), ``symmetric`` (scipy.ndimage's ``reflect``), ``replicate``,
    ``constant`` (zeros) or ``circular``.
    ``radius``: how the kernel radius is rounded from ``truncate·sigma`` (``ceil`` or ``round``).
    With reflect or circular padding the kernel is clipped to the image size (renormalised), so
    small images with a large sigma still work. ``precision``: :data:`BLUR_PRECISIONS`.
    """
    check_spatial(x, "gaussian_blur")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if precision not in BLUR_PRECISIONS:
        raise ValueError(f"precision must be one of {BLUR_PRECISIONS}, got {precision!r}")
    sigma_y, sigma_x = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else (float(sigma[0]), float(sigma[1]))
    if sigma_y <= 0 and sigma_x <= 0:
        return x
    shape = x.shape
    planes = x.reshape(-1, 1, shape[-2], shape[-1])
    planes = _blur_axis(planes, sigma_y, truncate, pad_mode, radius, -2, precision)
    planes = _blur_axis(planes, sigma_x, truncate, pad_mode, radius, -1, precision)
    return planes.reshape(shape)


#: how a temporal low-pass pads the ends of a time course: repeat the first/last frame, or zeros
#: (openretina's ``TemporalGaussianLowPassFilterProcessor``: ``conv3d(padding="same")``)
TEMPORAL_PADDINGS = ("replicate", "zeros")


def temporal_gaussian_blur(x: Tensor, sigma: float, kernel_size: int | None = None, padding: str = "replicate") -> Tensor:
    """Gaussian low-pass along time (dim 2) of videos ``B×C×T×H×W``, per row; the ends are padded
    by ``padding`` (:data:`TEMPORAL_PADDINGS`)."""
    if padding not in TEMPORAL_PADDINGS:
        raise ValueError(f"padding must be one of {TEMPORAL_PADDINGS}, got {padding!r}")
    if x.dim() != 5:
        raise ValueError(f"temporal filtering needs videos B×C×T×H×W, got shape {tuple(x.shape)}")
    if sigma <= 0:
        return x
    if kernel_size is None:
        kernel = gaussian_kernel_1d(sigma, dtype=x.dtype, device=x.device)
    else:
        radius = kernel_size // 2
        positions = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
        kernel = (kernel / kernel.sum()).to(dtype=x.dtype, device=x.device)
    radius = kernel.numel() // 2
    b, c, t, h, w = x.shape
    series = x.permute(0, 1, 3, 4, 2).reshape(-1, 1, t)
    series = F.pad(series, (radius, radius), mode="replicate") if padding == "replicate" else F.pad(series, (radius, radius))
    series = F.conv1d(series, kernel.view(1, 1, -1))
    return series.reshape(b, c, h, w, t).permute(0, 1, 4, 2, 3).contiguous()


class ScheduledGaussianBlur:
    """A Gaussian blur whose sigma follows a schedule over steps: the base of the gradient blur
    (``preconditioners.GaussianBlur``) and the input blur (``postprocessors.GaussianBlurInput``), which
    share its constructor, i.e. its config keys, and call :meth:`blur` with their step.

    ``sigma`` (one value or ``(y, x)``) at step ``i`` is :func:`scheduled` ``(sigma, decay_factor, i,
    decay)``; when every axis is at or below ``min_sigma`` nothing is blurred. ``exclude_last_channel``
    leaves the last channel (a transparency MEI's alpha) untouched. ``precision``: ``input`` or
    ``float64`` (each axis pass in float64, rounded back: scipy's ``gaussian_filter`` on float32).
    ``hold_at``: the sigma the schedule stops at (held from the step it reaches it).
    """

    def __init__(
        self,
        sigma: float | Sequence[float] = 1.0,
        decay_factor: float | None = 1.0,
        min_sigma: float = 0.0,
        truncate: float = 4.0,
        decay: str = "multiplicative",
        pad_mode: str = "reflect",
        kernel_radius: str = "ceil",
        exclude_last_channel: bool = False,
        precision: str = "input",
        hold_at: float | None = None,
    ):
        pair = (sigma, sigma) if isinstance(sigma, (int, float)) else tuple(sigma)
        if len(pair) != 2 or min(pair) < 0:
            raise ValueError(f"sigma must be >= 0 or a (y, x) pair of such, got {sigma!r}")
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        if decay == "multiplicative" and decay_factor is not None and decay_factor <= 0:
            raise ValueError(f"a multiplicative decay_factor must be > 0, got {decay_factor}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if kernel_radius not in KERNEL_RADII:
            raise ValueError(f"kernel_radius must be one of {KERNEL_RADII}, got {kernel_radius!r}")
        if precision not in BLUR_PRECISIONS:
            raise ValueError(f"precision must be one of {BLUR_PRECISIONS}, got {precision!r}")
        self.sigma = (float(pair[0]), float(pair[1]))
        self.decay_factor = None if decay_factor is None else float(decay_factor)
        self.min_sigma = float(min_sigma)
        self.truncate = float(truncate)
        self.decay = decay
        self.pad_mode = pad_mode
        self.kernel_radius = kernel_radius
        self.exclude_last_channel = bool(exclude_last_channel)
        self.precision = precision
        self.hold_at = None if hold_at is None else float(hold_at)

    def sigma_at(self, i_iter: int) -> tuple[float, float]:
        return tuple(scheduled(s, self.decay_factor, i_iter, self.decay, self.hold_at) for s in self.sigma)  # type: ignore[return-value]

    def blur(self, x: Tensor, i_iter: int) -> Tensor:
        sigma = self.sigma_at(i_iter)
        if max(sigma) <= self.min_sigma:
            return x
        sigma = tuple(s if s > self.min_sigma else 0.0 for s in sigma)
        if not self.exclude_last_channel:
            return gaussian_blur(x, sigma, self.truncate, self.pad_mode, self.kernel_radius, self.precision)
        blurred = gaussian_blur(x[:, :-1], sigma, self.truncate, self.pad_mode, self.kernel_radius, self.precision)
        return torch.cat([blurred, x[:, -1:]], dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def gather_windows(x: Tensor, top: Tensor, left: Tensor, height: int, width: int, circular: bool = False) -> Tensor:
    """A ``height×width`` window of every row's last two dims, each row at its own offset, in one
    gather: ``out[b, …, i, j] = x[b, …, top[b] + i, left[b] + j]`` (indices taken modulo the image
    size when ``circular``; otherwise every window must lie inside the image). ``top``, ``left``:
    int64, one per row. Channels and frames of a row share its window. Returns ``B×…×height×width``.

    A circular window of the image's own size at offset ``−s`` is ``torch.roll`` by ``s``.
    """
    check_spatial(x, "gather_windows")
    in_height, in_width = x.shape[-2], x.shape[-1]
    rows_y = top[:, None] + torch.arange(height, device=x.device)  # B×height
    cols_x = left[:, None] + torch.arange(width, device=x.device)  # B×width
    if circular:
        rows_y, cols_x = rows_y % in_height, cols_x % in_width
    index = ((rows_y * in_width)[:, :, None] + cols_x[:, None, :]).flatten(1)  # B×(height·width): one large op
    flat = x.flatten(-2)  # B×C(×T)×(H·W)
    index = index.view(len(x), *([1] * (flat.dim() - 2)), height * width).expand(*flat.shape[:-1], height * width)
    return flat.gather(-1, index).view(*x.shape[:-2], height, width)


def affine_resample(x: Tensor, theta: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Resample every row through its own affine map ``theta`` (``B×2×3``, in the normalised
    coordinates of ``F.affine_grid``: output point p samples the input at ``theta·[p, 1]``),
    bilinear. Videos apply the row's map to every frame (time is folded into channels)."""
    check_spatial(x, "affine_resample")
    planes = x.flatten(1, -3)  # B×(C·T)×H×W
    grid = F.affine_grid(theta.to(planes.dtype), list(planes.shape), align_corners=False)
    return F.grid_sample(planes, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False).view(x.shape)
