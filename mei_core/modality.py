"""What an ensemble's inputs are, decided once from the rank of ``input_shape`` (no batch dim):
connectome inputs (sensory neurons × layers), images (C×H×W) or videos (C×T×H×W)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from .errors import MEIConfigError

__all__ = ["Modality"]


class Modality(Enum):
    """The value is the names of an input's dims (the Zarr store's dims after the item dims)."""

    CONNECTOME = ("sensory", "layer")
    IMAGE = ("channel", "y", "x")
    VIDEO = ("channel", "time", "y", "x")

    @classmethod
    def of(cls, input_shape: Sequence[int], key: str = "input_shape") -> "Modality":
        """The modality of inputs of ``input_shape``; any other rank is an error naming ``key``."""
        for modality in cls:
            if len(input_shape) == len(modality.value):
                return modality
        raise MEIConfigError(f"{key}: expected S×L (connectome), C×H×W (images) or C×T×H×W (videos), without the batch dim; got {list(input_shape)}")

    @property
    def rank(self) -> int:
        return len(self.value)

    @property
    def dims(self) -> list[str]:
        return list(self.value)

    @property
    def has_channels(self) -> bool:
        """Images and videos: channel × …; connectome inputs have none."""
        return self is not Modality.CONNECTOME
