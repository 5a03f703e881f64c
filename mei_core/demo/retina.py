"""Demo kind ``retina``: known ON/OFF centre-surround ganglion cells with known temporal kernels
(``RetinaModel``), and the validation of video MEIs against them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..files import read_json, write_json
from . import DemoKind

if TYPE_CHECKING:
    import pandas as pd


class RetinaDemo(DemoKind):
    """ON/OFF centre-surround ganglion cells with known spatial filters and temporal kernels: video MEIs' spatial and temporal correlations."""

    name = "retina"
    defaults = {"n_cells": 8, "size": [16, 16], "channels": 2, "frames_kernel": 15, "population_seed": 0}
    files = {"description": "retina.json"}

    def make(self, spec_path: str, description_path: str) -> None:
        """The cells' description (deterministic per ``population_seed``)."""
        from ..models.retina import RetinaModel

        settings = self.settings(read_json(spec_path))
        model = RetinaModel.random(settings["n_cells"], size=tuple(settings["size"]), channels=settings["channels"],
                                   frames_kernel=settings["frames_kernel"], seed=settings["population_seed"])
        write_json(description_path, model.describe())

    def load(self, truth_file: str) -> Any:
        """The true model; it answers ``spatial_filter(cell)`` and ``temporal_kernel(cell)``."""
        from ..models.retina import load_retina

        return load_retina(truth_file)

    def cell_types(self, model: Any) -> list[str]:
        return [cell["type"] for cell in model.describe()["cells"]]

    def validate(self, truth_file: str, meis: Any, table: pd.DataFrame, objective_options: Any) -> pd.DataFrame:
        """Video MEIs of known ganglion cells: the MEI's leading space-time component (SVD of
        T × C·H·W) against the cell's spatial filter, and its time course against the stimulus that
        maximises the cell's linear response over the objective's frame window (the window-summed,
        time-reversed kernel). Correlations are absolute: the SVD leaves the sign to either component."""
        import numpy as np

        from ..stored import stored_slabs

        model = self.load(truth_file)
        frames = meis.sizes["time"]
        window = getattr(objective_options, "window", None)
        start, length = window(frames) if window is not None else (0, frames)
        spatial_r = np.full(len(table), np.nan, dtype=np.float32)
        temporal_r = np.full(len(table), np.nan, dtype=np.float32)
        for slab in stored_slabs(meis, table):
            for row, unit, mei in zip(slab.rows.index, slab.rows["output_unit"], slab.meis):  # mei: C×T×H×W
                movie = np.moveaxis(mei, 1, 0).reshape(frames, -1)  # T × C·H·W
                u, _, vt = np.linalg.svd(movie - movie.mean(), full_matrices=False)
                true_spatial = model.spatial_filter(int(unit)).detach().numpy().reshape(-1)
                kernel = model.temporal_kernel(int(unit)).detach().numpy()
                lags = np.arange(start, start + length)[None, :] - np.arange(frames)[:, None]  # Σ over window frames τ of k[τ − t]
                expected = np.where((lags >= 0) & (lags < len(kernel)), kernel[np.clip(lags, 0, len(kernel) - 1)], 0.0).sum(1)
                spatial_r[row] = abs(np.corrcoef(vt[0], true_spatial)[0, 1])
                temporal_r[row] = abs(np.corrcoef(u[:, 0], expected)[0, 1]) if expected.std() > 0 else np.nan
        types = self.cell_types(model)
        table["cell_type"] = [types[int(u)] for u in table["output_unit"]]
        table["spatial_correlation"] = spatial_r
        table["temporal_correlation"] = temporal_r
        return table


KIND = RetinaDemo()
