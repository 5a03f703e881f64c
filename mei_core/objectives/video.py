"""Video objectives for openretina-style models, batched per row.

Per-row, vectorised counterparts of openretina 1.1.1's ``stimulus_optimization`` objectives
(``IncreaseObjective``, ``InnerNeuronVisualizationObjective``, ``ContrastiveNeuronObjective``), its
response reducers and its ``RangeRegularizationLoss``.

Videos are ``B×C×T×H×W``. An openretina-convention model answers ``B×T'×N`` (``T'`` may be shorter
than ``T``) and is called ``model(x, data_key=...)`` when a ``data_key`` is given (``model(x)``
otherwise). openretina optimises one stimulus at a time and squeezes the batch dimension; here every
item has its own target (neuron group, channel, on-cluster), looked up by the item index of each
row, and a row's value never depends on the other rows of its batch (as long as the model itself
treats rows independently).

Reducers keep openretina's ``axis`` convention: ``axis`` is the time axis of *one row's* response
(batch dimension excluded), so the default ``axis=0`` is time; on a batched ``B×T'(×K)`` response it
acts on dimension ``axis + 1`` (negative axes count from the end as usual).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import MEIConfigError
from ..hashing import canonical_json
from .base import CallsModel, Objective, move_model, row_forward_kwargs
from .kinds import Items, ObjectiveKind

__all__ = [
    "ResponseReducer",
    "MeanReducer",
    "SliceMeanReducer",
    "IncreaseObjective",
    "DecreaseObjective",
    "InnerNeuronObjective",
    "ContrastiveNeuronObjective",
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
    """Mean over the frames ``start … start + length − 1`` of the time axis, as openretina's reducer:
    a slice that runs past the response is cut at its end, and one that starts past it falls back to
    the first ``length`` frames with a warning (openretina 1.1.1, ``SliceMeanReducer.forward``)."""

    def __init__(self, axis: int, start: int, length: int):
        super().__init__(axis)
        if start < 0:
            raise ValueError(f"SliceMeanReducer: start must be >= 0, got {start}")
        if length < 1:
            raise ValueError(f"SliceMeanReducer: length must be >= 1, got {length}")
        self.start = int(start)
        self.length = int(length)

    def span(self, available: int) -> tuple[int, int]:
        """``(start, length)`` of the frames averaged in a response of ``available`` frames."""
        length = min(available - self.start, self.length)
        if length > 0:
            return self.start, length
        length = min(self.length, available)
        warnings.warn(
            f"SliceMeanReducer(start={self.start}, length={self.length}): the response has only {available} "
            f"frames; averaging frames 0…{length - 1} instead (openretina's fallback)",
            RuntimeWarning, stacklevel=3,
        )
        return 0, length

    def forward(self, responses: Tensor) -> Tensor:
        dim = self._dim(responses)
        start, length = self.span(responses.shape[dim])
        return responses.narrow(dim, start, length).mean(dim=dim)


# ------------------------------------------------------------------------------------- helpers


def _as_time_neurons(responses: Tensor, who: str) -> Tensor:
    """``B×T'×N`` responses (a ``B×N`` answer is treated as a single time step)."""
    if responses.dim() == 2:
        return responses[:, None, :]
    if responses.dim() != 3:
        raise ValueError(f"{who} expects model responses B×T'×N, got shape {tuple(responses.shape)}")
    return responses


def _group_table(groups: Sequence[int | Sequence[int]], who: str) -> tuple[Tensor, Tensor, int]:
    """Padded index table ``G×W``, averaging weights ``G×W`` (``1/|group|``, 0 on pads) and the
    largest neuron index (kept on the host: checking it against a response costs no device read)."""
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
    return index, weight, max(max(m) for m in lists)


