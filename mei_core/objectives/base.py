"""What is optimised: ``objective(x, items) -> B`` values, one per row of ``x``.

``items`` holds the item index of every row of ``x`` (``B``; an item has ``n_meis`` rows, so an index
may repeat). Objectives keep per-item tables (a unit, a cluster, targets per item) and look them up
by item, so a batch may mix targets freely and only :mod:`mei_core.items` knows how rows map to items.

Every keyword a model call receives (a row's ``data_key``, a method's ``model_forward_kwargs``, e.g.
sinzlab configs' ``{data_key: ...}``) comes through one door: :func:`row_forward_kwargs` for the row's
key, :func:`with_model_forward_kwargs` for the method's, merged by :func:`merged_forward_kwargs`.
Optimisation (``mei_core.methods``) and held-out scoring (``pipeline/generate``) both use it, so the
held-out members see the very call the members saw.

Objectives add, subtract, multiply and scale as lucent's do (``a + 0.5 * b``, ``a * b``, ``-a``):
:class:`WeightedSum` and :class:`Product`, per row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import contextlib
import copy
import numbers

import torch
from torch import Tensor, nn

from ..errors import MEIConfigError
from ..models.ensemble import BatchedConstrainedOutputModel


class Objective(ABC):
    @abstractmethod
    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        """One value per row of ``x`` (``B``); ``items``: the item of every row (``B``)."""

    def to(self, device: torch.device | str) -> "Objective":
        return self

    # lucent's objective algebra (WeightedSum, Product below): per row, so batches stay item-wise
    def __add__(self, other: Any) -> "Objective":
        return plus(self, other) if operand(other) else NotImplemented

    def __radd__(self, other: Any) -> "Objective":
        return plus(other, self) if operand(other) else NotImplemented

    def __sub__(self, other: Any) -> "Objective":
        return plus(self, times(-1.0, other)) if operand(other) else NotImplemented

    def __rsub__(self, other: Any) -> "Objective":
        return plus(other, times(-1.0, self)) if operand(other) else NotImplemented

    def __neg__(self) -> "Objective":
        return times(-1.0, self)

    def __mul__(self, other: Any) -> "Objective":
        return times(self, other) if operand(other) else NotImplemented

    def __rmul__(self, other: Any) -> "Objective":
        return times(other, self) if operand(other) else NotImplemented

    def __truediv__(self, other: Any) -> "Objective":
        return times(self, 1.0 / float(other)) if is_number(other) else NotImplemented

    def with_forward_kwargs(self, forward_kwargs: Mapping[str, Any], key: str = "model_forward_kwargs") -> "Objective":
        """This objective with ``forward_kwargs`` passed to every model call (the method option
        ``model_forward_kwargs``). Objectives that call a model with keywords override it; the others
        accept only an empty mapping."""
        if forward_kwargs:
            raise MEIConfigError(f"{key}: {type(self).__name__} does not pass keyword arguments to its model")
        return self

    def per_item(self, table: Tensor, items: Tensor, like: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Rows of a per-item ``table`` (first dim = items) for the rows being evaluated; on the
        device of ``like`` (e.g. the model's output) and in ``dtype`` when given.

        The engine keeps the same ``items`` tensor while the batch keeps its rows, so the lookup (and
        any move or cast) is done once per batch composition, not once per step."""
        cache = self.__dict__.setdefault("_per_item_cache", {})
        device = None if like is None else like.device
        key = (id(table), device, dtype)
        hit = cache.get(key)
        if hit is not None and hit[0] is items and hit[1] is table:
            return hit[2]
        selected = table[items.to(table.device)]
        if device is not None or dtype is not None:
            selected = selected.to(device=device, dtype=dtype)
        cache[key] = (items, table, selected)
        return selected


def row_forward_kwargs(data_key: str | None) -> dict[str, Any]:
    """The keywords of a row's model call: ``data_key=`` when the row has one (none otherwise, so
    that a model without a ``data_key`` argument can be called)."""
    return {} if data_key is None else {"data_key": data_key}


