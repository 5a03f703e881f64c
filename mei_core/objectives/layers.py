"""Layer objectives: lucent's ``channel``, ``neuron``, ``direction`` and ``direction_neuron`` on any
module of the ensemble's members, every item with its own layer, channel, position and direction.

A layer is named as in the member's ``named_modules()`` (``""``: the member's output). A forward
hook catches the layer's output in every member of an :class:`~mei_core.models.ensemble.EnsembleModel`
(a plain model counts as one member); a row's value is the mean over members of the value on each
member, as the unit objective reads the mean of the members' outputs. The layer's output is
``B×C×H×W`` (a conv map) or ``B×N`` (a flat layer: the channel is the index). The layer terms of
one sum or product share one forward of the model (:meth:`LayerRecorder.shared`; measured in
tests/test_objective_algebra.py: one call per member).

Values are lucent's losses negated (lucent minimises; we maximise), per row instead of averaged over
the batch (lucent's ``batch=k`` picks row ``k``; here every row has its item's target):

- ``channel``: ``mean_{h,w} a[b, c]``;
- ``neuron``: ``a[b, c, y, x]``, by default the centre ``y = H // 2``, ``x = W // 2`` (lucent's
  default; for even sizes the lower right of the central 2×2; lucent takes both defaults from
  ``shape[2]``/``shape[3]`` the other way round, which only differs on non-square maps);
- ``direction``: ``mean_{h,w} cos(a[b, :, h, w], d)`` (lucent's ``CosineSimilarity(dim=1)``), or
  with ``similarity="dot"`` lucid's dot product ``mean_{h,w} Σ_c a[b, c, h, w]·d_c``;
- ``direction_neuron``: the same at one position (default the centre).

Channel, position and direction length are checked against the layer's shape once, at the first
call (the shapes are only known after a forward pass), with errors naming the key.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MEIConfigError
from ..models.ensemble import EnsembleModel
from .base import CallsModel, Objective, move_model, row_forward_kwargs

__all__ = [
    "LayerRecorder",
    "LayerObjective",
    "ChannelObjective",
    "NeuronObjective",
    "DirectionObjective",
    "DirectionNeuronObjective",
    "recorder_of",
]

SIMILARITIES = ("cosine", "dot")


def members_of(model: nn.Module) -> list[nn.Module]:
    """The members whose layers are read: an ensemble's, or the model itself."""
    return list(model.members) if isinstance(model, EnsembleModel) else [model]


