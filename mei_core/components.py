"""The extension points of the optimisation loop: one abstract base class each.

Every component is a callable configured at construction. Inputs are batches of *rows*: images
``B×C×H×W`` or videos ``B×C×T×H×W``. Rows belong to *items* (one (unit, seed) optimisation each; an
item has ``n_meis`` rows when diverse MEIs are asked for). Components must treat every row on its own
(per-sample ops, no Python loop over rows) and draw randomness only through ``step.uniform``,
``step.normal`` or ``step.integers``: counter-based draws of each row's own stream, so a row's result does not depend on
which other rows share its batch, and no generator state has to be carried between steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .streams import RowStreams, stream_id


@dataclass
class Step:
    """What a component may know about the current step.

    ``rows``: indices (into the whole batch) of the rows being processed, in order.
    ``row_items``: item index of every row of the whole batch (length B).
    ``streams``: the random streams of every row of the whole batch (:class:`RowStreams`).
    ``items``: item index of every processed row (``row_items[rows]``), the index objectives use.
    """

    i_iter: int
    rows: Tensor
    row_items: Tensor
    streams: RowStreams | None = None
    items: Tensor | None = None

    def __post_init__(self) -> None:
        if self.items is None:
            self.items = self.row_items[self.rows] if len(self.rows) else self.rows

    @classmethod
    def of_seeds(cls, seeds: Sequence[int], row_items: Sequence[int] | Tensor | None = None, i_iter: int = 0) -> "Step":
        """A Step over a whole batch: one seed per item, ``row_items`` the item of every row
        (default: one row per item). For calling components directly (tests, notebooks)."""
        row_items = torch.arange(len(seeds)) if row_items is None else torch.as_tensor(row_items, dtype=torch.long)
        return cls(i_iter, torch.arange(len(row_items)), row_items, RowStreams(seeds, row_items))

    def uniform(self, stream: int, n: int) -> Tensor:
        """``rows × n`` floats in ``[0, 1)`` from each processed row's own stream ``stream``."""
        return self._streams().uniform(stream, n, self.i_iter, self.rows)

    def normal(self, stream: int, n: int) -> Tensor:
        """``rows × n`` standard normal floats from each processed row's own stream ``stream``."""
        return self._streams().normal(stream, n, self.i_iter, self.rows)

    def integers(self, stream: int, n: int, high: int | Sequence[int], low: int | Sequence[int] = 0) -> Tensor:
        """``rows × n`` integers in ``[low, low + high)`` (one value, or one per column) from each
        processed row's own stream ``stream``."""
        return self._streams().integers(stream, n, high, self.i_iter, self.rows, low)

    def _streams(self) -> RowStreams:
        if self.streams is None:
            raise RuntimeError("this Step carries no random streams (a random component was called at evaluation)")
        return self.streams

    def groups(self) -> Tensor:
        """Item index of each processed row (for components that couple rows of one item)."""
        return self.items


class Component(ABC):
    """Marker base: every built-in component derives from one of the ABCs below."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class InitialGuess(Component):
    """Creates the starting rows of one item from that item's generator."""

    @abstractmethod
    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Return a tensor of ``shape`` (``n×C×H×W`` or ``n×C×T×H×W``) on the CPU."""


class Transform(Component):
    """Maps the optimised input to what the model sees (differentiably)."""

    #: a random transform is skipped when the final score is evaluated
    random: bool = False
    #: the per-row stream a random transform draws from; ``Compose`` gives each member its own
    #: (``transform[i]``), so two random transforms of one method never share draws
    stream: int = stream_id("transform[0]")

    @abstractmethod
    def __call__(self, x: Tensor, step: Step) -> Tensor: ...

    def at_evaluation(self, x: Tensor) -> Tensor:
        """The deterministic counterpart used for the final score (random shifts/crops are centred)."""
        return x if self.random else self(x, _NO_STEP)


class Regularizer(Component):
    """A per-row penalty subtracted from the objective (so positive values discourage)."""

    @abstractmethod
    def __call__(self, x: Tensor, step: Step) -> Tensor:
        """Return one value per row (shape ``B``)."""


class Preconditioner(Component):
    """Rewrites the gradient before the optimiser step, per row."""

    @abstractmethod
    def __call__(self, grad: Tensor, step: Step) -> Tensor: ...


class Postprocessor(Component):
    """Projects the input after each optimiser step (outside autograd), per row."""

    @abstractmethod
    def __call__(self, x: Tensor, step: Step) -> Tensor: ...


class Background(Component):
    """What a transparency MEI (``AlphaBlend``) is blended onto: one background per processed row of a
    step, drawn for all rows at once from each row's own stream (so a row's background depends on its
    item's seed, its row within the item and the step, never on its batch)."""

    #: a random background is replaced by :meth:`at_evaluation` for the final score
    random: bool = True

    @abstractmethod
    def __call__(self, shape: tuple[int, ...], step: Step, stream: int) -> Tensor:
        """``rows × shape`` (``shape``: ``C×H×W`` or ``C×T×H×W``, a row without its batch dim): the
        backgrounds of ``step``'s processed rows, drawn with ``step.uniform`` / ``step.normal`` /
        ``step.integers`` from ``stream`` (the blending transform's), on the streams' device."""

    def at_evaluation(self, shape: tuple[int, ...]) -> Tensor:
        """The deterministic background the final score is computed on (default: zeros)."""
        return torch.zeros(shape)


