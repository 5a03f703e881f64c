"""Backgrounds of transparency MEIs (what ``AlphaBlend`` blends the MEI onto), one per row.

Random ones are drawn for all rows of a step at once from each row's counter-based stream
(:mod:`mei_core.streams`): an image index per row, or a white-noise image per row, in one op on the
batch's device. A row's background depends only on its item's seed, its row within the item and the
step, never on its batch. At the final evaluation a deterministic background is used
(:meth:`~mei_core.components.Background.at_evaluation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .components import Background, Step
from .modality import Modality
from .ops import float_array

__all__ = ["ConstantBackground", "NaturalImageBackground", "WhiteNoiseBackground"]


def _fit(image: Tensor, shape: tuple[int, ...], who: str, rows: int | None = None) -> Tensor:
    """Broadcast a background (``H×W``, ``C×H×W``, …) to a row's ``shape`` (channels and frames
    copied); with ``rows``, ``image`` holds one background per row (its first dim) and the result is
    ``rows × shape``."""
    single = image if rows is None else image[0]
    if tuple(single.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(f"{who}: backgrounds of size {tuple(single.shape[-2:])} do not fit MEIs of size {tuple(shape[-2:])}")
    if single.dim() == len(shape) - 1 and Modality.of(shape) is Modality.VIDEO:  # C×H×W images for C×T×H×W videos: same for every frame
        image = image.unsqueeze(-3)
    try:
        return image.expand(shape) if rows is None else image.view(rows, *[1] * (len(shape) + 1 - image.dim()), *image.shape[1:]).expand(rows, *shape)
    except RuntimeError as error:
        raise ValueError(f"{who}: a background of shape {tuple(single.shape)} does not fit rows of shape {shape}") from error


class ConstantBackground(Background):
    """The same background for every row and step: a number or an array broadcast to the row."""

    random = False

    def __init__(self, value: float | Sequence | np.ndarray | str = 0.0):
        self.value = float_array(value, "ConstantBackground")

    def __call__(self, shape: tuple[int, ...], step: Step, stream: int) -> Tensor:
        return self.at_evaluation(shape).expand(len(step.rows), *shape)

    def at_evaluation(self, shape: tuple[int, ...]) -> Tensor:
        return _fit(self.value, shape, "ConstantBackground") if self.value.dim() else self.value.expand(shape)


class NaturalImageBackground(Background):
    """A random image of ``images`` (an ``.npy`` file or array, ``N×H×W`` or ``N×C×H×W``) per row and
    step, its index drawn uniformly from the row's stream (sinzlab/mei's ``NatImgBackground``).

    Each image is first rescaled to L2 norm ``norm`` (when given) and clipped to ``[x_min, x_max]``
    (when given), then multiplied by ``scale``. Single-channel images are copied to every channel.
    At evaluation: the mean of the (rescaled) images.
    """

    def __init__(
        self,
        images: str | Sequence | np.ndarray,
        norm: float | None = None,
        x_min: float | None = None,
        x_max: float | None = None,
        scale: float = 1.0,
    ):
        stack = float_array(images, "NaturalImageBackground")
        if stack.dim() < 3 or len(stack) == 0:
            raise ValueError(f"NaturalImageBackground: images must be N×H×W or N×C×H×W, got shape {tuple(stack.shape)}")
        if norm is not None:
            norms = torch.linalg.vector_norm(stack.flatten(1), dim=1).clamp_min(1e-12)
            stack = stack * (float(norm) / norms).view(-1, *([1] * (stack.dim() - 1)))
        if x_min is not None or x_max is not None:
            stack = stack.clamp(x_min, x_max)
        self.images = stack * float(scale)
        self.norm, self.x_min, self.x_max, self.scale = norm, x_min, x_max, float(scale)
        self._on_device: dict[torch.device, Tensor] = {}  # the stack, copied once to each device used

    def __call__(self, shape: tuple[int, ...], step: Step, stream: int) -> Tensor:
        index = step.integers(stream, 1, len(self.images))[:, 0]
        if index.device not in self._on_device:
            self._on_device[index.device] = self.images.to(index.device)
        return _fit(self._on_device[index.device][index], shape, "NaturalImageBackground", rows=len(index))

    def at_evaluation(self, shape: tuple[int, ...]) -> Tensor:
        return _fit(self.images.mean(0), shape, "NaturalImageBackground")

    def __repr__(self) -> str:
        return f"NaturalImageBackground(images={tuple(self.images.shape)}, norm={self.norm}, x_min={self.x_min}, x_max={self.x_max}, scale={self.scale})"


class WhiteNoiseBackground(Background):
    """Independent normal pixels ``mean + std·z`` per row and step, from the row's stream (all rows in
    one draw), times ``scale``. With ``peak`` the draw is then rescaled so that its largest ``|value|`` is
    ``peak`` (sinzlab/mei's ``WhiteNoiseBackground`` uses ``peak = 2.12·strength``). At evaluation:
    the constant ``mean·scale`` (0 when ``peak`` is set, whose draws have no fixed mean)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, peak: float | None = None, scale: float = 1.0):
        if std < 0 or (peak is not None and peak <= 0):
            raise ValueError(f"need std >= 0 and peak > 0, got {std}, {peak}")
        self.mean, self.std = float(mean), float(std)
        self.peak = None if peak is None else float(peak)
        self.scale = float(scale)

    def __call__(self, shape: tuple[int, ...], step: Step, stream: int) -> Tensor:
        draw = step.normal(stream, math.prod(shape)) * self.std + self.mean
        if self.peak is not None:
            draw = draw * (self.peak / draw.abs().amax(dim=1, keepdim=True).clamp_min(1e-12))
        return (draw * self.scale).view(len(draw), *shape)

    def at_evaluation(self, shape: tuple[int, ...]) -> Tensor:
        return torch.full(shape, 0.0 if self.peak is not None else self.mean * self.scale)
