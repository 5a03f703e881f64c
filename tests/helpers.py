"""Small known models for the tests."""

from __future__ import annotations

import math

import torch
from torch import nn


def gabor(size: int = 24, theta: float = 0.6, wavelength: float = 8.0, sigma: float = 4.0, phase: float = 0.3) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    along = xx * math.cos(theta) + yy * math.sin(theta)
    return torch.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * torch.cos(2 * math.pi * along / wavelength + phase)


class LinearNeurons(nn.Module):
    """Units whose response is the dot product of the image with a fixed filter: B×1×H×W → B×N."""

    def __init__(self, filters: torch.Tensor):
        super().__init__()
        self.register_buffer("filters", filters.reshape(filters.shape[0], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.filters.T


class SettledAndRestless(torch.nn.Module):
    """Unit 0: a linear Gabor neuron (the normalised-gradient step settles on its filter in a few
    steps). Unit 1: ``cos(k · f·x)``, a ridge of maxima that the fixed-size step keeps jumping across,
    so its MEI never settles."""

    def __init__(self, size: int = 24) -> None:
        super().__init__()
        self.linear = LinearNeurons(torch.stack([gabor(size), gabor(size, theta=1.5)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drive = self.linear(x)
        return torch.stack([drive[:, 0], torch.cos(0.1 * drive[:, 1])], dim=1)


def small_cnn(n_units: int = 20, channels: int = 8, size: tuple[int, int] = (24, 24), seed: int = 0) -> nn.Module:
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, channels, 5, padding=2), nn.ELU(),
        nn.Conv2d(channels, channels, 5, padding=2), nn.ELU(),
        nn.Flatten(), nn.Linear(channels * size[0] * size[1], n_units), nn.Softplus(),
    ).eval()
    torch.random.set_rng_state(generator_state)
    return model


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()
