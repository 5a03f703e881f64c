"""Regularizers: one penalty per row, subtracted (times its weight) from the maximised objective."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .components import Regularizer, Step
from .ops import ALPHAS, check_spatial, opacity, row_norm

__all__ = [
    "TotalVariation", "LpNorm", "L1L2", "Similarity", "OpacityPenalty", "BoxContrast", "BoxContrastPixelL2",
    "RowFunction", "RangeRegularizationLoss", "SmoothnessRegularizationLoss",
]

#: neuralpredictors' Laplace filters by size (what sinzlab/mei's BoxContrastPixelL2 uses)
LAPLACE_FILTERS = {
    3: [[0, -1, 0], [-1, 4, -1], [0, -1, 0]],
    5: [[0, 0, 1, 0, 0], [0, 1, 2, 1, 0], [1, 2, -16, 2, 1], [0, 1, 2, 1, 0], [0, 0, 1, 0, 0]],
    7: [[0, 0, 1, 1, 1, 0, 0], [0, 1, 3, 3, 3, 1, 0], [1, 3, 0, -7, 0, 3, 1], [1, 3, -7, -24, -7, 3, 1],
        [1, 3, 0, -7, 0, 3, 1], [0, 1, 3, 3, 3, 1, 0], [0, 0, 1, 1, 1, 0, 0]],
}


class TotalVariation(Regularizer):
    """Total variation of every row over neighbouring pixels (last two dims).

    Anisotropic (default): ``Σ |x[i+1, j] − x[i, j]| + Σ |x[i, j+1] − x[i, j]|``. ``isotropic``: the
    gradient's length ``Σ_{i<H−1, j<W−1} √(Δy² + Δx²)`` (the last row and column, which lack one of the
    two differences, are left out, as sinzlab/mei does). For videos also neighbouring frames when
    ``temporal_weight > 0`` (absolute differences).
    """

    def __init__(self, weight: float = 1.0, temporal_weight: float = 0.0, isotropic: bool = False):
        self.weight = float(weight)
        self.temporal_weight = float(temporal_weight)
        self.isotropic = bool(isotropic)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "TotalVariation")
        dy = x[..., 1:, :] - x[..., :-1, :]
        dx = x[..., :, 1:] - x[..., :, :-1]
        if self.isotropic:
            # vector_norm: a zero gradient at zero differences, where √ would give NaN
            penalty = torch.linalg.vector_norm(torch.stack([dy[..., :, :-1], dx[..., :-1, :]]), dim=0).flatten(1).sum(1)
        else:
            penalty = dy.abs().flatten(1).sum(1) + dx.abs().flatten(1).sum(1)
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
    """For transparency MEIs (``AlphaBlend``): ``weight · mean opacity`` of the last (alpha) channel, so
    the optimiser keeps only the pixels that matter opaque. ``alpha``: how the channel is read, as in
    ``AlphaBlend``: ``sigmoid`` (default) or ``linear`` (the raw value: sinzlab/mei's)."""

    def __init__(self, weight: float = 1.0, alpha: str = "sigmoid"):
        if alpha not in ALPHAS:
            raise ValueError(f"alpha must be one of {ALPHAS}, got {alpha!r}")
        self.weight = float(weight)
        self.alpha = alpha

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return self.weight * opacity(x[:, -1:], self.alpha).flatten(1).mean(1)


class BoxContrast(Regularizer):
    """Local contrast above a bound, per row (sinzlab/mei's ``BoxContrast``)::

        weight · mean( relu(box_k(x²) − box_constraint) ** p ) + l1_weight · Σ|x|

    ``box_k`` sums ``x²`` over every ``filter_size × filter_size`` window of each channel (and frame),
    zero-padded by ``padding``; the mean runs over the windows of the row.
    """

    def __init__(self, weight: float = 0.1, filter_size: int = 7, box_constraint: float = 10.0, p: float = 2.0,
                 padding: int = 0, l1_weight: float = 1e-3):
        if filter_size < 1 or padding < 0:
            raise ValueError(f"need filter_size >= 1 and padding >= 0, got {filter_size}, {padding}")
        self.weight = float(weight)
        self.filter_size = int(filter_size)
        self.box_constraint = float(box_constraint)
        self.p = float(p)
        self.padding = int(padding)
        self.l1_weight = float(l1_weight)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "BoxContrast")
        planes = (x * x).reshape(-1, 1, *x.shape[-2:])
        box = torch.ones(1, 1, self.filter_size, self.filter_size, dtype=x.dtype, device=x.device)
        energy = F.conv2d(planes, box, padding=self.padding).reshape(x.shape[0], -1)
        box_term = torch.relu(energy - self.box_constraint).pow(self.p).mean(1)
        return self.weight * box_term + self.l1_weight * x.abs().flatten(1).sum(1)