def _group_means(responses: Tensor, index: Tensor, weight: Tensor, largest: int, who: str) -> Tensor:
    """Row ``b``'s mean over its group: ``B×T'×N`` with ``B×W`` tables (on the responses' device:
    :meth:`Objective.per_item` puts them there once per batch composition) → ``B×T'``.

    ``largest``: the largest neuron index of the whole table, checked against the model's width
    without reading anything from the device (as :class:`UnitObjective` checks its units)."""
    n_neurons = responses.shape[-1]
    if largest >= n_neurons:
        raise IndexError(f"{who}: neuron index {largest} out of range for a model with {n_neurons} neurons")
    picked = torch.gather(responses, 2, index[:, None, :].expand(-1, responses.shape[1], -1))
    return (picked * weight[:, None, :]).sum(-1)


# ----------------------------------------------------------------------------------- objectives


class IncreaseObjective(CallsModel, Objective):
    """Most exciting inputs of (groups of) output neurons.

    Row ``b``'s value is ``reducer(mean_{n ∈ G_b} model(x)[b, :, n])``: the response of its neuron
    (or the mean response of its neuron group ``G_b``) reduced over time.
    ``neuron_indices_per_item[k]`` is an ``int`` or a list of ints.
    """

    sign = 1.0

    def __init__(
        self,
        model: Any,
        neuron_indices_per_item: Sequence[int | Sequence[int]],
        data_key: str | None = None,
        response_reducer: ResponseReducer | None = None,
    ):
        self.model = model
        self.forward_kwargs = row_forward_kwargs(data_key)
        self.response_reducer = response_reducer if response_reducer is not None else MeanReducer()
        self.index, self.weight, self.largest = _group_table(neuron_indices_per_item, type(self).__name__)

    def row_responses(self, x: Tensor, items: Tensor) -> Tensor:
        """Each row's group-mean response over time, ``B×T'``."""
        responses = _as_time_neurons(self.model(x, **self.forward_kwargs), type(self).__name__)
        index = self.per_item(self.index, items, like=responses)
        weight = self.per_item(self.weight, items, like=responses, dtype=responses.dtype)
        return _group_means(responses, index, weight, self.largest, type(self).__name__)

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        return self.sign * self.response_reducer(self.row_responses(x, items))

    def to(self, device):
        move_model(self.model, device)
        self.index, self.weight = self.index.to(device), self.weight.to(device)
        self.__dict__.pop("_per_item_cache", None)
        return self


class DecreaseObjective(IncreaseObjective):
    """Most depressing inputs (MDI): the negative of :class:`IncreaseObjective`."""

    sign = -1.0


