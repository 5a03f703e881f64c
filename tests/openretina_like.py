"""A user model with openretina's calling convention, for pipeline tests: ``forward(x, data_key)``
with a required data key (one readout per recording session), answering ``B×T'×N`` with T' < T."""

from __future__ import annotations

import torch
from torch import nn


class SessionModel(nn.Module):
    def __init__(self, n_neurons: int = 3, channels: int = 2, frames_kernel: int = 5, size: int = 8, sessions: tuple[str, ...] = ("session_a", "session_b")):
        super().__init__()
        self.core = nn.Conv3d(channels, 4, (frames_kernel, 3, 3))  # valid in time: T' = T − frames_kernel + 1
        self.readouts = nn.ModuleDict({s: nn.Linear(4 * (size - 2) ** 2, n_neurons) for s in sessions})

    def forward(self, x: torch.Tensor, data_key: str | None = None) -> torch.Tensor:
        if data_key not in self.readouts:
            raise KeyError(f"data_key must be one of {sorted(self.readouts)}, got {data_key!r}")
        features = torch.nn.functional.elu(self.core(x))  # B×4×T'×(H−2)×(W−2)
        b, c, t, h, w = features.shape
        return nn.functional.softplus(self.readouts[data_key](features.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w)))


def build_session_model(**kwargs) -> SessionModel:
    return SessionModel(**kwargs)
