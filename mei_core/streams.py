"""Per-item random streams: counter-based draws for every row of a batch at once.

A draw is a pure function of ``(item seed, row of the item, step, stream, index)``: a 32-bit integer
hash (MurmurHash3's finaliser, applied in rounds) computed with integer tensor ops on the batch's
device. So

- an item gets the same numbers alone, in any batch, in any sub-batch after a split, and on any
  device (integer arithmetic is exact everywhere);
- all rows are drawn in a few tensor ops, with no generator object per row and no host sync;
- draws are made many steps at a time (one hash over ``rows × steps × n``: at least ``CHUNK`` steps,
  more for small batches, up to ``TABLE_VALUES`` numbers in all) and sliced per step, so a step pays
  one slice, not a dozen small kernel launches; wide draws (a white-noise image per row) are made a
  step at a time, so the table stays at most ``CHUNK_VALUES`` numbers per row.

Components draw through their :class:`~mei_core.components.Step` (``step.uniform(stream, n)``,
``step.normal(stream, n)``, ``step.integers(stream, n, high)``); ``stream`` tells the components of
one method apart (a transform's position in the method, see :func:`stream_id`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["RowStreams", "stream_id", "hash32"]

_MASK = 0xFFFFFFFF
#: steps drawn per hash evaluation, at least; any value gives the same numbers (draws are counter-based)
CHUNK = 32
#: numbers drawn per hash evaluation for the whole batch, at least: a small batch draws more steps at
#: once. A draw is ~50 small tensor ops, ~170 µs on the CPU whatever its size up to a few thousand
#: numbers: with 32 steps a draw, that was ~5 µs a step at batch 1 (2 % of a tiny model's step)
TABLE_VALUES = 16384
#: most numbers per row in one hash evaluation: a draw of ``n`` numbers per step is made
#: ``max(1, min(CHUNK_VALUES // n, max(CHUNK, TABLE_VALUES // (rows·n))))`` steps at a time (a 64×64
#: white-noise background per row would otherwise hold 32 steps of it: 32·4096 int64 per row)
CHUNK_VALUES = 4096
#: a stream not drawn yet: an empty range of steps
_NO_CHUNK = (0, 0, None)


def stream_id(name: str) -> int:
    """A stable 32-bit id for a named stream (e.g. ``"transform[0]"``), the same in every process."""
    return zlib.crc32(name.encode())


def _mul32(h: Tensor, constant: int) -> Tensor:
    """``h·constant mod 2³²`` for ``h < 2³²`` held in int64, without overflowing int64: the constant
    is split in 16-bit halves (each partial product stays below 2⁴⁸)."""
    low, high = constant & 0xFFFF, constant >> 16
    return (h * low + (((h * high) & 0xFFFF) << 16)) & _MASK


def hash32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finaliser (a bijection with full avalanche) on int64 tensors < 2³²."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _hash_int(value: int) -> int:
    """``hash32`` of one Python int (for the parts of a counter shared by all rows)."""
    value &= _MASK
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & _MASK
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & _MASK
    return value ^ (value >> 16)


def _as_int32(h: Tensor) -> Tensor:
    """The 32 bits of int64 values in ``[0, 2³²)`` as int32 (two's complement)."""
    return (h - ((h >> 31) << 32)).to(torch.int32)


def _hash32_int32(h: Tensor) -> Tensor:
    """``hash32`` on int32 tensors: the same bits, six times faster on the CPU than int64 (the wide
    draws of a white-noise background per row are dominated by it). int32 products wrap modulo 2³² on
    the CPU and on CUDA (checked against ``hash32`` in tests/test_components.py); a right shift of a
    negative int32 copies the sign bit, so shifted values are masked to make the shift logical."""
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * _SIGNED_1
    h = h ^ ((h >> 13) & 0x7FFFF)
    h = h * _SIGNED_2
    return h ^ ((h >> 16) & 0xFFFF)


#: MurmurHash3's finaliser constants 0x85EBCA6B and 0xC2B2AE35 as int32
_SIGNED_1, _SIGNED_2 = 0x85EBCA6B - 2**32, 0xC2B2AE35 - 2**32


def row_within_item(row_items: Tensor) -> Tensor:
    """Index of every row among the rows of its item (0 … n_meis − 1), in row order."""
    order = torch.argsort(row_items, stable=True)
    ordered = row_items[order]
    first = torch.searchsorted(ordered, ordered)  # first row of each item in the sorted order
    within = torch.empty_like(row_items)
    within[order] = torch.arange(len(row_items), device=row_items.device) - first
    return within


class RowStreams:
    """The random streams of every row of a batch (``row_items``: item of each row; ``seeds``: one
    per item). Rows of one item differ by their index within the item (diverse MEIs)."""

    def __init__(self, seeds: Sequence[int], row_items: Tensor):
        seeds = [int(s) for s in seeds]
        if any(s < 0 or s >= 2**63 for s in seeds):
            raise ValueError(f"seeds must be in [0, 2**63), got {seeds}")
        device = row_items.device
        low = torch.tensor([s & _MASK for s in seeds], dtype=torch.long, device=device)
        high = torch.tensor([s >> 32 for s in seeds], dtype=torch.long, device=device)
        within = row_within_item(row_items)
        # the per-row key: the item's seed (both words) and the row's index within the item
        key = hash32(low[row_items] ^ 0x9E3779B9)
        key = hash32(key ^ high[row_items])
        self._start(hash32(key ^ (within + 0x7F4A7C15)))

    def _start(self, keys: Tensor) -> None:
        self.keys = keys
        self.n_rows = len(keys)
        self._chunks: dict[tuple, tuple[int, int, Tensor]] = {}  # spec → (first step, end step, draws)
        self._specs: dict[tuple, tuple] = {}  # integers() arguments → checked draw spec

    def repeated(self, rows: Tensor) -> "RowStreams":
        """Streams whose row ``i`` draws exactly what row ``rows[i]`` of these streams draws (rows may
        repeat): e.g. every candidate of one CMA-ES search sees its search's draw."""
        streams = RowStreams.__new__(RowStreams)
        streams._start(self.keys[rows.to(self.keys.device)])
        return streams

    def uniform(self, stream: int, n: int, i_iter: int, rows: Tensor | None = None) -> Tensor:
        """``rows × n`` floats in ``[0, 1)`` (24 random bits: exact in float32) of step ``i_iter``;
        ``rows``: indices into the batch of the rows processed (``None``: all of them)."""
        return self._take((stream, n, None), i_iter, rows)

    def normal(self, stream: int, n: int, i_iter: int, rows: Tensor | None = None) -> Tensor:
        """``rows × n`` standard normal floats of step ``i_iter`` (Box–Muller on ``n`` uniforms of
        ``stream``: each pair gives two normals; ``|z| < 5.8`` since uniforms have 24 bits)."""
        pairs = (n + 1) // 2
        u = self.uniform(stream, 2 * pairs, i_iter, rows)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[:, :pairs]))  # 1 − u ∈ (0, 1]: no log(0)
        angle = (2 * torch.pi) * u[:, pairs:]
        return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n]

    def integers(self, stream: int, n: int, high: int | Sequence[int], i_iter: int, rows: Tensor | None = None,
                 low: int | Sequence[int] = 0) -> Tensor:
        """``rows × n`` integers (int64) in ``[low, low + high)``; ``high`` (< 2³¹) and ``low``: one
        value, or one per column. The shift to ``low`` is made once per chunk of steps, not per step."""
        spec = (stream, n, high, low)
        if spec not in self._specs:
            bounds = (int(high),) * n if isinstance(high, int) else tuple(int(h) for h in high)
            lows = (int(low),) * n if isinstance(low, int) else tuple(int(v) for v in low)
            if len(bounds) != n or len(lows) != n or min(bounds) < 1 or max(bounds) >= 2**31:
                raise ValueError(f"high must be {n} bound(s) in [1, 2**31) and low {n} value(s), got {high!r}, {low!r}")
            self._specs[spec] = (stream, n, (bounds, lows))
        return self._take(self._specs[spec], i_iter, rows)

    def _take(self, spec: tuple, i_iter: int, rows: Tensor | None) -> Tensor:
        start, end, table = self._chunks.get(spec, _NO_CHUNK)
        if not start <= i_iter < end:
            table = self._draw(*spec, start=i_iter)
            start, end = i_iter, i_iter + table.shape[1]
            self._chunks[spec] = (start, end, table)
        values = table[:, i_iter - start]
        if rows is None or rows.shape[0] == self.n_rows:  # rows are distinct: as many as the batch = all
            return values
        return values[rows]

    def _draw(self, stream: int, n: int, bounds: tuple[tuple[int, ...], tuple[int, ...]] | None, start: int) -> Tensor:
        """Draws of steps ``start … start + s − 1``: ``rows × s × n``, converted (``s`` steps: ``CHUNK``
        or more for small batches, fewer for wide draws)."""
        device = self.keys.device
        count = max(1, min(CHUNK_VALUES // n, max(CHUNK, TABLE_VALUES // max(1, self.n_rows * n))))
        steps = torch.arange(start, start + count, device=device, dtype=torch.long)
        # the counter of draw j at step i is the same for every row: i·n + j, mixed with the stream
        counters = _as_int32(hash32(((steps[:, None] * n + torch.arange(n, device=device)) & _MASK) ^ _hash_int(stream)))
        keys = _as_int32(self.keys)[:, None, None]
        bits = _hash32_int32(_hash32_int32(keys ^ counters) ^ keys)  # rows × steps × n: the wide part
        if bounds is None:
            return ((bits >> 8) & 0xFFFFFF).to(torch.float32) * 2.0**-24
        # Lemire's multiply-shift instead of a modulo (bits < 2³², bound < 2³¹: no int64 overflow)
        high, low = (torch.tensor(v, dtype=torch.long, device=device) for v in bounds)
        return (((bits.long() & _MASK) * high) >> 32) + low
