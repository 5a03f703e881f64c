"""One known population seen in three unit systems: display levels 0–255, 0–1 and z-scores.

The population lives in z-units (``GroundTruthV1``: Gabor simple cells, quadrature-energy complex
cells, ON/OFF difference-of-Gaussians cells, images ``B×1×S×S`` of mean 0 and std 1). A unit system is
the affine map ``x_units = mean + std · z`` with the ``input_stats`` a user of those units would state;
the three systems are images of one another (the same display range ``[0, 255]`` ↔ ``[0, 1]`` ↔
``[−2.67, 3]`` stds), so a preset that follows ``input_stats`` gives the same MEI in z-units in all
three, and filter r is comparable across them.

What a ground-truth filter r cannot see: the population's filters are zero-mean, so an MEI shifted to
level 0 ("black") still correlates with the filter (the issue's 0.985 on black MEIs). ``UnitScores``
therefore also reports where the MEI sits (its mean offset from the stimulus mean, in stds) and how
hard it drives the true cell.

Used by ``tests/test_presets_units.py`` and ``benchmarks/preset_units.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mei_core.models.v1 import GroundTruthV1, filter_correlation


@dataclass(frozen=True)
class UnitSystem:
    """Stimuli in these units are ``mean + std · z``, displayed on ``[low, high]``."""

    name: str
    mean: float
    std: float
    low: float
    high: float

    @property
    def input_stats(self) -> dict[str, list]:
        """What a user of these units states: ``{"mean": [m], "std": [s], "range": [low, high]}``."""
        return {"mean": [self.mean], "std": [self.std], "range": [self.low, self.high]}

    def to_units(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * z

    def to_z(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


#: The issue's display levels: mean 120, std 45 on 0…255.
DISPLAY = UnitSystem("0-255", 120.0, 45.0, 0.0, 255.0)
#: The same stimuli as fractions of the display range.
FRACTION = UnitSystem("0-1", 120.0 / 255.0, 45.0 / 255.0, 0.0, 1.0)
#: The same stimuli z-scored (what sinzlab's and Walker et al.'s models saw).
Z_SCORES = UnitSystem("z-scores", 0.0, 1.0, (0.0 - 120.0) / 45.0, (255.0 - 120.0) / 45.0)
UNIT_SYSTEMS = (DISPLAY, FRACTION, Z_SCORES)


class InUnits(nn.Module):
    """``model`` (of z-scored inputs) seen by a user of ``system``: ``model((x − mean) / std)``."""

    def __init__(self, model: nn.Module, system: UnitSystem) -> None:
        super().__init__()
        self.model, self.system = model, system

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.system.to_z(x))


def known_population(size: int = 16, seed: int = 3) -> GroundTruthV1:
    """A small known population: 3 simple, 2 complex and 2 DoG cells on ``1×size×size`` z-images."""
    return GroundTruthV1.random(n_simple=3, n_complex=2, n_dog=2, size=size, seed=seed)


@dataclass(frozen=True)
class UnitScores:
    """Per MEI (rows of ``meis``, ``B×1×S×S`` in ``system``'s units), against the true population."""

    filter_r: torch.Tensor  # B: filter correlation (phase-invariant for complex cells)
    offset_stds: torch.Tensor  # B: (MEI's mean − stimulus mean) / std: 0 = centred, −2.67 = black
    true_drive: torch.Tensor  # B: the true cell's rate at the MEI


def score_meis(meis: torch.Tensor, neurons: list[int], system: UnitSystem, population: GroundTruthV1) -> UnitScores:
    """Score MEIs of ``neurons`` (one per row) made in ``system``'s units against the z-unit truth."""
    z = system.to_z(meis.detach().double()).float()
    with torch.no_grad():
        rates = population(z)
    index = torch.as_tensor(neurons)
    return UnitScores(
        filter_r=torch.tensor([filter_correlation(z[i], population, n) for i, n in enumerate(neurons)]),
        offset_stds=z.flatten(1).mean(1),
        true_drive=rates[torch.arange(len(neurons)), index],
    )
