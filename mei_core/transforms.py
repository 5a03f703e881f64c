"""Transforms: what the model sees of the optimised input. Random ones draw per row from the row's own
stream (``step.integers`` / ``step.uniform``) and act on the whole batch in one op (a gather for
shifts and crops, an affine grid for scale and rotation); at final evaluation they are replaced by
their centred, deterministic counterpart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .components import Background, Step, Transform
from .ops import ALPHAS, affine_resample, check_spatial, gather_windows, opacity
from .streams import stream_id

__all__ = [
    "Identity", "Jitter", "PadJitter", "RandomCrop", "RandomScale", "RandomRotation", "ChangeRange", "Resize",
    "GrayscaleToRGB", "AlphaBlend", "alpha_blend_of",
]


class Identity(Transform):
    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return x


class Jitter(Transform):
    """Shift every row by its own random (dy, dx) in ``[-max_jitter, max_jitter]``, for the whole
    batch in one gather. ``pad_mode: circular`` (default) rolls the image around (``torch.roll`` per
    row; (dy, dx) is minus the row's draw); ``reflect`` shifts it and fills the uncovered border by
    reflection (sinzlab/mei's ``Jitter``)."""

    random = True
    PAD_MODES = ("circular", "reflect")

    def __init__(self, max_jitter: int | Sequence[int] = 2, pad_mode: str = "circular"):
        self.max_jitter = _pair(max_jitter, "max_jitter")
        if pad_mode not in self.PAD_MODES:
            raise ValueError(f"pad_mode must be one of {self.PAD_MODES}, got {pad_mode!r}")
        self.pad_mode = pad_mode

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "Jitter")
        if max(self.max_jitter) == 0:
            return x
        # a roll by s reads at offset −s; −s is as uniform on [−j, j] as s is, so the draw is the offset
        top, left = _shifts(step, self.stream, self.max_jitter).unbind(1)  # one op, not two column slices
        if self.pad_mode == "circular":
            return gather_windows(x, top, left, x.shape[-2], x.shape[-1], circular=True)
        jy, jx = self.max_jitter
        planes = x.flatten(1, -3)  # B×(C·T)×H×W: reflection pads 2-D planes
        padded = F.pad(planes, (jx, jx, jy, jy), mode="reflect")
        window = gather_windows(padded, top + jy, left + jx, x.shape[-2], x.shape[-1])
        return window.view(x.shape)

    def shift(self, row: Tensor, dy: int, dx: int) -> Tensor:
        """``row`` (C×H×W or C×T×H×W) moved down by ``dy`` and right by ``dx``: what ``__call__`` does
        to a row whose draw is (−dy, −dx)."""
        offsets = torch.tensor([[-dy, -dx]])
        if self.pad_mode == "circular":
            return torch.roll(row, shifts=(dy, dx), dims=(-2, -1))
        jy, jx = max(self.max_jitter[0], abs(dy)), max(self.max_jitter[1], abs(dx))
        padded = F.pad(row.reshape(1, -1, *row.shape[-2:]), (jx, jx, jy, jy), mode="reflect")
        return gather_windows(padded, offsets[:, 0] + jy, offsets[:, 1] + jx, row.shape[-2], row.shape[-1]).view(row.shape)


class PadJitter(Transform):
    """lucent's ``pad`` + ``jitter``: pad every row by ``pad`` pixels (``mode``: ``constant`` with
    ``value``, ``reflect`` or ``replicate``), shift it by its own random (dy, dx) in
    ``[-max_jitter, max_jitter]`` and crop back to the input size (one gather). Unlike ``Jitter``,
    what enters at the border is padding, not the opposite edge (when ``max_jitter <= pad``)."""

    random = True

    def __init__(self, pad: int = 4, max_jitter: int | Sequence[int] = 4, mode: str = "constant", value: float = 0.0):
        if int(pad) < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if mode not in {"constant", "reflect", "replicate"}:
            raise ValueError(f"mode must be constant, reflect or replicate, got {mode!r}")
        self.pad = int(pad)
        self.max_jitter = _pair(max_jitter, "max_jitter")
        self.mode = mode
        self.value = float(value)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "PadJitter")
        height, width = x.shape[-2:]
        planes = x.flatten(1, -3)  # B×(C·T)×H×W: non-constant padding of 2-D planes
        padded = F.pad(planes, (self.pad,) * 4, mode=self.mode, value=self.value if self.mode == "constant" else None)
        # the window of the image shifted by s starts at pad − s: uniform on [pad − j, pad + j]
        jy, jx = self.max_jitter
        top, left = step.integers(self.stream, 2, (2 * jy + 1, 2 * jx + 1), low=(self.pad - jy, self.pad - jx)).unbind(1)
        window = gather_windows(padded, top, left, height, width, circular=True)
        return window.view(x.shape)


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
        free = (x.shape[-2] - self.height + 1, x.shape[-1] - self.width + 1)
        top, left = step.integers(self.stream, 2, free).unbind(1)
        return gather_windows(x, top, left, self.height, self.width)

    def at_evaluation(self, x: Tensor) -> Tensor:
        self._check(x)
        oy, ox = (x.shape[-2] - self.height) // 2, (x.shape[-1] - self.width) // 2
        return x[..., oy : oy + self.height, ox : ox + self.width]