class InnerNeuronObjective(CallsModel, Objective):
    """Maximise a channel of an inner layer at the layer's spatial centre.

    A forward hook on ``dict(model.named_modules())[layer_name]`` catches the layer output
    (``B×C×T×H×W`` or ``B×C×H×W``); row ``b``'s value is
    ``reducer(out[b, channels_per_item[item of b], :, H // 2, W // 2])`` (a ``B×C×H×W`` output counts as one
    time step). The hook is registered for each call and removed afterwards, even on errors.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_name: str,
        channels_per_item: Sequence[int],
        data_key: str | None = None,
        response_reducer: ResponseReducer | None = None,
        layer_channels: int | None = None,
    ):
        modules = dict(model.named_modules())
        if layer_name not in modules:
            available = ", ".join(repr(name) for name in modules if name) or "(none)"
            raise ValueError(f"InnerNeuronObjective: model has no layer {layer_name!r}; available layers: {available}")
        channels = [int(c) for c in channels_per_item]
        if not channels:
            raise ValueError("InnerNeuronObjective: no rows given")
        if min(channels) < 0:
            raise ValueError(f"InnerNeuronObjective: negative channel index {min(channels)}")
        self.model = model
        self.layer_name = layer_name
        self.layer = modules[layer_name]
        self.forward_kwargs = row_forward_kwargs(data_key)
        self.response_reducer = response_reducer if response_reducer is not None else MeanReducer()
        self.channels = torch.tensor(channels, dtype=torch.long)
        self.largest = max(channels)  # on the host: checked against the layer without a device read
        #: the layer's width the items were planned for (a sweep over all channels): checked once
        self.layer_channels = layer_channels

    def layer_output(self, x: Tensor) -> Tensor:
        """The hooked layer's output for ``x`` (the model is run once; the hook is then removed)."""
        caught: list[Any] = []
        handle = self.layer.register_forward_hook(lambda module, inputs, output: caught.append(output))
        try:
            self.model(x, **self.forward_kwargs)
        finally:
            handle.remove()
        if not caught:
            raise RuntimeError(f"InnerNeuronObjective: layer {self.layer_name!r} was not called in the forward pass")
        output = caught[-1]
        if not isinstance(output, Tensor) or output.dim() not in (4, 5):
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"InnerNeuronObjective: layer {self.layer_name!r} must output B×C×T×H×W or B×C×H×W, got {shape}")
        return output

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        output = self.layer_output(x)
        if self.layer_channels is not None:
            if output.shape[1] != self.layer_channels:
                raise ValueError(
                    f"InnerNeuronObjective: layer {self.layer_name!r} has {output.shape[1]} channels, but the sweep over all "
                    f"channels was planned for n_channels = {self.layer_channels} (kwargs.n_channels)"
                )
            self.layer_channels = None
        if self.largest >= output.shape[1]:
            raise IndexError(f"InnerNeuronObjective: channel {self.largest} out of range for layer {self.layer_name!r} with {output.shape[1]} channels")
        channels = self.per_item(self.channels, items, like=output)
        height, width = output.shape[-2:]
        centre = output[..., height // 2, width // 2]  # B×C(×T)
        trace = centre[torch.arange(len(centre), device=centre.device), channels]  # B(×T)
        if trace.dim() == 1:
            trace = trace[:, None]
        return self.response_reducer(trace)

    def to(self, device):
        self.model.to(device)
        self.channels = self.channels.to(device)
        self.__dict__.pop("_per_item_cache", None)
        return self


class ContrastiveNeuronObjective(CallsModel, Objective):
    """Most discriminative stimuli (Burg et al., ICLR 2024), one on-cluster per row.

    A cluster is a list of output neurons; its score is ``r_k = reducer(mean_{n ∈ k} model(x)[b, :, n])``.
    Item ``k`` compares its on-cluster ``on_clusters_per_item[k]`` with the shared ``off_clusters``::

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
        on_clusters_per_item: Sequence[Sequence[int]],
        off_clusters: Sequence[Sequence[int]],
        temperature: float = 1.6,
        data_key: str | None = None,
        response_reducer: ResponseReducer | None = None,
    ):
        if temperature <= 0:
            raise ValueError(f"ContrastiveNeuronObjective: temperature must be > 0, got {temperature}")
        on_sets = [frozenset(int(n) for n in c) for c in on_clusters_per_item]
        off_sets = [frozenset(int(n) for n in c) for c in off_clusters]
        self.model = model
        self.forward_kwargs = row_forward_kwargs(data_key)
        self.temperature = float(temperature)
        self.response_reducer = response_reducer if response_reducer is not None else MeanReducer()
        self.on_index, self.on_weight, self.largest = _group_table(on_clusters_per_item, "ContrastiveNeuronObjective (on clusters)")
        if off_sets:
            off_index, off_weight, _ = _group_table(off_clusters, "ContrastiveNeuronObjective (off clusters)")
            n_neurons = int(max(off_index.max(), self.on_index.max())) + 1
            # N×n_off averaging matrix: responses @ matrix gives every off cluster's mean
            self.off_matrix = torch.zeros(n_neurons, len(off_sets))
            for k in range(len(off_sets)):
                self.off_matrix[:, k].index_add_(0, off_index[k], off_weight[k])
        else:
            self.off_matrix = torch.zeros(int(self.on_index.max()) + 1, 0)
        # rows × n_off: True where the off cluster is compared with the row's on cluster
        self.off_mask = torch.tensor([[off != on for off in off_sets] for on in on_sets], dtype=torch.bool).reshape(len(on_sets), len(off_sets))

    def cluster_scores(self, x: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """``(scores B×(1+n_off), mask B×(1+n_off))``: column 0 the on-cluster, then the off clusters."""
        responses = _as_time_neurons(self.model(x, **self.forward_kwargs), "ContrastiveNeuronObjective")
        on_index = self.per_item(self.on_index, items, like=responses)
        on_weight = self.per_item(self.on_weight, items, like=responses, dtype=responses.dtype)
        on = _group_means(responses, on_index, on_weight, self.largest, "ContrastiveNeuronObjective")
        if self.off_matrix.shape[0] > responses.shape[-1]:
            raise IndexError(f"ContrastiveNeuronObjective: neuron index {self.off_matrix.shape[0] - 1} out of range for a model with {responses.shape[-1]} neurons")
        matrix = self.off_matrix if self.off_matrix.dtype == responses.dtype else self.off_matrix.to(responses.dtype)
        off = responses[..., : matrix.shape[0]] @ matrix.to(responses.device)  # B×T'×n_off
        scores = self.response_reducer(torch.cat([on[..., None], off], dim=-1))  # B×K
        off_mask = self.per_item(self.off_mask, items, like=scores)
        mask = torch.cat([torch.ones(len(off_mask), 1, dtype=torch.bool, device=off_mask.device), off_mask], dim=1)
        return scores, mask

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        scores, mask = self.cluster_scores(x, items)
        scaled = scores / self.temperature
        lse = torch.logsumexp(scaled.masked_fill(~mask, float("-inf")), dim=1)
        return scaled[:, 0] - lse + torch.log(mask.sum(1).to(scores.dtype))

    def to(self, device):
        move_model(self.model, device)
        for name in ("on_index", "on_weight", "off_matrix", "off_mask"):
            setattr(self, name, getattr(self, name).to(device))
        self.__dict__.pop("_per_item_cache", None)
        return self


# ---------------------------------------------------------------------------------------- kinds

_REDUCER_SCHEMA = {
    "description": "'mean' (default) or {slice_mean: {start, length}}: the mean response over those frames",
    "oneOf": [
        {"const": "mean"},
        {
            "type": "object", "additionalProperties": False, "required": ["slice_mean"],
            "properties": {"slice_mean": {
                "type": "object", "additionalProperties": False, "required": ["start", "length"],
                "properties": {"start": {"type": "integer", "minimum": 0}, "length": {"type": "integer", "minimum": 1}},
            }},
        },
    ],
}


@dataclass(frozen=True)
class VideoOptions:
    """Typed kwargs of the video kinds."""

    reducer: Any = "mean"
    neurons: dict[str, list[int]] | None = None
    layer: str | None = None
    channels: Any = None
    n_channels: int | None = None
    clusters: list[list[int]] | None = None
    temperature: float = 1.6

    def response_reducer(self) -> ResponseReducer:
        if isinstance(self.reducer, Mapping):
            return SliceMeanReducer(axis=0, **self.reducer["slice_mean"])
        return MeanReducer()

    def window(self, frames: int) -> tuple[int, int]:
        """``(start, length)`` of the response frames the objective averages."""
        if isinstance(self.reducer, Mapping):
            return int(self.reducer["slice_mean"]["start"]), int(self.reducer["slice_mean"]["length"])
        return 0, frames


class _VideoKind(ObjectiveKind):
    kwargs_schema = {"type": "object", "additionalProperties": False, "properties": {"reducer": _REDUCER_SCHEMA}}

    def options(self, kwargs: Mapping[str, Any], key: str) -> VideoOptions:
        return VideoOptions(**kwargs)


class IncreaseKind(_VideoKind):
    name = "increase"
    description = "openretina's IncreaseObjective: a unit's (or neuron group's) response reduced over time"
    objective_class = IncreaseObjective
    kwargs_schema = {"type": "object", "additionalProperties": False, "properties": {
        "reducer": _REDUCER_SCHEMA,
        "neurons": {"type": "object", "description": "output unit → the neuron group it stands for",
                    "additionalProperties": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}},
    }}

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        groups = items.options.neurons or {}
        targets = [groups.get(str(u), u) for u in items.units]
        return self.objective_class(model, targets, data_key=data_key, response_reducer=items.options.response_reducer())


class DecreaseKind(IncreaseKind):
    name = "decrease"
    description = "most depressing inputs: the negative of increase"
    objective_class = DecreaseObjective


class InnerKind(_VideoKind):
    name = "inner"
    description = "a channel (the item's output_unit) of an inner layer at its spatial centre"
    kwargs_schema = {"type": "object", "additionalProperties": False, "required": ["layer"], "properties": {
        "reducer": _REDUCER_SCHEMA, "layer": {"type": "string", "description": "a module name of the model"},
        "channels": {
            "description": "the channels to sweep, one item each: 'all' (with n_channels) or a list; instead of neurons",
            "oneOf": [{"const": "all"}, {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 0}}],
        },
        "n_channels": {"type": "integer", "minimum": 1, "description": "the layer's number of channels, for channels: all"},
    }}

    def table_rows(self, spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
        """With ``kwargs.channels`` one item per channel (``neuron_id`` = ``output_unit`` = the channel):
        ``all`` sweeps ``range(n_channels)`` (items are planned before any model is loaded, so the
        layer's width is declared; the objective checks it against the layer). Else ``neurons``."""
        kwargs = spec.get("kwargs") or {}
        channels = kwargs.get("channels")
        if channels is None:
            if "n_channels" in kwargs:
                raise MEIConfigError(f"{key}.kwargs.n_channels: only used with kwargs.channels: all")
            return super().table_rows(spec, outputs, base, key)
        if "neurons" in spec:
            raise MEIConfigError(f"{key}.neurons: give either neurons or kwargs.channels (the channels of layer {kwargs['layer']!r}), not both")
        if channels == "all":
            if "n_channels" not in kwargs:
                raise MEIConfigError(f"{key}.kwargs.n_channels: required with channels: all (the number of channels of layer {kwargs['layer']!r})")
            channels = list(range(int(kwargs["n_channels"])))
        elif "n_channels" in kwargs and max(channels) >= kwargs["n_channels"]:
            raise MEIConfigError(f"{key}.kwargs.channels: channel {max(channels)} out of range for n_channels = {kwargs['n_channels']}")
        shared = canonical_json(kwargs)
        return [{"neuron_id": int(c), "output_unit": int(c), "data_key": spec.get("data_key"), "kind": self.name, "kwargs": shared}
                for c in channels]

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        options = items.options
        width = options.n_channels if options.channels == "all" else None
        return InnerNeuronObjective(model, options.layer, items.units, data_key=data_key,
                                    response_reducer=options.response_reducer(), layer_channels=width)


class ContrastiveKind(_VideoKind):
    name = "contrastive"
    description = "most discriminative stimuli: the item's output_unit picks its on-cluster among clusters"
    kwargs_schema = {"type": "object", "additionalProperties": False, "required": ["clusters"], "properties": {
        "reducer": _REDUCER_SCHEMA,
        "clusters": {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}},
        "temperature": {"type": "number", "exclusiveMinimum": 0},
    }}

    def table_rows(self, spec: Mapping[str, Any], outputs: int, base: Path, key: str) -> list[dict[str, Any]]:
        rows = super().table_rows(spec, outputs, base, key)
        n_clusters = len(spec["kwargs"]["clusters"])
        for row in rows:
            if row["output_unit"] >= n_clusters:
                raise MEIConfigError(f"{key}.neurons: item {row['neuron_id']} picks cluster {row['output_unit']} but kwargs.clusters has {n_clusters}")
        return rows

    def objective(self, model: nn.Module, items: Items, data_key: str | None) -> Objective:
        clusters = items.options.clusters
        return ContrastiveNeuronObjective(model, [clusters[u] for u in items.units], clusters, temperature=items.options.temperature,
                                          data_key=data_key, response_reducer=items.options.response_reducer())
