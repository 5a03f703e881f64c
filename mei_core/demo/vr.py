"""Demo kind ``vr``: a Virtual Retina (Wohrer & Kornprobst 2009; ``mei_core.models.virtual_retina``)
of known ON/OFF cells, and the validation of video MEIs against its centre/surround spatial filters
and OPL temporal filters (the leading components of each cell's linear kernel)."""

from __future__ import annotations

from typing import Any

from ..files import read_json
from .retina import RetinaDemo


class VirtualRetinaDemo(RetinaDemo):
    """A Virtual Retina of known ON/OFF cells: video MEIs' spatial and temporal correlations with its filters."""

    name = "vr"
    defaults = {"n_cells": 8, "size": [16, 16], "channels": 2, "population_seed": 0}
    files = {"description": "virtual_retina.json"}

    def make(self, spec_path: str, description_path: str) -> None:
        from ..files import atomic_path
        from ..models.virtual_retina import demo_virtual_retina, save_virtual_retina

        settings = self.settings(read_json(spec_path))
        model = demo_virtual_retina(settings["n_cells"], size=settings["size"], seed=settings["population_seed"], channels=settings["channels"])
        with atomic_path(description_path, suffix=".json") as temporary:
            save_virtual_retina(model, temporary)

    def load(self, truth_file: str) -> Any:
        from ..models.virtual_retina import load_virtual_retina

        return load_virtual_retina(truth_file)

    def cell_types(self, model: Any) -> list[str]:
        return [model.layer_names[int(layer)] for layer in model.cell_layers]


KIND = VirtualRetinaDemo()
