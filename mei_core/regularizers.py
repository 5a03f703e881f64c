"""Regularizers: one penalty per row, subtracted (times its weight) from the maximised objective."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .components import Regularizer, Step
from .ops import check_spatial, row_norm

__all__ = ["TotalVariation", "LpNorm", "L1L2", "Similarity", "OpacityPenalty", "RangeRegularizationLoss"]


class TotalVariation(Regularizer):
    """Sum of absolute differences between neighbouring pixels (anisotropic TV) of every row.

    Spatial neighbours only (last two dims); for videos also neighbouring frames when
    ``temporal_weight > 0``.
    """

    def __init__(self, weight: float = 1.0, temporal_weight: float = 0.0):
        self.weight = float(weight)
        self.temporal_weight = float(temporal_weight)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "TotalVariation")
        vertical = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
        horizontal = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
        penalty = vertical + horizontal
        if self.temporal_weight and x.dim() == 5:
            penalty = penalty + self.temporal_weight * (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).sum(1)
        return self.weight * penalty


class LpNorm(Regularizer):
    """``weight · ‖x‖_p`` per row (``p`` ≥ 1), optionally raised to the power p."""

    def __init__(self, p: float = 2.0, weight: float = 1.0, powered: bool = False):
        if p < 1:
            raise ValueError(f"p must be >= 1, got {p}")
        self.p = float(p)
        self.weight = float(weight)
        self.powered = bool(powered)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        norm = row_norm(x, self.p)
        return self.weight * (norm**self.p if self.powered else norm)


class L1L2(Regularizer):
    """``l1·mean|x| + l2·mean x²`` per row (connectome_interpreter's input/activation penalty)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = float(l1)
        self.l2 = float(l2)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        flat = x.flatten(1)
        return self.l1 * flat.abs().mean(1) + self.l2 * flat.pow(2).mean(1)


class Similarity(Regularizer):
    """Diversity term for ``n_meis`` MEIs of one item: each row is penalised by its mean similarity
    (Pearson correlation, or negative mean squared distance) to the item's other rows.

    Rows of different items never interact, so the penalty of an item does not depend on the batch.
    """

    def __init__(self, weight: float = 1.0, metric: str = "correlation"):
        if metric not in {"correlation", "euclidean"}:
            raise ValueError(f"metric must be 'correlation' or 'euclidean', got {metric!r}")
        self.weight = float(weight)
        self.metric = metric

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        flat = x.flatten(1)
        if self.metric == "correlation":
            centred = flat - flat.mean(1, keepdim=True)
            unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)
            similarity = unit @ unit.T
        else:
            similarity = -torch.cdist(flat, flat).pow(2) / flat.shape[1]
        groups = step.groups()
        same_item = groups[:, None] == groups[None, :]
        others = same_item & ~torch.eye(len(groups), dtype=torch.bool, device=x.device)
        n_others = others.sum(1)
        summed = (similarity * others).sum(1)
        # rows alone in their item (n_meis = 1) get no penalty rather than a division by zero
        mean = torch.where(n_others > 0, summed / n_others.clamp_min(1), torch.zeros_like(summed))
        return self.weight * mean


class OpacityPenalty(Regularizer):
    """For transparency MEIs (``AlphaBlend``): ``weight · mean opacity`` of the alpha channel, so the
    optimiser keeps only the pixels that matter opaque."""

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return self.weight * torch.sigmoid(x[:, -1:]).flatten(1).mean(1)


class RangeRegularizationLoss(Regularizer):
    """openretina's range penalty, per row.

    With ``[lo_c, hi_c] = min_max_values[c]`` (either may be ``None``: no bound), row ``b``'s penalty is::

        factor · ( Σ_c Σ_pixels [ relu(lo_c − x_b,c) + relu(x_b,c − hi_c) ]
                   + relu(‖x_b‖₂ − max_norm) )

    (linear excess, as openretina; ``squared=True`` squares the per-pixel excess instead). The norm
    term is dropped when ``max_norm`` is ``None``. openretina sums this over the batch; here each
    row gets its own.
    """

    def __init__(
        self,
        min_max_values: Iterable[Sequence[float | None]],
        max_norm: float | None = None,
        factor: float = 1.0,
        squared: bool = False,
    ):
        bounds = [tuple(pair) for pair in min_max_values]
        for i, pair in enumerate(bounds):
            if len(pair) != 2:
                raise ValueError(f"RangeRegularizationLoss: min_max_values[{i}] must be [min, max], got {list(pair)}")
            lo, hi = pair
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"RangeRegularizationLoss: channel {i} has min {lo} > max {hi}")
        self.min_max_values = [[None if v is None else float(v) for v in pair] for pair in bounds]
        self.max_norm = None if max_norm is None else float(max_norm)
        self.factor = float(factor)
        self.squared = bool(squared)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        if x.dim() < 2 or x.shape[1] != len(self.min_max_values):
            raise ValueError(
                f"RangeRegularizationLoss has {len(self.min_max_values)} channel ranges but the input has shape {tuple(x.shape)}"
            )
        penalty = x.new_zeros(x.shape[0])
        for c, (lo, hi) in enumerate(self.min_max_values):
            channel = x[:, c]
            for excess in ([torch.relu(lo - channel)] if lo is not None else []) + (
                [torch.relu(channel - hi)] if hi is not None else []
            ):
                penalty = penalty + (excess.pow(2) if self.squared else excess).flatten(1).sum(1)
        if self.max_norm is not None:
            penalty = penalty + torch.relu(torch.linalg.vector_norm(x.flatten(1), dim=1) - self.max_norm)
        return self.factor * penalty

