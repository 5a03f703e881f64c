"""A lab's own ground truth (`kind: filters`): filter correlations of any ensemble's MEIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mei_core import MEIConfigError
from mei_core.pipeline.ground_truth import ground_truth_kind

from helpers import gabor


def meis_dataset(images: np.ndarray) -> xr.Dataset:
    """One method, one seed, ``len(images)`` neurons of 1×24×24 MEIs."""
    return xr.Dataset({"mei": (("method", "seed", "neuron", "channel", "y", "x"), images[None, None])},
                      coords={"method": ["m"], "seed": [0], "neuron": np.arange(len(images))})


def table(n: int) -> pd.DataFrame:
    return pd.DataFrame({"method": "m", "seed": 0, "neuron_id": range(n), "output_unit": range(n), "mei_index": 0})


def test_filter_correlation_is_pearson_r_for_simple_and_phase_invariant_for_quadrature_pairs(tmp_path):
    even, odd = gabor(phase=0.0).numpy(), gabor(phase=np.pi / 2).numpy()
    filters = np.stack([even, even])[:, None]
    quadrature = np.stack([np.zeros_like(odd), odd])[:, None]
    np.savez(tmp_path / "truth.npz", filters=filters, quadrature=quadrature)
    # neuron 0 (simple): its own filter and the inverted one; neuron 1 (complex): any phase of the pair
    shifted = (np.cos(1.0) * even + np.sin(1.0) * odd)[None]
    meis = np.stack([even[None], shifted])
    result = ground_truth_kind("filters").validate(str(tmp_path / "truth.npz"), meis_dataset(meis), table(2), None)
    assert result["filter_correlation"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert result["filter_correlation"].iloc[1] == pytest.approx(1.0, abs=1e-3)  # the pair is nearly orthogonal
    inverted = ground_truth_kind("filters").validate(str(tmp_path / "truth.npz"), meis_dataset(np.stack([-even[None], -shifted])), table(2), None)
    assert inverted["filter_correlation"].iloc[0] == pytest.approx(-1.0, abs=1e-6)  # sign matters for a simple cell
    assert inverted["filter_correlation"].iloc[1] == pytest.approx(1.0, abs=1e-3)  # not for a phase-invariant one


def test_a_filters_file_of_the_wrong_shape_is_refused_naming_the_key(tmp_path):
    np.savez(tmp_path / "truth.npz", filters=np.zeros((3, 1, 10, 10)))
    with pytest.raises(MEIConfigError, match=r"ensembles.v1.ground_truth.file: 'filters' has shape \[3, 1, 10, 10\]; expected \[5, 1, 24, 24\]"):
        ground_truth_kind("filters").check(str(tmp_path / "truth.npz"), [1, 24, 24], 5, "ensembles.v1.ground_truth.file")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(MEIConfigError, match="has no array 'filters'"):
        ground_truth_kind("filters").check(str(tmp_path / "other.npz"), [1, 24, 24], 5, "k")
