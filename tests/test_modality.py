"""Image, video or connectome inputs: decided once, from the rank of input_shape."""

from __future__ import annotations

import pytest

from mei_core.errors import MEIConfigError
from mei_core.modality import Modality
from mei_core.pipeline.results import spatial_dims


def test_the_rank_of_input_shape_names_the_modality_and_the_stores_input_dims():
    assert Modality.of([40, 3]) is Modality.CONNECTOME and spatial_dims([40, 3]) == ["sensory", "layer"]
    assert Modality.of([1, 36, 64]) is Modality.IMAGE and spatial_dims([1, 36, 64]) == ["channel", "y", "x"]
    assert Modality.of([2, 30, 18, 16]) is Modality.VIDEO and spatial_dims([2, 30, 18, 16]) == ["channel", "time", "y", "x"]


def test_an_input_shape_of_another_rank_is_an_error_naming_its_key():
    with pytest.raises(MEIConfigError, match=r"ensembles\.v1\.input_shape: expected S×L .* got \[1, 1, 36, 64, 2\]"):
        Modality.of([1, 1, 36, 64, 2], "ensembles.v1.input_shape")
