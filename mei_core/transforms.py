"""Transforms: what the model sees of the optimised input. Random ones draw per row from the row's
item generator; at final evaluation they are replaced by their centred, deterministic counterpart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .components import Background, Step, Transform
from .ops import ALPHAS, check_spatial, opacity
from .randomness import draw_per_row

__all__ = ["Identity", "Jitter", "RandomCrop", "ChangeRange", "Resize", "GrayscaleToRGB", "AlphaBlend"]


class Identity(Transform):
    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return x


class Jitter(Transform):
    """Shift every row by its own random (dy, dx) in ``[-max_jitter, max_jitter]``.

    ``pad_mode: circular`` (default) rolls the image around; ``reflect`` shifts it and fills the
    uncovered border by reflection (sinzlab/mei's ``Jitter``)."""

    random = True
    PAD_MODES = ("circular", "reflect")

    def __init__(self, max_jitter: int | Sequence[int] = 2, pad_mode: str = "circular"):
        jitter = (max_jitter, max_jitter) if isinstance(max_jitter, int) else tuple(max_jitter)
        if len(jitter) != 2 or min(jitter) < 0:
            raise ValueError(f"max_jitter must be a non-negative int or (y, x) pair, got {max_jitter!r}")
        if pad_mode not in self.PAD_MODES:
            raise ValueError(f"pad_mode must be one of {self.PAD_MODES}, got {pad_mode!r}")
        self.max_jitter = (int(jitter[0]), int(jitter[1]))
        self.pad_mode = pad_mode

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "Jitter")
        if max(self.max_jitter) == 0:
            return x
        low = torch.tensor([-self.max_jitter[0], -self.max_jitter[1]])
        span = torch.tensor([2 * self.max_jitter[0] + 1, 2 * self.max_jitter[1] + 1])
        shifted = []
        for row, draw in zip(x, draw_per_row(step, lambda generator: torch.rand(2, generator=generator))):
            dy, dx = (low + (draw * span).long()).tolist()
            shifted.append(self.shift(row, dy, dx))
        return torch.stack(shifted)

    def shift(self, row: Tensor, dy: int, dx: int) -> Tensor:
        """``row`` (C×H×W or C×T×H×W) moved down by ``dy`` and right by ``dx``."""
        if self.pad_mode == "circular":
            return torch.roll(row, shifts=(dy, dx), dims=(-2, -1))
        height, width = row.shape[-2:]
        planes = row.reshape(1, -1, height, width)
        padded = F.pad(planes, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="reflect")
        top, left = max(-dy, 0), max(-dx, 0)
        return padded[..., top : top + height, left : left + width].reshape(row.shape)


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
        for row, draw in zip(x, draw_per_row(step, lambda generator: torch.rand(2, generator=generator))):
            oy, ox = (draw * torch.tensor([free_y + 1, free_x + 1])).long().tolist()
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


class GrayscaleToRGB(Transform):
    """Copy a single-channel input to three channels (``B×1×…`` → ``B×3×…``)."""

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"GrayscaleToRGB needs one channel, got shape {tuple(x.shape)}")
        return x.expand(-1, 3, *x.shape[2:])


def _background(spec: "float | Sequence | str | Mapping | Background") -> Background:
    """A background from a number or array (constant), an ``.npy`` file (constant), or a component
    spec / alias of a :class:`~mei_core.components.Background` (e.g. ``WhiteNoiseBackground``)."""
    from .backgrounds import ConstantBackground

    if isinstance(spec, Background):
        return spec
    if isinstance(spec, str) and spec.endswith(".npy"):
        return ConstantBackground(spec)
    if isinstance(spec, (str, Mapping)):
        from .config import build_component

        built = build_component(spec, "background")
        if not isinstance(built, Background):
            raise ValueError(f"background: {type(built).__name__} is not a mei_core.components.Background")
        return built
    return ConstantBackground(spec)


class AlphaBlend(Transform):
    """Transparency MEIs: the last channel is an opacity map; the model sees
    ``image·alpha + background·(1 − alpha)``.

    ``alpha``: ``sigmoid`` (default; the raw channel goes through a sigmoid) or ``linear`` (the raw
    channel is the opacity: sinzlab/mei's). ``background``: a number or array (constant), an ``.npy``
    file, or a :class:`~mei_core.components.Background` spec such as ``{path: WhiteNoiseBackground,
    kwargs: {std: 1.0}}`` or ``NaturalImageBackground``: a random background is drawn per row and step
    from the row's item generator, and the final score uses its ``at_evaluation`` background. Backgrounds
    follow the input's device and dtype, so the same method runs on CPU and GPU."""

    def __init__(self, background: float | Sequence | str | Mapping | Background = 0.0, alpha: str = "sigmoid"):
        if alpha not in ALPHAS:
            raise ValueError(f"alpha must be one of {ALPHAS}, got {alpha!r}")
        self.background = _background(background)
        self.alpha = alpha
        self.random = self.background.random

    def _blend(self, x: Tensor, background: Tensor) -> Tensor:
        alpha = opacity(x[:, -1:], self.alpha)
        return x[:, :-1] * alpha + background.to(device=x.device, dtype=x.dtype) * (1 - alpha)

    def _check(self, x: Tensor) -> tuple[int, ...]:
        if x.shape[1] < 2:
            raise ValueError("AlphaBlend needs at least 2 channels: image channels then one alpha channel")
        return (x.shape[1] - 1, *x.shape[2:])

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        shape = self._check(x)
        if not self.background.random:
            return self._blend(x, self.background.at_evaluation(shape))
        return self._blend(x, torch.stack(draw_per_row(step, lambda generator: self.background(shape, generator))))

    def at_evaluation(self, x: Tensor) -> Tensor:
        return self._blend(x, self.background.at_evaluation(self._check(x)))


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