def merged_forward_kwargs(current: Mapping[str, Any], extra: Mapping[str, Any], key: str = "model_forward_kwargs") -> dict[str, Any]:
    """An objective's model keywords with a method's added; a keyword both set to different values
    (e.g. a row's ``data_key`` and another in ``model_forward_kwargs``) is an error naming ``key``."""
    if not isinstance(extra, Mapping) or not all(isinstance(name, str) for name in extra):
        raise MEIConfigError(f"{key}: must be a mapping of keyword names to values, got {extra!r}")
    clashes = sorted(name for name in extra if name in current and current[name] != extra[name])
    if clashes:
        raise MEIConfigError(f"{key}: {', '.join(f'{n}={extra[n]!r}' for n in clashes)} contradicts the objective's own "
                             f"{', '.join(f'{n}={current[n]!r}' for n in clashes)} (set it in one place)")
    return {**current, **extra}


def with_model_forward_kwargs(objective: Any, method_config: Mapping[str, Any], key: str = "config") -> "Objective":
    """The objective (or callable model) with the method config's ``model_forward_kwargs`` passed to
    every model call: the one door, used by the methods and by held-out scoring."""
    forward_kwargs = method_config.get("model_forward_kwargs") or {}
    return as_objective(objective).with_forward_kwargs(forward_kwargs, f"{key}.model_forward_kwargs")


class CallsModel:
    """Mixin of objectives that call their model with ``self.forward_kwargs`` (``model(x, **forward_kwargs)``)."""

    forward_kwargs: dict[str, Any]

    def with_forward_kwargs(self, forward_kwargs: Mapping[str, Any], key: str = "model_forward_kwargs") -> "Objective":
        if not forward_kwargs:
            return self
        changed = copy.copy(self)
        changed.forward_kwargs = merged_forward_kwargs(self.forward_kwargs, forward_kwargs, key)
        changed.__dict__.pop("_per_item_cache", None)
        return changed


def reduce_to_rows(output: Tensor) -> Tensor:
    """Average everything but the batch dimension (e.g. a unit list, or time for video models)."""
    return output if output.dim() == 1 else output.flatten(1).mean(1)


def move_model(model: Any, device: torch.device | str) -> None:
    if isinstance(model, nn.Module):
        model.to(device)


class ModelObjective(CallsModel, Objective):
    """A sinzlab-style model (e.g. ``ConstrainedOutputModel``) whose output is the objective itself;
    the same for every item."""

    def __init__(self, model: Callable[[Tensor], Tensor], forward_kwargs: Mapping[str, Any] | None = None):
        self.model = model
        self.forward_kwargs = dict(forward_kwargs or {})

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        return reduce_to_rows(self.model(x, **self.forward_kwargs))

    def to(self, device):
        move_model(self.model, device)
        return self


class UnitObjective(Objective):
    """Item ``k`` maximises unit ``units[k]`` of the model output ``B×N`` (``B×T×N`` outputs are
    reduced over time by ``target_fn`` or averaged)."""

    def __init__(
        self,
        model: nn.Module,
        units: Sequence[int] | Tensor,
        target_fn: Callable[[Tensor], Tensor] | None = None,
        forward_kwargs: dict[str, Any] | None = None,
    ):
        self.selector = BatchedConstrainedOutputModel(model, units, target_fn, forward_kwargs)
        # the selector's model and units buffer by plain references: each read through nn.Module's
        # __getattr__ costs ~2 µs, 1 % of a tiny model's step (`to` renews the buffer's: it replaces it)
        self._model, self._units = model, self.selector.units

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        # the selector's forward written out: its Module.__call__ and attribute reads cost ~5 µs a step
        selector = self.selector
        return reduce_to_rows(selector.select(self._model(x, **selector.forward_kwargs), self.per_item(self._units, items)))

    def with_forward_kwargs(self, forward_kwargs, key="model_forward_kwargs"):
        if not forward_kwargs:
            return self
        selector = self.selector
        return UnitObjective(selector.model, selector.units, selector.target_fn, merged_forward_kwargs(selector.forward_kwargs, forward_kwargs, key))

    def to(self, device):
        self.selector.to(device)
        self._units = self.selector.units
        self.__dict__.pop("_per_item_cache", None)
        return self


