"""openretina's smoothness penalty and mask processor, per row, against their formulas written out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mei_core import batched_gradient_ascent
from mei_core.components import Step
from mei_core.objectives import UnitObjective
from mei_core.postprocessors import ZeroOutsideMask
from mei_core.regularizers import SmoothnessRegularizationLoss

from helpers import LinearNeurons, gabor
from quality import at_most

STEP = Step.of_seeds([0])


def openretina_smoothness(stimulus: torch.Tensor, factor_spatial: float, factor_temporal: float, eps: float = 1e-8) -> torch.Tensor:
    """openretina's SmoothnessRegularizationLoss.forward on one stimulus 1×C×T×H×W, written out."""
    mean_square = stimulus.pow(2).mean() + eps
    spatial = stimulus.diff(dim=-2).pow(2).mean() + stimulus.diff(dim=-1).pow(2).mean()
    temporal = stimulus.diff(dim=-3).pow(2).mean()
    return factor_spatial * spatial / mean_square + factor_temporal * temporal / mean_square


def test_the_smoothness_penalty_of_each_row_is_openretinas_for_that_row_alone():
    videos = torch.randn(3, 2, 6, 8, 9, generator=torch.Generator().manual_seed(0)).cumsum(-1)
    penalty = SmoothnessRegularizationLoss(factor_spatial=2.0, factor_temporal=0.5)(videos, STEP)
    expected = torch.stack([openretina_smoothness(videos[b : b + 1], 2.0, 0.5) for b in range(3)])
    torch.testing.assert_close(penalty, expected, rtol=1e-6, atol=0)
    # each term is 2·(1 − lag-1 autocorrelation): a constant-contrast change of scale leaves it as it is
    torch.testing.assert_close(SmoothnessRegularizationLoss(1.0)(7.0 * videos, STEP), SmoothnessRegularizationLoss(1.0)(videos, STEP))
    assert torch.equal(SmoothnessRegularizationLoss()(videos, STEP), torch.zeros(3))  # inert until a factor is set
    with pytest.raises(ValueError, match="factor_temporal needs videos"):
        SmoothnessRegularizationLoss(factor_temporal=1.0)(videos[:, :, 0], STEP)


@pytest.mark.quality
def test_smoothness_lets_an_mei_be_smoother_than_without_it():
    filters = torch.stack([gabor(size=16, wavelength=3.0)])
    config = {"initial": {"path": "RandomNormal"}, "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.05}},
              "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 60}},
              "postprocessing": {"path": "ChangeNorm", "kwargs": {"norm": 4.0}}}
    smooth = {**config, "regularization": {"path": "SmoothnessRegularizationLoss", "kwargs": {"factor_spatial": 30.0}}}
    plain = batched_gradient_ascent(UnitObjective(LinearNeurons(filters), [0]), config, seeds=[1], shape=(1, 16, 16))
    smoothed = batched_gradient_ascent(UnitObjective(LinearNeurons(filters), [0]), smooth, seeds=[1], shape=(1, 16, 16))
    roughness = SmoothnessRegularizationLoss(factor_spatial=1.0)
    at_most("roughness with ÷ without the penalty", roughness(smoothed.meis, STEP) / roughness(plain.meis, STEP), 0.5)  # measured 0.017


def test_the_mask_holds_every_row_at_zero_outside_it_from_values_or_a_file(tmp_path):
    mask = np.zeros((5, 6), dtype=np.float32)
    mask[1:4, 2:5] = 1.0
    np.save(tmp_path / "mask.npy", mask)
    x = torch.randn(4, 2, 3, 5, 6)
    for given in (mask.tolist(), str(tmp_path / "mask.npy")):
        out = ZeroOutsideMask(given)(x, STEP)
        assert torch.equal(out, x * torch.from_numpy(mask))  # openretina's process(x): x * mask
    with pytest.raises(ValueError, match="does not broadcast"):
        ZeroOutsideMask(np.ones((4, 6)))(x, STEP)
    with pytest.raises(ValueError, match="cannot read"):
        ZeroOutsideMask(str(tmp_path / "missing.npy"))
