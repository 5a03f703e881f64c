"""Transforms: what the model sees of the optimised input. Random ones draw per row from the row's
item generator; at final evaluation they are replaced by their centred, deterministic counterpart."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .components import Step, Transform
from .ops import check_spatial

__all__ = ["Identity", "Jitter", "RandomCrop", "ChangeRange", "Resize", "AlphaBlend"]


class Identity(Transform):
    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return x


class Jitter(Transform):
    """Circularly shift every row by its own random (dy, dx) in ``[-max_jitter, max_jitter]``."""

    random = True

    def __init__(self, max_jitter: int | Sequence[int] = 2):
        jitter = (max_jitter, max_jitter) if isinstance(max_jitter, int) else tuple(max_jitter)
        if len(jitter) != 2 or min(jitter) < 0:
            raise ValueError(f"max_jitter must be a non-negative int or (y, x) pair, got {max_jitter!r}")
        self.max_jitter = (int(jitter[0]), int(jitter[1]))

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "Jitter")
        if max(self.max_jitter) == 0:
            return x
        low = torch.tensor([-self.max_jitter[0], -self.max_jitter[1]])
        span = torch.tensor([2 * self.max_jitter[0] + 1, 2 * self.max_jitter[1] + 1])
        shifted = []
        for row, generator in zip(x, step.row_generators()):
            dy, dx = (low + (torch.rand(2, generator=generator) * span).long()).tolist()
            shifted.append(torch.roll(row, shifts=(dy, dx), dims=(-2, -1)))
        return torch.stack(shifted)


class RandomCrop(Transform):
    """Crop every row to ``height×width`` at its own random offset (centre crop at evaluation)."""

    random = True

    def __init__(self, height: int, width: int):
        self.height = int(height)
        self.width = int(width)

    def _check(self, x: Tensor) -> None:
        check_spatial(x, "RandomCrop")
        if x.shape[-2] < self.height or x.shape[-1] < self.width:
            raise ValueError(f"RandomCrop {self.height}×{self.width} is larger than the input {tuple(x.shape[-2:])}")

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        self._check(x)
        free_y, free_x = x.shape[-2] - self.height, x.shape[-1] - self.width
        crops = []
        for row, generator in zip(x, step.row_generators()):
            oy, ox = (torch.rand(2, generator=generator) * torch.tensor([free_y + 1, free_x + 1])).long().tolist()
            crops.append(row[..., oy : oy + self.height, ox : ox + self.width])
        return torch.stack(crops)

    def at_evaluation(self, x: Tensor) -> Tensor:
        self._check(x)
        oy, ox = (x.shape[-2] - self.height) // 2, (x.shape[-1] - self.width) // 2
        return x[..., oy : oy + self.height, ox : ox + self.width]


class ChangeRange(Transform):
    """Squash the input into ``[x_min, x_max]`` with a sigmoid (an unconstrained parametrisation)."""

    def __init__(self, x_min: float = -1.0, x_max: float = 1.0):
        if not x_max > x_min:
            raise ValueError(f"x_max ({x_max}) must be greater than x_min ({x_min})")
        self.x_min = float(x_min)
        self.x_max = float(x_max)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return torch.sigmoid(x) * (self.x_max - self.x_min) + self.x_min


class Resize(Transform):
    """Resample the spatial dims by ``scale_factor`` or to ``size`` (optimise at low resolution)."""

    def __init__(self, scale_factor: float | None = None, size: Sequence[int] | None = None, mode: str = "bilinear"):
        if (scale_factor is None) == (size is None):
            raise ValueError("give exactly one of scale_factor and size")
        if mode not in {"nearest", "bilinear", "bicubic", "area"}:
            raise ValueError(f"mode must be nearest, bilinear, bicubic or area, got {mode!r}")
        self.scale_factor = None if scale_factor is None else float(scale_factor)
        self.size = None if size is None else tuple(int(s) for s in size)
        self.mode = mode

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "Resize")
        if x.dim() == 5:  # resize frames, not time: fold time into the batch
            b, c, t, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = self._resize(frames)
            return frames.reshape(b, t, c, *frames.shape[-2:]).permute(0, 2, 1, 3, 4)
        return self._resize(x)

    def _resize(self, x: Tensor) -> Tensor:
        align = False if self.mode in {"bilinear", "bicubic"} else None
        return F.interpolate(x, size=self.size, scale_factor=self.scale_factor, mode=self.mode, align_corners=align)


class AlphaBlend(Transform):
    """Transparency MEIs: the last channel is an opacity map (through a sigmoid); the model sees
    ``image·alpha + background·(1 − alpha)``. The background is a constant or an array of the image's
    shape and follows the input's device, so the same method runs on CPU and GPU."""

    def __init__(self, background: float | Sequence = 0.0):
        self.background = torch.as_tensor(background, dtype=torch.float32)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        if x.shape[1] < 2:
            raise ValueError("AlphaBlend needs at least 2 channels: image channels then one alpha channel")
        image, alpha = x[:, :-1], torch.sigmoid(x[:, -1:])
        background = self.background.to(device=x.device, dtype=x.dtype)
        return image * alpha + background * (1 - alpha)


class Compose(Transform):
    """Apply several transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        self.random = any(t.random for t in self.transforms)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        for transform in self.transforms:
            x = transform(x, step)
        return x

    def at_evaluation(self, x: Tensor) -> Tensor:
        for transform in self.transforms:
            x = transform.at_evaluation(x)
        return x