class BoxContrastPixelL2(Regularizer):
    """Pixel bounds plus smoothness, per row (sinzlab/mei's ``BoxContrastPixelL2``)::

        weight · Σ [ relu(x − upper)**p + relu(lower − x)**p ] + l2_weight · mean(laplace(x)²)/2 + l1_weight · Σ|x|

    ``laplace``: the 3×3 (or ``filter_size`` 5, 7) Laplace filter of neuralpredictors, zero-padded, on
    every channel (and frame). ``lower: null`` drops the lower bound (sinzlab's code computes
    ``relu(−(x − lower)**p)``, which is 0 for even ``p``: its translation sets ``lower`` to null then).
    """

    def __init__(self, weight: float = 0.1, upper: float | None = 2.0, lower: float | None = -1.5, p: float = 2.0,
                 l2_weight: float = 1.0, l1_weight: float = 0.0, filter_size: int = 3):
        if filter_size not in LAPLACE_FILTERS:
            raise ValueError(f"filter_size must be one of {sorted(LAPLACE_FILTERS)}, got {filter_size}")
        self.weight = float(weight)
        self.upper = None if upper is None else float(upper)
        self.lower = None if lower is None else float(lower)
        self.p = float(p)
        self.l2_weight = float(l2_weight)
        self.l1_weight = float(l1_weight)
        self.filter_size = int(filter_size)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        check_spatial(x, "BoxContrastPixelL2")
        pixel = x.new_zeros(x.shape[0])
        if self.upper is not None:
            pixel = pixel + torch.relu(x - self.upper).pow(self.p).flatten(1).sum(1)
        if self.lower is not None:
            pixel = pixel + torch.relu(self.lower - x).pow(self.p).flatten(1).sum(1)
        kernel = torch.tensor(LAPLACE_FILTERS[self.filter_size], dtype=x.dtype, device=x.device)[None, None]
        planes = x.reshape(-1, 1, *x.shape[-2:])
        laplace = F.conv2d(planes, kernel, padding=self.filter_size // 2).reshape(x.shape[0], -1)
        smooth = laplace.pow(2).mean(1) / 2
        return self.weight * pixel + self.l2_weight * smooth + self.l1_weight * x.abs().flatten(1).sum(1)


class RowFunction(Regularizer):
    """``weight · function(row)`` for every row: a user function of one row (``1×…``) that returns a
    number (e.g. connectome_interpreter's custom ``in`` regulariser), given as a callable or an import
    path. General, but a Python loop over the rows."""

    def __init__(self, function: Callable[[Tensor], Tensor] | str, weight: float = 1.0):
        if isinstance(function, str):
            from .config import import_object

            function = import_object(function, "function")
        if not callable(function):
            raise ValueError(f"function must be callable, got {function!r}")
        self.function = function
        self.weight = float(weight)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        return self.weight * torch.stack([torch.as_tensor(self.function(x[i : i + 1])).reshape(()) for i in range(len(x))])


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



class SmoothnessRegularizationLoss(Regularizer):
    """openretina's smoothness penalty, per row: squared first differences over the mean square::

        (factor_spatial · (mean Δ_y² + mean Δ_x²) + factor_temporal · mean Δ_t²) / (mean x² + eps)

    Each term is ``2·(1 − r)`` of the lag-1 autocorrelation ``r`` along its axis, so it does not
    change with the contrast budget. ``Δ_t`` needs videos ``B×C×T×H×W``. openretina takes the means
    over the whole batch; here each row gets its own (the same for one row).
    """

    def __init__(self, factor_spatial: float = 0.0, factor_temporal: float = 0.0, eps: float = 1e-8):
        self.factor_spatial = float(factor_spatial)
        self.factor_temporal = float(factor_temporal)
        self.eps = float(eps)

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        penalty = x.new_zeros(x.shape[0])
        if self.factor_spatial == 0.0 and self.factor_temporal == 0.0:
            return penalty
        check_spatial(x, "SmoothnessRegularizationLoss")
        mean_square = x.pow(2).flatten(1).mean(1) + self.eps
        if self.factor_spatial != 0.0:
            spatial = x.diff(dim=-2).pow(2).flatten(1).mean(1) + x.diff(dim=-1).pow(2).flatten(1).mean(1)
            penalty = penalty + self.factor_spatial * spatial / mean_square
        if self.factor_temporal != 0.0:
            if x.dim() != 5:
                raise ValueError(f"SmoothnessRegularizationLoss: factor_temporal needs videos B×C×T×H×W, got shape {tuple(x.shape)}")
            penalty = penalty + self.factor_temporal * x.diff(dim=-3).pow(2).flatten(1).mean(1) / mean_square
        return penalty
