"""Per-sample tensor helpers shared by the components. Rows are the first dimension.

Images are ``B×C×H×W``, videos ``B×C×T×H×W``; spatial operations act on the last two dimensions and
never mix rows, channels or frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


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


def check_spatial(x: Tensor, who: str) -> None:
    if x.dim() not in (4, 5):
        raise ValueError(f"{who} needs images B×C×H×W or videos B×C×T×H×W, got shape {tuple(x.shape)}")


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None) -> Tensor:
    """A normalised 1-D Gaussian (odd length, radius ``ceil(truncate·sigma)``)."""
    radius = max(1, int(math.ceil(truncate * sigma)))
    positions = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur of the last two (spatial) dims, reflect-padded, per row and channel.

    ``sigma <= 0`` returns ``x`` unchanged. The kernel is clipped to the image size so that small
    images with a large sigma still work (reflect padding needs pad < size).
    """
    check_spatial(x, "gaussian_blur")
    if sigma <= 0:
        return x
    shape = x.shape
    height, width = shape[-2], shape[-1]
    planes = x.reshape(-1, 1, height, width)
    kernel = gaussian_kernel_1d(sigma, truncate, dtype=x.dtype, device=x.device)
    radius = kernel.numel() // 2
    radius_y = min(radius, height - 1)
    radius_x = min(radius, width - 1)
    kernel_y = kernel[radius - radius_y : radius + radius_y + 1]
    kernel_x = kernel[radius - radius_x : radius + radius_x + 1]
    kernel_y = kernel_y / kernel_y.sum()
    kernel_x = kernel_x / kernel_x.sum()
    if radius_y > 0:
        planes = F.pad(planes, (0, 0, radius_y, radius_y), mode="reflect")
        planes = F.conv2d(planes, kernel_y.view(1, 1, -1, 1))
    if radius_x > 0:
        planes = F.pad(planes, (radius_x, radius_x, 0, 0), mode="reflect")
        planes = F.conv2d(planes, kernel_x.view(1, 1, 1, -1))
    return planes.reshape(shape)


def temporal_gaussian_blur(x: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """Gaussian low-pass along time (dim 2) of videos ``B×C×T×H×W``, replicate-padded, per row."""
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
    series = F.pad(series, (radius, radius), mode="replicate")
    series = F.conv1d(series, kernel.view(1, 1, -1))
    return series.reshape(b, c, h, w, t).permute(0, 1, 4, 2, 3).contiguous()


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