class RandomScale(Transform):
    """Zoom every row about its centre by its own factor, uniform in ``[min_scale, max_scale]``
    (> 1 magnifies), keeping the size: bilinear ``grid_sample``; what a zoom-out uncovers is
    ``padding_mode`` (``zeros``, ``border``, ``reflection``). Unscaled at evaluation."""

    random = True

    def __init__(self, min_scale: float = 0.9, max_scale: float = 1.1, padding_mode: str = "zeros"):
        if not 0 < float(min_scale) <= float(max_scale):
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.padding_mode = _padding_mode(padding_mode)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "RandomScale")
        scale = self.min_scale + (self.max_scale - self.min_scale) * step.uniform(self.stream, 1)[:, 0]
        theta = torch.zeros(len(x), 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale  # output point p samples the input at p / scale
        return affine_resample(x, theta, self.padding_mode)


class RandomRotation(Transform):
    """Rotate every row about its centre by its own angle, uniform in ``[-max_degrees, max_degrees]``
    (bilinear ``grid_sample``, corners filled by ``padding_mode``). Unrotated at evaluation."""

    random = True

    def __init__(self, max_degrees: float = 10.0, padding_mode: str = "zeros"):
        if float(max_degrees) < 0:
            raise ValueError(f"max_degrees must be >= 0, got {max_degrees}")
        self.max_degrees = float(max_degrees)
        self.padding_mode = _padding_mode(padding_mode)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "RandomRotation")
        height, width = x.shape[-2:]
        angle = torch.deg2rad((2 * step.uniform(self.stream, 1)[:, 0] - 1) * self.max_degrees)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # a rotation in pixels, written in affine_grid's coordinates (each axis scaled to [-1, 1])
        theta = torch.zeros(len(x), 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
        theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
        return affine_resample(x, theta, self.padding_mode)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < 0:
        raise ValueError(f"{name} must be a non-negative int or (y, x) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


def _shifts(step: Step, stream: int, max_jitter: tuple[int, int]) -> Tensor:
    """Each processed row's (y, x) draw, uniform in ``[-max_jitter, max_jitter]`` per axis (``rows × 2``)."""
    return step.integers(stream, 2, (2 * max_jitter[0] + 1, 2 * max_jitter[1] + 1), low=(-max_jitter[0], -max_jitter[1]))


def _padding_mode(mode: str) -> str:
    if mode not in {"zeros", "border", "reflection"}:
        raise ValueError(f"padding_mode must be zeros, border or reflection, got {mode!r}")
    return mode


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
    from the row's stream (this transform's), for all rows at once, and the final score uses its
    ``at_evaluation`` background. Backgrounds follow the input's device and dtype, so the same method
    runs on CPU and GPU."""

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
        return self._blend(x, self.background(shape, step, self.stream))

    def at_evaluation(self, x: Tensor) -> Tensor:
        return self._blend(x, self.background.at_evaluation(self._check(x)))

    def opacity_of(self, x: Tensor) -> Tensor:
        """Every row's opacity map (``rows × H×W`` or ``rows × T×H×W``; 1 opaque, 0 transparent): its
        alpha channel read as the blend reads it."""
        self._check(x)
        return opacity(x[:, -1], self.alpha)


class Compose(Transform):
    """Apply several transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        self.random = any(t.random for t in self.transforms)
        for position, transform in enumerate(self.transforms):  # every member its own stream
            transform.stream = stream_id(f"transform[{position}]")

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        for transform in self.transforms:
            x = transform(x, step)
        return x

    def at_evaluation(self, x: Tensor) -> Tensor:
        for transform in self.transforms:
            x = transform.at_evaluation(x)
        return x


def alpha_blend_of(transform: Transform) -> AlphaBlend | None:
    """The ``AlphaBlend`` of a method's transform (the transform itself or a member of its ``Compose``):
    its MEIs are transparency MEIs, image channels then one alpha channel. ``None`` otherwise."""
    members = transform.transforms if isinstance(transform, Compose) else [transform]
    blends = [member for member in members if isinstance(member, AlphaBlend)]
    return blends[0] if blends else None