class PerItemObjective(Objective):
    """One callable per item (custom objectives): each row goes through its item's callable. General,
    but a Python loop over rows: kinds that can be vectorised have their own objective."""

    def __init__(self, objectives: Sequence[Callable[[Tensor], Tensor]]):
        self.objectives = list(objectives)

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        return torch.cat([reduce_to_rows(self.objectives[k](x[i : i + 1])).reshape(1) for i, k in enumerate(items.tolist())])

    def to(self, device):
        for objective in self.objectives:
            move_model(objective, device)
        return self


class ByDataKey(Objective):
    """Items of several recording sessions in one batch: every row is evaluated by the objective of
    its item's ``data_key`` (one forward per key present in the batch, rows of one key together).

    ``objectives``: key → an objective over all items that calls the model with that key;
    ``item_keys``: the key of every item."""

    def __init__(self, objectives: Mapping[Hashable, Objective], item_keys: Sequence[Hashable]):
        self.objectives = dict(objectives)
        self.keys = list(self.objectives)
        missing = sorted({str(k) for k in item_keys} - {str(k) for k in self.keys})
        if missing:
            raise ValueError(f"ByDataKey: no objective for data key(s) {missing}")
        position = {key: i for i, key in enumerate(self.keys)}
        self.item_key = torch.tensor([position[k] for k in item_keys], dtype=torch.long)
        self._groups: tuple[Tensor, list[tuple[Hashable, Tensor]]] | None = None

    def _rows_by_key(self, items: Tensor) -> list[tuple[Hashable, Tensor]]:
        # computed once per batch composition (the engine reuses ``items`` until an item stops)
        if self._groups is None or self._groups[0] is not items:
            keys = self.item_key.to(items.device)[items]
            groups = [(key, (keys == i).nonzero().flatten()) for i, key in enumerate(self.keys)]
            self._groups = (items, [(key, rows) for key, rows in groups if len(rows)])
        return self._groups[1]

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        groups = self._rows_by_key(items)
        if len(groups) == 1:
            return self.objectives[groups[0][0]](x, items)
        values = x.new_zeros(len(x))
        for key, rows in groups:
            values = values.index_copy(0, rows, self.objectives[key](x[rows], items[rows]))
        return values

    @property
    def last_terms(self) -> dict[str, Tensor]:
        return {}

    def with_forward_kwargs(self, forward_kwargs, key="model_forward_kwargs"):
        if not forward_kwargs:
            return self
        return ByDataKey({k: o.with_forward_kwargs(forward_kwargs, key) for k, o in self.objectives.items()},
                         [self.keys[i] for i in self.item_key.tolist()])

    def to(self, device):
        for objective in self.objectives.values():
            objective.to(device)
        self.item_key = self.item_key.to(device)
        self._groups = None
        return self


def as_objective(model_or_objective: Any) -> Objective:
    if isinstance(model_or_objective, Objective):
        return model_or_objective
    if callable(model_or_objective):
        return ModelObjective(model_or_objective)
    raise TypeError(f"expected an Objective or a callable model, got {type(model_or_objective).__name__}")


# ------------------------------------------------------------------------------- objective algebra
# lucent's objective algebra: weighted sums, products, negation and scalar multiples of objectives.
# ``a + 0.5 * b``, ``a * b``, ``-a``, ``a - b``, ``a / 2``, ``2 + a`` and ``sum([a, b])`` work on every
# Objective and stay per row: row b's value combines the terms' values of row b only, so a batch
# mixing items equals each item alone. Sums flatten (``(a + b) + c`` is one sum of three terms).
# lucent has sums and scalar multiples; products of two objectives are lucid's (lucent refuses them).
# The terms of one sum or product that read layers of one model share its forward pass
# (objectives.layers.LayerRecorder.shared).

