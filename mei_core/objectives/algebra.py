"""lucent's objective algebra: weighted sums, products, negation and scalar multiples of objectives.

``a + 0.5 * b``, ``a * b``, ``-a``, ``a - b``, ``a / 2``, ``2 + a`` and ``sum([a, b])`` work on every
:class:`~mei_core.objectives.base.Objective` (the operators live on the base class) and stay per row:
row ``b``'s value combines the terms' values of row ``b`` only, so a batch mixing items equals each
item alone. Sums flatten (``(a + b) + c`` is one sum of three terms). lucent has sums and scalar
multiples; products of two objectives are lucid's (lucent refuses them). The terms of one sum or
product that read layers of the same model share one forward pass (:meth:`LayerRecorder.shared`).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor

from .base import Objective

__all__ = ["WeightedSum", "Product", "plus", "times"]


class Combination(Objective):
    """Objectives built from ``terms``; calls and moves pass through to them."""

    terms: list[Objective]

    def evaluate(self, x: Tensor, items: Tensor) -> list[Tensor]:
        with shared_forwards(self):
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


@contextlib.contextmanager
def shared_forwards(objective: Objective) -> Iterator[None]:
    """Within this block, the layer terms of ``objective`` that read one model share its forward."""
    recorders = {id(r): r for r in _recorders(objective)}
    with contextlib.ExitStack() as stack:
        for recorder in recorders.values():
            stack.enter_context(recorder.shared())
        yield


def _recorders(objective: Objective) -> Iterator[Any]:
    recorder = getattr(objective, "recorder", None)
    if recorder is not None:
        yield recorder
    for term in getattr(objective, "terms", ()):
        yield from _recorders(term)