class Stopper(Component):
    """Decides, per item, when its optimisation ends.

    ``__call__`` returns ``(stop, reason)``: ``stop`` a bool tensor with one entry per item (or a plain
    bool meaning all items), ``reason`` a string, a list of one string per item, or ``None``.
    Items already stopped are frozen by the engine; a stopper's decision for an item must depend only
    on that item's own history. Stoppers run every step (see ``earliest_stop``): keep ``stop`` and
    ``reason`` on the device (a :class:`Reasons`, not a list built with ``.tolist()``) so that deciding
    costs no host sync.
    """

    #: a stopper that knows it stops no item before step ``earliest_stop`` and keeps nothing between
    #: calls declares it (``NumIterations``): when no tracker or step callback reads the State, the
    #: engine then neither calls it nor builds a State before that step (on a tiny model the State
    #: and the call cost 3–5 % of a step). ``None``: it may stop at any step.
    earliest_stop: int | None = None

    @abstractmethod
    def __call__(self, state: "Any") -> tuple[Tensor | bool, Any]: ...


class Tracker(Component):
    """Records something every ``interval`` steps; copies to the host only on those steps.

    Trackers run once per step after the optimiser step, so the State they read is complete: the
    evaluated input, its gradient and preconditioned gradient, and the postprocessed next input."""

    def __init__(self, interval: int = 1):
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = interval
        self.steps: list[int] = []
        self.values: list[Tensor] = []

    def __call__(self, state: Any) -> None:
        if state.i_iter % self.interval == 0:
            self.steps.append(state.i_iter)
            self.values.append(self.read(state).detach().to("cpu", copy=True))

    @abstractmethod
    def read(self, state: Any) -> Tensor:
        """The per-row value to record (first dimension = rows of the whole batch)."""


class Reasons:
    """Why each item stops, kept on the device: ``codes`` (one per item) index ``names``.

    Reads like the list of names it stands for (``reasons[k]``, ``reasons == [...]``); reading it
    copies the codes to the host, which the engine does only when it checks for stopped items."""

    def __init__(self, codes: Tensor, names: Sequence[str]):
        self.codes = codes
        self.names = tuple(names)

    def tolist(self) -> list[str]:
        return [self.names[c] for c in self.codes.tolist()]

    def __getitem__(self, item: int) -> str:
        return self.names[int(self.codes[item])]

    def __iter__(self):
        return iter(self.tolist())

    def __len__(self) -> int:
        return len(self.codes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Reasons):
            other = other.tolist()
        return self.tolist() == list(other) if isinstance(other, (list, tuple)) else NotImplemented

    def __repr__(self) -> str:
        return f"Reasons({self.tolist()})"


_NO_STEP = Step(i_iter=0, rows=torch.zeros(0, dtype=torch.long), row_items=torch.zeros(0, dtype=torch.long))


class Parameterisation(Component):
    """The optimised variable is not the stimulus: decodes a batch of variables into stimuli.

    ``initial_shape(stimulus_shape)`` gives one row's variable shape for stimuli of ``stimulus_shape``
    (``C×H×W`` or ``C×T×H×W``) and is called once before any decoding (a parameterisation may remember
    the stimulus shape there). ``__call__`` maps ``B×variable`` to ``B×stimulus``, every row on its own
    and differentiably where possible (gradient-free methods accept any decoder)."""

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(stimulus_shape)

    @abstractmethod
    def __call__(self, variable: Tensor) -> Tensor: ...
