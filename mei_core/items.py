"""How rows map to items: the one home of the batch layout, shared by the gradient engine
(:mod:`mei_core.engine`), CMA-ES (:mod:`mei_core.cmaes`) and held-out scoring
(:mod:`mei_core.pipeline.generate`).

An item (one objective target and one seed) owns ``n_meis`` consecutive rows: item ``k`` owns rows
``k·n_meis … (k+1)·n_meis − 1``. A batch over several seeds repeats a shard's items once per seed,
seed-major (:func:`seed_major`). Objectives receive the item of every row they evaluate and never
learn the layout; only this module knows it.

Per item, a CPU generator seeded by the item's seed draws the item's ``n_meis`` starts in one draw
(sinzlab's ``torch.manual_seed(seed)`` then the draw), so a start depends neither on the device nor
on the batch. Every later random draw of a row comes from its counter-based stream
(:class:`mei_core.streams.RowStreams`).

Rows are evaluated in chunks of at most ``max_batch`` rows, whole items only
(:meth:`ItemLayout.chunk_size`): an item's rows are never split over two model calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .components import InitialGuess
from .streams import RowStreams

__all__ = ["ItemLayout", "Chunk", "chunked", "score_chunks", "item_rows", "rows_per_chunk", "seed_major"]


def item_rows(start: int, stop: int, n_meis: int) -> slice:
    """The rows of items ``start``–``stop - 1``."""
    return slice(start * n_meis, stop * n_meis)


def seed_major(seeds: Sequence[int], n_items: int) -> list[int]:
    """The seed of every item of a batch that holds ``n_items`` items once per seed, seed-major:
    the items of seed ``seeds[k]`` are items ``k·n_items … (k+1)·n_items − 1``."""
    return [int(seed) for seed in seeds for _ in range(n_items)]


def rows_per_chunk(max_batch: int | None, n_rows: int, group: int = 1) -> int:
    """Rows per model call: at most ``max_batch`` (``None``: all ``n_rows``), a multiple of ``group``
    (rows that must be evaluated together, e.g. an item's ``n_meis`` rows), at least one group."""
    if max_batch is None:
        return max(n_rows, group)
    return max(group, int(max_batch) // group * group)


@dataclass(frozen=True)
class Chunk:
    """One model call's rows: ``positions`` in the rows being chunked, ``rows`` their indices (into
    the batch, what a ``Step`` names) and ``items`` their items (what objectives index by)."""

    positions: slice
    rows: Tensor
    items: Tensor


def chunked(rows: Tensor, row_items: Tensor, size: int) -> list[Chunk]:
    """``rows`` (indices into a batch whose row ``r`` belongs to item ``row_items[r]``) in chunks of
    ``size``. Callers keep the list while the rows stay the same: objectives cache their per-item
    lookups by the identity of ``items``."""
    return [Chunk(slice(start, start + len(part)), part, row_items[part])
            for start, part in zip(range(0, len(rows), size), rows.split(size))]


def score_chunks(objective: Callable[[Tensor, Tensor], Tensor], x: Tensor, chunks: Sequence[Chunk],
                 view: Callable[[Tensor, Chunk], Tensor] | None = None) -> Tensor:
    """The objective of every row of ``x`` (rows × C × …, in the order of the chunks' positions), one
    call per chunk, without autograd. ``view(x_chunk, chunk)``: what the objective sees of a chunk
    (e.g. a transform's evaluation view), applied per chunk so that only one chunk's view exists at
    a time. The objective carries its forward keywords (``Objective.with_forward_kwargs``)."""
    with torch.no_grad():
        parts = [objective(x[chunk.positions] if view is None else view(x[chunk.positions], chunk), chunk.items) for chunk in chunks]
    return torch.cat(parts) if parts else x.new_zeros(0)


class ItemLayout:
    """``n_items`` items of ``n_meis`` rows each on ``device``; ``seeds`` (one per item) where the
    rows are optimised (their starts and random streams), ``None`` where they are only scored."""

    def __init__(self, n_items: int, n_meis: int, device: torch.device | str = "cpu", seeds: Sequence[int] | None = None):
        if seeds is not None and len(seeds) != n_items:
            raise ValueError(f"{len(seeds)} seeds for {n_items} items")
        self.n_items, self.n_meis = int(n_items), int(n_meis)
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        self.n_rows = self.n_items * self.n_meis
        #: the item of every row (rows of an item consecutive)
        self.row_items = torch.arange(self.n_items, device=device).repeat_interleave(self.n_meis)

    @classmethod
    def of_seeds(cls, seeds: Sequence[int], n_meis: int, device: torch.device | str = "cpu") -> "ItemLayout":
        """One item per seed (an item's target is what the objective gives its index)."""
        return cls(len(seeds), n_meis, device, seeds)

    def _seeds(self) -> list[int]:
        if self.seeds is None:
            raise ValueError("this layout has no seeds: it only scores rows")
        return self.seeds

    def starts(self, initial: InitialGuess, variable_shape: Sequence[int]) -> tuple[Tensor, list[torch.Generator]]:
        """Every row's start (rows × variable, on the CPU): each item's generator draws its
        ``n_meis`` starts at once. Returns the generators too, after that draw, for any further
        per-item draw (CMA-ES draws its searches' sampler seeds from them)."""
        generators = [torch.Generator().manual_seed(seed) for seed in self._seeds()]
        starts = torch.cat([initial((self.n_meis, *variable_shape), generator) for generator in generators])
        return starts, generators

    def streams(self, draws: int = 1) -> RowStreams:
        """Every row's random streams; with ``draws`` > 1, ``draws`` streams per row (row ``r``'s
        ``d``-th is stream row ``r·draws + d``), e.g. CMA-ES's transform draws per generation."""
        row_items = self.row_items if draws == 1 else self.row_items.repeat_interleave(draws)
        return RowStreams(self._seeds(), row_items)

    def per_item_mean(self, values: Tensor) -> Tensor:
        """Per item: the mean of a per-row value."""
        return values if self.n_meis == 1 else values.reshape(self.n_items, self.n_meis).mean(1)

    def per_item_all(self, values: Tensor) -> Tensor:
        """Per item: whether a per-row boolean holds for all of its rows."""
        return values if self.n_meis == 1 else values.reshape(self.n_items, self.n_meis).all(1)

    def per_item_any(self, values: Tensor) -> Tensor:
        """Per item: whether a per-row boolean holds for any of its rows."""
        return values if self.n_meis == 1 else values.reshape(self.n_items, self.n_meis).any(1)

    def longest_rows(self, n_iterations: Sequence[int], stop_reasons: Sequence[str]) -> tuple[list[int], list[str]]:
        """Per-item records from per-row ones (rows that stop on their own, as CMA-ES searches):
        the iterations of the item's longest-running row, and that row's stop reason."""
        longest = np.asarray(n_iterations).reshape(self.n_items, self.n_meis).argmax(1) + np.arange(self.n_items) * self.n_meis
        return [int(n_iterations[row]) for row in longest], [str(stop_reasons[row]) for row in longest]

    def chunk_size(self, max_batch: int | None) -> int:
        """Rows per model call: at most ``max_batch``, whole items (``rows_per_chunk``)."""
        return rows_per_chunk(max_batch, self.n_rows, self.n_meis)

    def halved(self, rows: int) -> int | None:
        """Rows per model call after an out-of-memory error with ``rows``: half, whole items;
        ``None`` when one item was already alone."""
        return None if rows <= self.n_meis else max(self.n_meis, rows // 2 // self.n_meis * self.n_meis)

    def score(self, objective: Callable[[Tensor, Tensor], Tensor], x: Tensor, max_batch: int | None,
              view: Callable[[Tensor, Chunk], Tensor] | None = None) -> Tensor:
        """The objective of every row of ``x`` (``n_rows`` × C × …) in chunks of whole items."""
        rows = torch.arange(self.n_rows, device=self.row_items.device)
        return score_chunks(objective, x, chunked(rows, self.row_items, self.chunk_size(max_batch)), view)