class Combination(Objective):
    """Objectives built from ``terms``; calls and moves pass through to them."""

    terms: list[Objective]

    def evaluate(self, x: Tensor, items: Tensor) -> list[Tensor]:
        recorders = self.__dict__.get("_recorders")
        if recorders is None:  # the terms are fixed: their recorders are found once
            recorders = self._recorders = list({id(r): r for r in _recorders(self)}.values())
        with contextlib.ExitStack() as stack:
            for recorder in recorders:
                stack.enter_context(recorder.shared())
            return [term(x, items) for term in self.terms]

    def with_terms(self, terms: Sequence[Objective]) -> "Combination":
        raise NotImplementedError

    def with_forward_kwargs(self, forward_kwargs: Mapping[str, Any], key: str = "model_forward_kwargs") -> Objective:
        if not forward_kwargs:
            return self
        return self.with_terms([term.with_forward_kwargs(forward_kwargs, key) for term in self.terms])

    def to(self, device):
        for term in self.terms:
            term.to(device)
        return self

    @property
    def last_terms(self) -> dict[str, Tensor]:
        """The terms' named parts of their last evaluation (e.g. a target loss), for trackers."""
        merged: dict[str, Tensor] = {}
        for term in self.terms:
            merged.update(getattr(term, "last_terms", {}))
        return merged


class WeightedSum(Combination):
    """``constant + Σ_i weights[i]·terms[i](x, items)``."""

    def __init__(self, terms: Sequence[Objective], weights: Sequence[float] | None = None, constant: float = 0.0):
        self.terms = list(terms)
        self.weights = [1.0] * len(self.terms) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.terms):
            raise ValueError(f"{len(self.weights)} weights for {len(self.terms)} terms")
        self.constant = float(constant)

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        total = None
        for weight, value in zip(self.weights, self.evaluate(x, items)):
            part = value if weight == 1.0 else weight * value
            total = part if total is None else total + part
        if total is None:
            return x.new_full((len(x),), self.constant)
        return total + self.constant if self.constant else total

    def with_terms(self, terms):
        return WeightedSum(terms, self.weights, self.constant)

    def __repr__(self) -> str:
        parts = [f"{w:g}·{t!r}" for w, t in zip(self.weights, self.terms)] + ([f"{self.constant:g}"] if self.constant else [])
        return "(" + " + ".join(parts) + ")"


class Product(Combination):
    """``Π_i terms[i](x, items)``, per row."""

    def __init__(self, terms: Sequence[Objective]):
        self.terms = list(terms)
        if not self.terms:
            raise ValueError("a product needs at least one term")

    def __call__(self, x: Tensor, items: Tensor) -> Tensor:
        values = self.evaluate(x, items)
        total = values[0]
        for value in values[1:]:
            total = total * value
        return total

    def with_terms(self, terms):
        return Product(terms)

    def __repr__(self) -> str:
        return "(" + " × ".join(repr(t) for t in self.terms) + ")"


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_sum(value: Objective | float) -> tuple[list[Objective], list[float], float]:
    """``(terms, weights, constant)`` of a sum, an objective (one term) or a number (a constant)."""
    if is_number(value):
        return [], [], float(value)
    if isinstance(value, WeightedSum):
        return list(value.terms), list(value.weights), value.constant
    return [value], [1.0], 0.0


def plus(a: Objective | float, b: Objective | float) -> WeightedSum:
    """``a + b`` (a number adds a constant, as lucent's ``Objective + number``)."""
    terms_a, weights_a, constant_a = _as_sum(a)
    terms_b, weights_b, constant_b = _as_sum(b)
    return WeightedSum(terms_a + terms_b, weights_a + weights_b, constant_a + constant_b)


def times(a: Objective | float, b: Objective | float) -> Objective:
    """``a · b``: a number scales every weight of a sum; two objectives make a product."""
    if is_number(a) or is_number(b):
        scale, objective = (float(a), b) if is_number(a) else (float(b), a)
        terms, weights, constant = _as_sum(objective)
        return WeightedSum(terms, [scale * w for w in weights], scale * constant)
    factors = [*(a.terms if isinstance(a, Product) else [a]), *(b.terms if isinstance(b, Product) else [b])]
    return Product(factors)


def operand(value: Any) -> bool:
    """Whether ``value`` can take part in objective arithmetic (else the operator returns NotImplemented)."""
    return isinstance(value, Objective) or is_number(value)


def _recorders(objective: Objective) -> Iterator[Any]:
    """The layer recorders (``objectives.layers.LayerRecorder``) the terms of ``objective`` read."""
    recorder = getattr(objective, "recorder", None)
    if recorder is not None:
        yield recorder
    for term in getattr(objective, "terms", ()):
        yield from _recorders(term)
