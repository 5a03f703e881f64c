"""The item layout's one home (mei_core.items) and the one reader of stored MEIs (mei_core.stored)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from mei_core.items import ItemLayout, rows_per_chunk, seed_major
from mei_core.stored import first_meis, stored_slabs


def test_an_items_rows_are_consecutive_and_a_batch_over_seeds_is_seed_major():
    assert ItemLayout(3, 2).row_items.tolist() == [0, 0, 1, 1, 2, 2]
    assert seed_major([7, 3], 2) == [7, 7, 3, 3]


def test_a_model_call_holds_whole_items_and_at_most_max_batch_rows():
    assert rows_per_chunk(5, 100, group=2) == 4
    assert rows_per_chunk(1, 100, group=3) == 3  # at least one item
    assert rows_per_chunk(None, 10, group=2) == 10
    assert ItemLayout(4, 3).halved(12) == 6 and ItemLayout(4, 3).halved(6) == 3 and ItemLayout(4, 3).halved(3) is None


def test_scoring_in_chunks_gives_every_row_its_items_value_as_one_call_would():
    calls = []

    def objective(x, items):
        calls.append(items.tolist())
        return x.flatten(1).sum(1) * (items + 1)

    layout = ItemLayout(3, 2)
    x = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 1, 2, 2)
    scores = layout.score(objective, x, max_batch=3)
    assert calls == [[0, 0], [1, 1], [2, 2]]
    assert torch.equal(scores, x.flatten(1).sum(1) * torch.tensor([1.0, 1, 2, 2, 3, 3]))


def test_starts_are_drawn_per_item_from_its_seed_so_an_item_alone_starts_where_it_starts_in_a_batch():
    initial = lambda shape, generator: torch.randn(shape, generator=generator)
    together, _ = ItemLayout.of_seeds([4, 9], 2).starts(initial, (1, 3, 3))
    alone, _ = ItemLayout.of_seeds([9], 2).starts(initial, (1, 3, 3))
    assert torch.equal(together[2:], alone)


def store(n_meis: int | None) -> xr.Dataset:
    """2 methods × 2 seeds × 3 neurons (ids 10, 11, 12)[ × n_meis] × 1×2×2 MEIs numbered in order."""
    dims = ["method", "seed", "neuron"] + (["mei_index"] if n_meis else []) + ["channel", "y", "x"]
    shape = [2, 2, 3] + ([n_meis] if n_meis else []) + [1, 2, 2]
    coords = {"method": ["a", "b"], "seed": [0, 5], "neuron": [10, 11, 12]} | ({"mei_index": np.arange(n_meis)} if n_meis else {})
    return xr.Dataset({"mei": (dims, np.arange(np.prod(shape), dtype=np.float32).reshape(shape)),
                       "score": (dims[:-3], np.arange(np.prod(shape[:-3]), dtype=np.float32).reshape(shape[:-3]))}, coords=coords)


def test_the_reader_gives_each_table_row_its_own_mei_with_or_without_a_mei_index_dim():
    table = pd.DataFrame({"method": ["b", "a", "b", "b"], "seed": [5, 0, 5, 0], "neuron_id": [12, 11, 10, 10], "mei_index": [1, 0, 0, 1]})
    for n_meis in (2, None):
        dataset = store(n_meis)
        slabs = list(stored_slabs(dataset, table))
        assert [(s.method, s.seed, s.rows.index.tolist()) for s in slabs] == [("b", 5, [0, 2]), ("a", 0, [1]), ("b", 0, [3])]
        for slab in slabs:
            for row, mei in zip(slab.rows.itertuples(), slab.meis):
                where = {"method": row.method, "seed": row.seed, "neuron": row.neuron_id} | ({"mei_index": row.mei_index} if n_meis else {})
                assert np.array_equal(mei, dataset["mei"].sel(where).values) and mei.shape == (1, 2, 2)


def test_figures_read_the_first_seeds_first_mei_of_every_neuron():
    dataset = store(2)
    assert np.array_equal(first_meis(dataset, "b", "score").values, dataset["score"].sel({"method": "b", "seed": 0, "mei_index": 0}).values)
    assert first_meis(store(None), "a").dims == ("neuron", "channel", "y", "x")
