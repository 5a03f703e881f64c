"""Initial guesses: the starting rows of one item, drawn from that item's generator on the CPU.

Drawing on the CPU with a generator seeded by the item's seed gives exactly sinzlab/mei's initial guess
(``torch.manual_seed(seed)`` then the same draw) and keeps it independent of the device and the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .components import InitialGuess

__all__ = ["RandomNormal", "RandomUniform", "RandomNormalNullChannel", "FromArray", "WithAlphaChannel"]


class RandomNormal(InitialGuess):
    """Standard normal pixels scaled by ``std`` around ``mean``."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean = float(mean)
        self.std = float(std)

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        draw = torch.randn(shape, generator=generator)
        if self.std != 1.0 or self.mean != 0.0:
            draw = draw * self.std + self.mean
        return draw


class RandomUniform(InitialGuess):
    """Uniform pixels in ``[low, high)``."""

    def __init__(self, low: float = -1.0, high: float = 1.0):
        if not high > low:
            raise ValueError(f"high ({high}) must be greater than low ({low})")
        self.low = float(low)
        self.high = float(high)

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return torch.rand(shape, generator=generator) * (self.high - self.low) + self.low


class RandomNormalNullChannel(InitialGuess):
    """Normal pixels with one channel set to ``null_value`` (e.g. a constant luminance channel)."""

    def __init__(self, null_channel: int, null_value: float = 0.0, std: float = 1.0):
        self.null_channel = int(null_channel)
        self.null_value = float(null_value)
        self.std = float(std)

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        if not -shape[1] <= self.null_channel < shape[1]:
            raise ValueError(f"null_channel {self.null_channel} out of range for {shape[1]} channels")
        draw = torch.randn(shape, generator=generator) * self.std
        draw[:, self.null_channel] = self.null_value
        return draw


class FromArray(InitialGuess):
    """A fixed start: a nested list, an ``.npy`` file path, or an array; broadcast to every row.

    ``noise_std > 0`` adds per-item normal noise so different seeds still differ.
    """

    def __init__(self, array: Sequence | str | np.ndarray, noise_std: float = 0.0):
        if isinstance(array, str):
            try:
                array = np.load(array)
            except OSError as error:
                raise ValueError(f"cannot read initial array file {array!r}: {error}") from error
        self.array = torch.as_tensor(np.asarray(array, dtype=np.float32))
        self.noise_std = float(noise_std)

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        try:
            start = self.array.expand(shape).clone()
        except RuntimeError as error:
            raise ValueError(
                f"initial array of shape {tuple(self.array.shape)} does not fit the MEI shape {shape}"
            ) from error
        if self.noise_std > 0:
            start += torch.randn(shape, generator=generator) * self.noise_std
        return start

    def __repr__(self) -> str:
        return f"FromArray(shape={tuple(self.array.shape)}, noise_std={self.noise_std})"


class WithAlphaChannel(InitialGuess):
    """A transparency MEI's start: ``initial`` (a component spec, e.g. ``RandomNormal``) draws the image
    channels of the shape it is given, and one more channel, constant ``alpha``, is appended
    (``n×C×…`` → ``n×(C+1)×…``), as sinzlab/mei does for ``transparency: true`` (alpha 0.5)."""

    def __init__(self, initial: str | Mapping[str, Any] = "RandomNormal", alpha: float = 0.5):
        from .config import build_component

        self.initial = build_component(initial, "initial")
        if not isinstance(self.initial, InitialGuess):
            raise ValueError(f"initial: {type(self.initial).__name__} is not an InitialGuess")
        self.alpha = float(alpha)

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        image = self.initial(shape, generator)
        return torch.cat([image, torch.full((shape[0], 1, *shape[2:]), self.alpha)], dim=1)