class LayerRecorder:
    """Catches named layers of every member during one ``model(x, **kwargs)`` call.

    Hooks are registered for each call and removed afterwards, so the model carries none between
    calls. Inside :meth:`shared` a second request for the same ``x`` and keywords reuses the first
    forward (the terms of a sum read one forward pass)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.members = members_of(model)
        self.modules = [dict(member.named_modules()) for member in self.members]
        self.layers: dict[str, list[nn.Module]] = {}
        self._depth = 0
        self._memo: tuple[Tensor, int, dict[str, Any], dict[str, Tensor]] | None = None

    def names(self) -> list[str]:
        """The layer names every member has (``""``: the member's output)."""
        common = [name for name in self.modules[0] if all(name in modules for modules in self.modules[1:])]
        return common

    def require(self, name: str, key: str) -> None:
        """Record layer ``name`` from now on; an unknown name is an error naming ``key`` and the layers."""
        if name in self.layers:
            return
        if not isinstance(name, str) or any(name not in modules for modules in self.modules):
            known = ", ".join(repr(n) for n in self.names())
            raise MEIConfigError(f"{key}: no layer {name!r} in the model's members; layers (named_modules): {known}")
        self.layers[name] = [modules[name] for modules in self.modules]

    def run(self, x: Tensor, forward_kwargs: Mapping[str, Any]) -> dict[str, Tensor]:
        """Every recorded layer's output, members stacked: ``M×B×…``."""
        memo = self._memo
        if memo is not None and memo[0] is x and memo[1] == x._version and memo[2] == forward_kwargs:
            return memo[3]
        caught: dict[str, list[Any]] = {name: [None] * len(self.members) for name in self.layers}
        handles = []
        try:
            for name, modules in self.layers.items():
                for m, module in enumerate(modules):
                    handles.append(module.register_forward_hook(_catch(caught[name], m)))
            self.model(x, **forward_kwargs)
        finally:
            for handle in handles:
                handle.remove()
        outputs = {}
        for name, per_member in caught.items():
            if any(output is None for output in per_member):
                raise RuntimeError(f"layer {name!r} was not called in the forward pass of every member")
            if not all(isinstance(output, Tensor) for output in per_member):
                raise ValueError(f"layer {name!r} must output a tensor, got {type(per_member[0]).__name__}")
            outputs[name] = torch.stack(per_member)
        if self._depth:
            self._memo = (x, x._version, dict(forward_kwargs), outputs)
        return outputs

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Within this block, calls with the same ``x`` (unchanged) and keywords share one forward."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                self._memo = None  # frees the activations and their graph


def _catch(slots: list[Any], member: int):
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        slots[member] = output  # a module called twice: its last output, as lucent's hooks keep
    return hook


_RECORDERS: "weakref.WeakKeyDictionary[nn.Module, LayerRecorder]" = weakref.WeakKeyDictionary()


def recorder_of(model: nn.Module) -> LayerRecorder:
    """The one recorder of ``model``: every layer objective on it shares its forward passes."""
    recorder = _RECORDERS.get(model)
    if recorder is None:
        recorder = _RECORDERS[model] = LayerRecorder(model)
    return recorder


def _per_item(value: Any, n_items: int | None, key: str) -> list[Any] | None:
    """``value`` per item: a list stays (its length must match), a scalar is repeated."""
    if isinstance(value, (list, tuple)):
        if n_items is not None and len(value) != n_items:
            raise MEIConfigError(f"{key}: {len(value)} values for {n_items} items")
        return list(value)
    return None if n_items is None else [value] * n_items


class LayerObjective(CallsModel, Objective):
    """One layer per item (``layer``: a name, or one per item); subclasses compute the per-row values
    of one layer's output ``M×B×…`` (members × rows) in :meth:`layer_values` (``M×B``).

    Items are grouped by layer once per batch composition; a loop runs over the distinct layers, not
    over rows. ``keys`` name the arguments in errors (the config keys they came from)."""

    def __init__(self, model: nn.Module, layer: str | Sequence[str], n_items: int | None = None,
                 forward_kwargs: Mapping[str, Any] | None = None, keys: Mapping[str, str] | None = None):
        self.model = model
        self.forward_kwargs = dict(forward_kwargs or {})
        self.keys = {name: name for name in ("layer", "channel", "x", "y", "direction", "similarity")} | dict(keys or {})
        layers = _per_item(layer, n_items, self.keys["layer"])
        #: every argument a single value: one table row, read by every item
        self.same_for_all = layers is None
        if layers is None:
            layers = [layer]
        self.n_items = len(layers)
        self.recorder = recorder_of(model)
        for name in dict.fromkeys(layers):
            self.recorder.require(name, self.keys["layer"])
        self.layer_names = list(dict.fromkeys(layers))
        self.item_layer = torch.tensor([self.layer_names.index(name) for name in layers], dtype=torch.long)
        self._items_of_layer = [[k for k, name in enumerate(layers) if name == layer_name] for layer_name in self.layer_names]
        self._checked: set[str] = set()
        self._groups: tuple[Tensor, list[tuple[int, Tensor | None, Tensor]]] | None = None

    def items_per(self, values: Sequence[Any]) -> Tensor:
        """A per-item integer table (``n_items``)."""
        return torch.tensor([int(v) for v in values], dtype=torch.long)

    def _rows_by_layer(self, items: Tensor) -> list[tuple[int, Tensor | None, Tensor]]:
        """``(layer index, rows, their rows in the per-item tables)`` per layer present; rows ``None``:
        all of them. Once per batch composition (the engine keeps ``items`` while the batch keeps
        its rows), so that the per-item lookups of a layer's rows are cached too."""
        if self._groups is not None and self._groups[0] is items:
            return self._groups[1]
        if len(self.layer_names) == 1:
            groups: list[tuple[int, Tensor | None, Tensor]] = [(0, None, torch.zeros_like(items) if self.same_for_all else items)]
        else:
            layer_of_row = self.item_layer.to(items.device)[items]
            groups = []
            for i in range(len(self.layer_names)):
                rows = (layer_of_row == i).nonzero().flatten()
                if len(rows):
                    groups.append((i, rows, items[rows]))
        self._groups = (items, groups)
        return groups

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        outputs = self.recorder.run(x, self.forward_kwargs)
        groups = self._rows_by_layer(items)
        if len(groups) == 1 and groups[0][1] is None:
            return self._values(0, outputs[self.layer_names[0]], groups[0][2])
        values = None
        for index, rows, row_items in groups:  # a loop over the distinct layers, not the rows
            part = self._values(index, outputs[self.layer_names[index]][:, rows], row_items)
            values = part.new_zeros(len(items)) if values is None else values
            values = values.index_copy(0, rows, part)
        return x.new_zeros(0) if values is None else values

    def _values(self, index: int, output: Tensor, items: Tensor) -> Tensor:
        name = self.layer_names[index]
        if name not in self._checked:  # once per layer: host values against the layer's shape
            self.check_layer(name, tuple(output.shape[1:]), self._items_of_layer[index])
            self._checked.add(name)
        return self.layer_values(output, items, index).mean(0)

    def check_layer(self, name: str, shape: tuple[int, ...], items: list[int]) -> None:
        """Errors for the items of layer ``name`` (output shape ``B×…``) that do not fit it."""
        if len(shape) not in (2, 4):
            raise MEIConfigError(f"{self.keys['layer']}: layer {name!r} outputs {_shape(shape)}; layer objectives read B×C×H×W or B×N outputs")

    def layer_values(self, output: Tensor, items: Tensor, layer: int) -> Tensor:
        """``M×B`` values of rows with ``items`` from the output ``M×B×…`` of layer ``layer_names[layer]``."""
        raise NotImplementedError

    def to(self, device):
        move_model(self.model, device)
        self.__dict__.pop("_per_item_cache", None)
        self._groups = None
        return self


def _shape(shape: tuple[int, ...]) -> str:
    return "B×" + "×".join(str(s) for s in shape[1:])


def _check_range(values: Sequence[int], size: int, key: str, what: str, name: str, shape: tuple[int, ...]) -> None:
    bad = [v for v in values if not 0 <= v < size]
    if bad:
        raise MEIConfigError(f"{key}: {what} {bad[0]} out of range for layer {name!r} ({_shape(shape)}: {what}s 0…{size - 1})")


class ChannelObjective(LayerObjective):
    """lucent's ``channel``: the mean of channel ``channel[k]`` of item ``k``'s layer over positions."""

    def __init__(self, model: nn.Module, layer: str | Sequence[str], channel: int | Sequence[int], *,
                 n_items: int | None = None, forward_kwargs: Mapping[str, Any] | None = None, keys: Mapping[str, str] | None = None):
        n_items = _count(n_items, layer, channel)
        super().__init__(model, layer, n_items, forward_kwargs, keys)
        self.channels = self.items_per(_per_item(channel, self.n_items, self.keys["channel"]))

    def check_layer(self, name, shape, items):
        super().check_layer(name, shape, items)
        _check_range([int(self.channels[k]) for k in items], shape[1], self.keys["channel"], "channel", name, shape)

    def layer_values(self, output, items, layer):
        rows = torch.arange(output.shape[1], device=output.device)
        selected = output[:, rows, self.per_item(self.channels, items, output)]  # M×B(×H×W)
        return selected if selected.dim() == 2 else selected.flatten(2).mean(2)


def _count(n_items: int | None, *values: Any) -> int | None:
    """The number of items: given, or the length of the first per-item list."""
    if n_items is not None:
        return n_items
    return next((len(v) for v in values if isinstance(v, (list, tuple))), None)


_CENTRE = -1  # a position left out: the centre of the map, resolved from the layer's shape


class _Positioned(LayerObjective):
    """Objectives read at a position ``(x, y)`` per item (default the centre of the map)."""

    def positions(self, x: int | None | Sequence[int | None], y: int | None | Sequence[int | None]) -> None:
        xs = _per_item(x, self.n_items, self.keys["x"])
        ys = _per_item(y, self.n_items, self.keys["y"])
        self.given_x = [v is not None for v in xs]
        self.given_y = [v is not None for v in ys]
        self.xs = self.items_per([_CENTRE if v is None else v for v in xs])
        self.ys = self.items_per([_CENTRE if v is None else v for v in ys])

    def check_layer(self, name, shape, items):
        super().check_layer(name, shape, items)
        if len(shape) == 2:
            given = [k for k in items if self.given_x[k] or self.given_y[k]]
            if given:
                which = "x" if self.given_x[given[0]] else "y"
                raise MEIConfigError(f"{self.keys[which]}: layer {name!r} is flat ({_shape(shape)}): it has no positions (leave x and y out)")
            return
        height, width = shape[2], shape[3]
        _check_range([int(self.xs[k]) for k in items if self.given_x[k]], width, self.keys["x"], "x", name, shape)
        _check_range([int(self.ys[k]) for k in items if self.given_y[k]], height, self.keys["y"], "y", name, shape)

    def at_position(self, output: Tensor, items: Tensor) -> Tensor:
        """``M×B×C`` (a flat layer as it is): every row at its item's position."""
        if output.dim() == 3:
            return output
        height, width = output.shape[-2:]
        xs, ys = self.per_item(self.xs, items, output), self.per_item(self.ys, items, output)
        xs = torch.where(xs == _CENTRE, width // 2, xs)
        ys = torch.where(ys == _CENTRE, height // 2, ys)
        rows = torch.arange(output.shape[1], device=output.device)
        # indices split by a slice put their dimension first (B×M×C): back to M×B×C
        return output[:, rows, :, ys, xs].transpose(0, 1)


class NeuronObjective(_Positioned):
    """lucent's ``neuron``: channel ``channel[k]`` at ``(x[k], y[k])`` (default the centre); on a flat
    layer ``B×N`` the unit ``channel[k]``."""

    def __init__(self, model: nn.Module, layer: str | Sequence[str], channel: int | Sequence[int],
                 x: int | None | Sequence[int | None] = None, y: int | None | Sequence[int | None] = None, *,
                 n_items: int | None = None, forward_kwargs: Mapping[str, Any] | None = None, keys: Mapping[str, str] | None = None):
        n_items = _count(n_items, layer, channel, x, y)
        super().__init__(model, layer, n_items, forward_kwargs, keys)
        self.channels = self.items_per(_per_item(channel, self.n_items, self.keys["channel"]))
        self.positions(x, y)

    def check_layer(self, name, shape, items):
        super().check_layer(name, shape, items)
        _check_range([int(self.channels[k]) for k in items], shape[1], self.keys["channel"], "channel", name, shape)

    def layer_values(self, output, items, layer):
        at = self.at_position(output, items)  # M×B×C
        return at.gather(2, self.per_item(self.channels, items, output).view(1, -1, 1).expand(at.shape[0], -1, 1)).squeeze(2)


def _as_vectors(direction: Any) -> list[Any]:
    """A direction (``C``) or one per item (``items×C``) as nested lists (tensors and arrays too)."""
    if hasattr(direction, "tolist"):
        return direction.tolist()
    return [v.tolist() if hasattr(v, "tolist") else v for v in direction]


def _per_item_directions(direction: list[Any]) -> bool:
    return bool(direction) and isinstance(direction[0], (list, tuple))


class _Directed(_Positioned):
    """A direction in channel space per item (vectors of one layer have the layer's width)."""

    def directions(self, direction: Sequence[float] | Sequence[Sequence[float]] | Tensor, similarity: str) -> None:
        if similarity not in SIMILARITIES:
            raise MEIConfigError(f"{self.keys['similarity']}: {similarity!r} is not one of {', '.join(SIMILARITIES)}")
        self.similarity = similarity
        vectors = direction
        if not _per_item_directions(vectors):
            vectors = [vectors] * self.n_items  # one direction for every item
        elif len(vectors) != self.n_items:
            raise MEIConfigError(f"{self.keys['direction']}: {len(vectors)} directions for {self.n_items} items")
        #: per layer: the direction of every item (items of other layers: zeros), items × C
        self.vectors = []
        for items in self._items_of_layer:
            widths = sorted({len(vectors[k]) for k in items})
            if len(widths) != 1 or widths[0] == 0:
                raise MEIConfigError(f"{self.keys['direction']}: the directions on layer {self.layer_names[len(self.vectors)]!r} "
                                     f"have lengths {widths}; they need one length, the layer's channels")
            table = torch.zeros(self.n_items, widths[0])
            table[items] = torch.tensor([[float(v) for v in vectors[k]] for k in items])
            self.vectors.append(table)

    def check_layer(self, name, shape, items):
        super().check_layer(name, shape, items)
        width = self.vectors[self.layer_names.index(name)].shape[1]
        if width != shape[1]:
            raise MEIConfigError(f"{self.keys['direction']}: a direction of length {width} for layer {name!r} with {shape[1]} channels ({_shape(shape)})")

    def along(self, output: Tensor, items: Tensor, layer: int) -> Tensor:
        """``M×B×…`` similarity of every channel vector of ``output`` (``M×B×C×…``) to its row's direction."""
        direction = self.per_item(self.vectors[layer], items, output, output.dtype)  # B×C
        direction = direction.view(1, *direction.shape, *([1] * (output.dim() - 3)))
        if self.similarity == "cosine":
            return F.cosine_similarity(output, direction, dim=2)
        return (output * direction).sum(2)


class DirectionObjective(_Directed):
    """lucent's ``direction``: the mean over positions of the cosine similarity (or the dot product)
    between the channel vector and item ``k``'s direction."""

    def __init__(self, model: nn.Module, layer: str | Sequence[str], direction: Sequence[float] | Sequence[Sequence[float]] | Tensor,
                 similarity: str = "cosine", *, n_items: int | None = None, forward_kwargs: Mapping[str, Any] | None = None,
                 keys: Mapping[str, str] | None = None):
        direction = _as_vectors(direction)
        n_items = _count(n_items, layer, direction if _per_item_directions(direction) else None)
        super().__init__(model, layer, n_items, forward_kwargs, keys)
        self.positions(None, None)
        self.directions(direction, similarity)

    def layer_values(self, output, items, layer):
        similarity = self.along(output, items, layer)  # M×B(×H×W)
        return similarity if similarity.dim() == 2 else similarity.flatten(2).mean(2)


class DirectionNeuronObjective(_Directed):
    """lucent's ``direction_neuron``: the similarity at ``(x[k], y[k])`` (default the centre)."""

    def __init__(self, model: nn.Module, layer: str | Sequence[str], direction: Sequence[float] | Sequence[Sequence[float]] | Tensor,
                 x: int | None | Sequence[int | None] = None, y: int | None | Sequence[int | None] = None, similarity: str = "cosine", *,
                 n_items: int | None = None, forward_kwargs: Mapping[str, Any] | None = None, keys: Mapping[str, str] | None = None):
        direction = _as_vectors(direction)
        n_items = _count(n_items, layer, x, y, direction if _per_item_directions(direction) else None)
        super().__init__(model, layer, n_items, forward_kwargs, keys)
        self.positions(x, y)
        self.directions(direction, similarity)

    def layer_values(self, output, items, layer):
        return self.along(self.at_position(output, items).unsqueeze(-1), items, layer).squeeze(-1)
