"""Ground-truth kinds: what ``ensembles.<name>.ground_truth: {kind, file}`` means for validation.

- ``filters``: a lab's known filters (simulations, mapped receptive fields): an ``.npz`` with
  ``filters`` (one per output unit: ``N×C×H×W``, or ``N×C×T×H×W`` for videos) and optionally
  ``quadrature`` (a second filter per unit, the quadrature partner of a phase-invariant cell) and
  ``invariant`` (``N`` booleans: use the pair; default: where ``quadrature`` is not all zero).
  Adds ``filter_correlation``: Pearson r of the MEI with the unit's filter or, for invariant units,
  the phase-invariant ``sqrt(r_a² + r_b²)`` with the orthonormalised pair. An optional ``cell_type``
  array (``N`` strings, one per output unit) becomes the ``cell_type`` column of ``validation.parquet``
  (and groups the MEI figures).
- ``v1``, ``retina``, ``vr``: the demos' own ground truth (``mei_core.demo``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import MEIConfigError
from ..registry import Registry
from ..stored import stored_slabs


def _demo_kinds_with_ground_truth(registry: Registry) -> None:
    from ..demo import DEMO_KINDS, demo_kind

    for entry in DEMO_KINDS:
        if entry.value.has_ground_truth():
            registry.add(entry.name, demo_kind(entry.name), entry.description)


#: ``filters`` (below) and every demo kind that validates against its own files
GROUND_TRUTH_KINDS: Registry[Any] = Registry(
    "ground-truth kind", collect=_demo_kinds_with_ground_truth, hints={"demo_v1": "the V1 demo's ground truth is now spelt 'v1'"})


class FiltersGroundTruth:
    """a lab's known filters (one per output unit, optionally a quadrature partner): filter_correlation"""

    name = "filters"

    def read(self, truth_file: str, key: str = "ground_truth.file") -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        filters, quadrature, invariant, _ = self.read_all(truth_file, key)
        return filters, quadrature, invariant

    def read_all(self, truth_file: str, key: str = "ground_truth.file") -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
        """Filters, quadrature partners, invariance and the optional ``cell_type`` of each unit."""
        try:
            with np.load(truth_file, allow_pickle=False) as data:
                filters = np.asarray(data["filters"], dtype=np.float64)
                quadrature = np.asarray(data["quadrature"], dtype=np.float64) if "quadrature" in data else None
                invariant = np.asarray(data["invariant"], dtype=bool) if "invariant" in data else None
                cell_type = np.asarray(data["cell_type"]) if "cell_type" in data else None
        except KeyError:
            raise MEIConfigError(f"{key}: {truth_file!r} has no array 'filters' (one filter per output unit)") from None
        except Exception as error:
            raise MEIConfigError(f"{key}: cannot read {truth_file!r}: {error}") from error
        if quadrature is not None and quadrature.shape != filters.shape:
            raise MEIConfigError(f"{key}: 'quadrature' has shape {quadrature.shape} but 'filters' has {filters.shape}")
        if invariant is None:
            invariant = np.zeros(len(filters), bool) if quadrature is None else np.abs(quadrature.reshape(len(filters), -1)).sum(1) > 0
        if cell_type is not None and (cell_type.shape != (len(filters),) or cell_type.dtype.kind not in "UST"):
            raise MEIConfigError(f"{key}: 'cell_type' must hold one string per unit ({len(filters)}), got {cell_type.dtype} of shape {list(cell_type.shape)}")
        return filters, quadrature, invariant, None if cell_type is None else cell_type.astype(str)

    def check(self, truth_file: str, input_shape: list[int], outputs: int, key: str) -> None:
        filters, _, _, _ = self.read_all(truth_file, key)
        if list(filters.shape[1:]) != list(input_shape) or len(filters) != outputs:
            raise MEIConfigError(f"{key}: 'filters' has shape {list(filters.shape)}; expected [{outputs}, {', '.join(map(str, input_shape))}] (one filter per output unit)")

    def validate(self, truth_file: str, meis: Any, table: pd.DataFrame, objective_options: Any) -> pd.DataFrame:
        filters, quadrature, invariant, cell_type = self.read_all(truth_file)
        correlation = np.full(len(table), np.nan, dtype=np.float32)
        for slab in stored_slabs(meis, table):
            chosen, group = slab.meis, slab.rows
            units = group["output_unit"].to_numpy()
            r = _pearson(chosen, filters[units])
            if quadrature is not None:
                pair = _orthonormal_partner(filters[units], quadrature[units])
                r_pair = _pearson(chosen, pair)
                r = np.where(invariant[units], np.sqrt(r**2 + r_pair**2), r)
            correlation[group.index] = r
        table["filter_correlation"] = correlation
        if cell_type is not None:
            table["cell_type"] = cell_type[table["output_unit"].to_numpy()]
        return table


def _centred_unit(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    flat = flat - flat.mean(1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_centred_unit(a) * _centred_unit(b)).sum(1)


def _orthonormal_partner(filters: np.ndarray, quadrature: np.ndarray) -> np.ndarray:
    """The quadrature filter made orthogonal to the filter (Gram–Schmidt), so r_a² + r_b² ≤ 1."""
    a, b = _centred_unit(filters), _centred_unit(quadrature)
    b = b - (a * b).sum(1, keepdims=True) * a
    return b.reshape(filters.shape)


GROUND_TRUTH_KINDS.add("filters", FiltersGroundTruth())


def ground_truth_kind(name: str, key: str = "ground_truth.kind") -> Any:
    return GROUND_TRUTH_KINDS.get(name, key)
