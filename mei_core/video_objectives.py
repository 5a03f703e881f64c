"""Video objectives for openretina-style models, batched per row.

Per-row, vectorised counterparts of openretina 1.1.1's ``stimulus_optimization`` objectives
(``IncreaseObjective``, ``InnerNeuronVisualizationObjective``, ``ContrastiveNeuronObjective``), its
response reducers and its ``RangeRegularizationLoss``.

Videos are ``B×C×T×H×W``. An openretina-convention model answers ``B×T'×N`` (``T'`` may be shorter
than ``T``) and is called ``model(x, data_key=...)`` when a ``data_key`` is given (``model(x)``
otherwise). openretina optimises one stimulus at a time and squeezes the batch dimension; here every
row of the batch has its own target (neuron group, channel, on-cluster), looked up by ``rows`` (the
indices into the whole batch of the rows in ``x``), and a row's value never depends on the other
rows of its batch (as long as the model itself treats rows independently).

Reducers keep openretina's ``axis`` convention: ``axis`` is the time axis of *one row's* response
(batch dimension excluded), so the default ``axis=0`` is time; on a batched ``B×T'(×K)`` response it
acts on dimension ``axis + 1`` (negative axes count from the end as usual).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .components import Regularizer, Step
from .objectives import Objective

__all__ = [
    "ResponseReducer",
    "MeanReducer",
    "SliceMeanReducer",
    "IncreaseObjective",
    "DecreaseObjective",
    "InnerNeuronObjective",
    "ContrastiveNeuronObjective",
    "RangeRegularizationLoss",
]


# --------------------------------------------------------------------------------------- reducers


class ResponseReducer:
    """Reduces a batched response ``B×T'`` (or ``B×T'×K``) over time to ``B`` (or ``B×K``)."""

    def __init__(self, axis: int = 0):
        self.axis = int(axis)

    def _dim(self, responses: Tensor) -> int:
        if responses.dim() < 2:
            raise ValueError(f"{type(self).__name__} needs a batched response B×T'(×K), got shape {tuple(responses.shape)}")
        dim = self.axis + 1 if self.axis >= 0 else responses.dim() + self.axis
        if not 1 <= dim < responses.dim():
            raise ValueError(f"{type(self).__name__}: axis {self.axis} is not a time axis of a response of shape {tuple(responses.shape)}")
        return dim

    def __call__(self, responses: Tensor) -> Tensor:
        return self.forward(responses)

    def forward(self, responses: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class MeanReducer(ResponseReducer):
    """Mean over time (``axis`` = time axis of one row's response; default 0)."""

    def forward(self, responses: Tensor) -> Tensor:
        return responses.mean(dim=self._dim(responses))


class SliceMeanReducer(ResponseReducer):
    """Mean over the frames ``start … start + length − 1`` of the time axis."""

    def __init__(self, axis: int, start: int, length: int):
        super().__init__(axis)
        if start < 0:
            raise ValueError(f"SliceMeanReducer: start must be >= 0, got {start}")
        if length < 1:
            raise ValueError(f"SliceMeanReducer: length must be >= 1, got {length}")
        self.start = int(start)
        self.length = int(length)

    def forward(self, responses: Tensor) -> Tensor:
        dim = self._dim(responses)
        available = responses.shape[dim]
        if self.start + self.length > available:
            raise ValueError(
                f"SliceMeanReducer(start={self.start}, length={self.length}) needs at least "
                f"{self.start + self.length} time steps, but the response has only {available} "
                f"(shape {tuple(responses.shape)}); use a longer stimulus or a shorter slice"
            )
        return responses.narrow(dim, self.start, self.length).mean(dim=dim)


# ------------------------------------------------------------------------------------- helpers


def _forward(model: Any, x: Tensor, data_key: str | None) -> Tensor:
    return model(x) if data_key is None else model(x, data_key=data_key)


def _as_time_neurons(responses: Tensor, who: str) -> Tensor:
    """``B×T'×N`` responses (a ``B×N`` answer is treated as a single time step)."""
    if responses.dim() == 2:
        return responses[:, None, :]
    if responses.dim() != 3:
        raise ValueError(f"{who} expects model responses B×T'×N, got shape {tuple(responses.shape)}")
    return responses


def _group_table(groups: Sequence[int | Sequence[int]], who: str) -> tuple[Tensor, Tensor]:
    """Padded index table ``G×W`` and averaging weights ``G×W`` (``1/|group|``, 0 on pads)."""
    lists: list[list[int]] = []
    for i, group in enumerate(groups):
        scalar = isinstance(group, numbers.Integral) or (isinstance(group, Tensor) and group.dim() == 0)
        members = [int(group)] if scalar else [int(n) for n in group]
        if not members:
            raise ValueError(f"{who}: group {i} is empty")
        if min(members) < 0:
            raise ValueError(f"{who}: group {i} has a negative neuron index {min(members)}")
        lists.append(members)
    if not lists:
        raise ValueError(f"{who}: no rows given")
    width = max(len(m) for m in lists)
    index = torch.tensor([m + [m[0]] * (width - len(m)) for m in lists], dtype=torch.long)
    weight = torch.tensor([[1.0 / len(m)] * len(m) + [0.0] * (width - len(m)) for m in lists])
    return index, weight


def _select(table: Tensor, rows: Tensor, n_rows: int) -> Tensor:
    if len(rows) == n_rows:
        return table
    return table[rows.to(table.device, torch.long)]


def _group_means(responses: Tensor, index: Tensor, weight: Tensor, who: str) -> Tensor:
    """Row ``b``'s mean over its group: ``B×T'×N`` with ``B×W`` tables → ``B×T'``."""
    n_neurons = responses.shape[-1]
    if int(index.max()) >= n_neurons:
        raise IndexError(f"{who}: neuron index {int(index.max())} out of range for a model with {n_neurons} neurons")
    index = index.to(responses.device)
    picked = torch.gather(responses, 2, index[:, None, :].expand(-1, responses.shape[1], -1))
    return (picked * weight.to(responses.device, responses.dtype)[:, None, :]).sum(-1)


def _move_model(model: Any, device) -> None:
    if isinstance(model, nn.Module):
        model.to(device)


# ----------------------------------------------------------------------------------- objectives


class IncreaseObjective(Objective):
    """Most exciting inputs of (groups of) output neurons.

    Row ``b``'s value is ``reducer(mean_{n ∈ G_b} model(x)[b, :, n])``: the response of its neuron
    (or the mean response of its neuron group ``G_b``) reduced over time.
    ``neuron_indices_per_row[b]`` is an ``int`` or a list of ints; it is looked up by ``rows``.
    """

    sign = 1.0

    def __init__(
        self,
        model: Any,
        neuron_indices_per_row: Sequence[int | Sequence[int]],
        data_key: str | None = None,
        response_reducer: ResponseReducer | None = None,
    ):
        self.model = model
        self.data_key = data_key
        self.response_reducer = response_reducer if response_reducer is not None else MeanReducer()
        self.index, self.weight = _group_table(neuron_indices_per_row, type(self).__name__)

    def row_responses(self, x: Tensor, rows: Tensor) -> Tensor:
        """Each row's group-mean response over time, ``B×T'``."""
        responses = _as_time_neurons(_forward(self.model, x, self.data_key), type(self).__name__)
        n = len(self.index)
        return _group_means(responses, _select(self.index, rows, n), _select(self.weight, rows, n), type(self).__name__)

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        return self.sign * self.response_reducer(self.row_responses(x, rows))

    def to(self, device):
        _move_model(self.model, device)
        self.index, self.weight = self.index.to(device), self.weight.to(device)
        return self


class DecreaseObjective(IncreaseObjective):
    """Most depressing inputs (MDI): the negative of :class:`IncreaseObjective`."""

    sign = -1.0


class InnerNeuronObjective(Objective):
    """Maximise a channel of an inner layer at the layer's spatial centre.

    A forward hook on ``dict(model.named_modules())[layer_name]`` catches the layer output
    (``B×C×T×H×W`` or ``B×C×H×W``); row ``b``'s value is
    ``reducer(out[b, channels_per_row[b], :, H // 2, W // 2])`` (a ``B×C×H×W`` output counts as one
    time step). The hook is registered for each call and removed afterwards, even on errors.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_name: str,
        channels_per_row: Sequence[int],
        data_key: str | None = None,
        response_reducer: ResponseReducer | None = None,
    ):
        modules = dict(model.named_modules())
        if layer_name not in modules:
            available = ", ".join(repr(name) for name in modules if name) or "(none)"
            raise ValueError(f"InnerNeuronObjective: model has no layer {layer_name!r}; available layers: {available}")
        channels = [int(c) for c in channels_per_row]
        if not channels:
            raise ValueError("InnerNeuronObjective: no rows given")
        if min(channels) < 0:
            raise ValueError(f"InnerNeuronObjective: negative channel index {min(channels)}")
        self.model = model
        self.layer_name = layer_name
        self.layer = modules[layer_name]
        self.data_key = data_key
        self.response_reducer = response_reducer if response_reducer is not None else MeanReducer()
        self.channels = torch.tensor(channels, dtype=torch.long)

    def layer_output(self, x: Tensor) -> Tensor:
        """The hooked layer's output for ``x`` (the model is run once; the hook is then removed)."""
        caught: list[Any] = []
        handle = self.layer.register_forward_hook(lambda module, inputs, output: caught.append(output))
        try:
            _forward(self.model, x, self.data_key)
        finally:
            handle.remove()
        if not caught:
            raise RuntimeError(f"InnerNeuronObjective: layer {self.layer_name!r} was not called in the forward pass")
        output = caught[-1]
        if not isinstance(output, Tensor) or output.dim() not in (4, 5):
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"InnerNeuronObjective: layer {self.layer_name!r} must output B×C×T×H×W or B×C×H×W, got {shape}")
        return output

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        output = self.layer_output(x)
        channels = _select(self.channels, rows, len(self.channels)).to(output.device)
        if int(channels.max()) >= output.shape[1]:
            raise IndexError(f"InnerNeuronObjective: channel {int(channels.max())} out of range for layer {self.layer_name!r} with {output.shape[1]} channels")
        height, width = output.shape[-2:]
        centre = output[..., height // 2, width // 2]  # B×C(×T)
        trace = centre[torch.arange(len(centre), device=centre.device), channels]  # B(×T)
        if trace.dim() == 1:
            trace = trace[:, None]
        return self.response_reducer(trace)

    def to(self, device):
        self.model.to(device)
        self.channels = self.channels.to(device)
        return self


class ContrastiveNeuronObjective(Objective):
    """Most discriminative stimuli (Burg et al., ICLR 2024), one on-cluster per row.

    A cluster is a list of output neurons; its score is ``r_k = reducer(mean_{n ∈ k} model(x)[b, :, n])``.
    Row ``b`` compares its on-cluster ``on_clusters_per_row[b]`` with the shared ``off_clusters``::

        value_b = r_on / t − logsumexp_{k ∈ {on} ∪ off_b}(r_k / t) + log(K_b)

    with ``t`` the temperature and ``K_b = 1 + |off_b|`` the number of clusters compared. ``off_b``
    is ``off_clusters`` less any cluster equal (as a set of neurons) to the row's on-cluster, so the
    full cluster list may be passed as ``off_clusters`` (as openretina's objective scores a neuron
    against all neurons, itself included once). The value is ``log K_b + log softmax_on``: 0 when all
    clusters respond equally, at most ``log K_b``.
    """

    def __init__(
        self,
        model: Any,
        on_clusters_per_row: Sequence[Sequence[int]],
        off_clusters: Sequence[Sequence[int]],
        temperature: float = 1.6,
        data_key: str | None = None,
        response_reducer: ResponseReducer | None = None,
    ):
        if temperature <= 0:
            raise ValueError(f"ContrastiveNeuronObjective: temperature must be > 0, got {temperature}")
        on_sets = [frozenset(int(n) for n in c) for c in on_clusters_per_row]
        off_sets = [frozenset(int(n) for n in c) for c in off_clusters]
        self.model = model
        self.data_key = data_key
        self.temperature = float(temperature)
        self.response_reducer = response_reducer if response_reducer is not None else MeanReducer()
        self.on_index, self.on_weight = _group_table(on_clusters_per_row, "ContrastiveNeuronObjective (on clusters)")
        if off_sets:
            off_index, off_weight = _group_table(off_clusters, "ContrastiveNeuronObjective (off clusters)")
            n_neurons = int(max(off_index.max(), self.on_index.max())) + 1
            # N×n_off averaging matrix: responses @ matrix gives every off cluster's mean
            self.off_matrix = torch.zeros(n_neurons, len(off_sets))
            for k in range(len(off_sets)):
                self.off_matrix[:, k].index_add_(0, off_index[k], off_weight[k])
        else:
            self.off_matrix = torch.zeros(int(self.on_index.max()) + 1, 0)
        # rows × n_off: True where the off cluster is compared with the row's on cluster
        self.off_mask = torch.tensor([[off != on for off in off_sets] for on in on_sets], dtype=torch.bool).reshape(len(on_sets), len(off_sets))

    def cluster_scores(self, x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(scores B×(1+n_off), mask B×(1+n_off))``: column 0 the on-cluster, then the off clusters."""
        responses = _as_time_neurons(_forward(self.model, x, self.data_key), "ContrastiveNeuronObjective")
        n = len(self.on_index)
        on = _group_means(responses, _select(self.on_index, rows, n), _select(self.on_weight, rows, n), "ContrastiveNeuronObjective")
        if self.off_matrix.shape[0] > responses.shape[-1]:
            raise IndexError(f"ContrastiveNeuronObjective: neuron index {self.off_matrix.shape[0] - 1} out of range for a model with {responses.shape[-1]} neurons")
        matrix = self.off_matrix.to(responses.device, responses.dtype)
        off = responses[..., : matrix.shape[0]] @ matrix  # B×T'×n_off
        scores = self.response_reducer(torch.cat([on[..., None], off], dim=-1))  # B×K
        off_mask = _select(self.off_mask, rows, n).to(scores.device)
        mask = torch.cat([torch.ones(len(off_mask), 1, dtype=torch.bool, device=off_mask.device), off_mask], dim=1)
        return scores, mask

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        scores, mask = self.cluster_scores(x, rows)
        scaled = scores / self.temperature
        lse = torch.logsumexp(scaled.masked_fill(~mask, float("-inf")), dim=1)
        return scaled[:, 0] - lse + torch.log(mask.sum(1).to(scores.dtype))

    def to(self, device):
        _move_model(self.model, device)
        for name in ("on_index", "on_weight", "off_matrix", "off_mask"):
            setattr(self, name, getattr(self, name).to(device))
        return self


# --------------------------------------------------------------------------------- regularizer


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

