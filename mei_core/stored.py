"""One reader for stored MEIs: an ensemble's Zarr store (opened with ``xr.open_zarr``, dims
``(method, seed, neuron[, mei_index], <input dims>)``, see ``mei_core.pipeline.results``) read one
(method, seed) slab at a time, the optional ``mei_index`` dim handled here alone.

Every validation (objective kinds, ground-truth kinds) and every figure reads MEIs through it. It
takes the opened dataset, so the library imports no xarray.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["StoredSlab", "stored_slabs", "first_meis"]


@dataclass(frozen=True)
class StoredSlab:
    """The MEIs of one (method, seed): ``rows`` (the table's rows of that method and seed, index kept)
    and ``meis`` (``len(rows)`` × input dims, e.g. rows × C×H×W): ``meis[i]`` is the MEI of row ``i``
    (its ``neuron_id`` and ``mei_index``)."""

    method: str
    seed: int
    rows: pd.DataFrame
    meis: np.ndarray


def stored_slabs(dataset: Any, table: pd.DataFrame, variable: str = "mei") -> Iterator[StoredSlab]:
    """Per (method, seed) of ``table`` (columns ``method``, ``seed``, ``neuron_id``, ``mei_index``),
    its rows and their stored MEIs (or another per-MEI ``variable`` of the store, e.g. ``opacity``).
    One slab is read at a time: a store of many neurons × seeds never has to fit in memory."""
    position_of = {int(n): i for i, n in enumerate(dataset["neuron"].values)}
    has_mei_index = "mei_index" in dataset[variable].dims
    for (method, seed), rows in table.groupby(["method", "seed"], sort=False):
        slab = np.asarray(dataset[variable].sel({"method": method, "seed": seed}).values)  # neurons[×n_meis]×…
        positions = [position_of[int(n)] for n in rows["neuron_id"]]
        meis = slab[positions, rows["mei_index"].to_numpy()] if has_mei_index else slab[positions]
        yield StoredSlab(str(method), int(seed), rows, meis)


def first_meis(dataset: Any, method: str, variable: str = "mei") -> Any:
    """``variable`` (``mei``, ``score``, …) of the first seed's first MEI of every neuron, for figures:
    a DataArray with dims ``(neuron, <input dims>)``."""
    selected = dataset[variable].sel({"method": method, "seed": int(dataset["seed"].values[0])})
    return selected.isel(mei_index=0) if "mei_index" in selected.dims else selected
