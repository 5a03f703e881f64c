"""Demo kind ``connectome``: a synthetic connectome (deterministic per ``population_seed``) and
reachable target activations for it. Its MEIs are validated by the ``targets`` objective kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..files import atomic_path, read_json
from . import DemoKind

if TYPE_CHECKING:
    import pandas as pd


class ConnectomeDemo(DemoKind):
    """A synthetic connectome and reachable target activations for it (validated by the targets objective kind)."""

    name = "connectome"
    defaults = {"n_neurons": 2000, "n_synapses": 40000, "n_sensory": 100, "num_layers": 5, "population_seed": 0}
    files = {"weights": "weights.npz", "network": "network.json"}

    def _network(self, settings: Mapping[str, Any]):
        from ..models.connectome import random_connectome

        return random_connectome(settings["n_neurons"], settings["n_synapses"], settings["n_sensory"], seed=settings["population_seed"])

    def make(self, spec_path: str, weights_path: str, network_path: str) -> None:
        from ..models.connectome import save_connectome

        connectome = self._network(self.settings(read_json(spec_path)))
        with atomic_path(weights_path, suffix=".npz") as weights, atomic_path(network_path, suffix=".json") as network:
            save_connectome(connectome, str(weights), str(network))

    def targets(self, spec: Mapping[str, Any], n_items: int = 16, per_item: int = 3, seed: int = 1) -> pd.DataFrame:
        """Reachable targets by construction: the activations a hidden random input gives to a few
        last-layer neurons (moderately active ones, 0.2–0.9). Columns ``item, layer, neuron, value``."""
        import numpy as np
        import pandas as pd
        import torch

        from ..models.connectome import MultilayeredNetwork

        settings = self.settings(spec)
        connectome = self._network(settings)
        model = MultilayeredNetwork(connectome.weights, connectome.sensory_indices, num_layers=settings["num_layers"],
                                    idx_to_group=connectome.idx_to_group).eval()
        generator = torch.Generator().manual_seed(seed)
        hidden = torch.rand(n_items, settings["n_sensory"], settings["num_layers"], generator=generator)
        with torch.no_grad():
            last = model(hidden)[:, :, -1].numpy()
        sensory = set(int(i) for i in connectome.sensory_indices)
        rng = np.random.default_rng(seed)
        rows = []
        for item in range(n_items):
            candidates = [n for n in np.flatnonzero((last[item] > 0.2) & (last[item] < 0.9)) if n not in sensory]
            for neuron in sorted(rng.choice(candidates, size=per_item, replace=False)):
                rows.append({"item": item, "layer": settings["num_layers"] - 1, "neuron": int(neuron), "value": round(float(last[item, neuron]), 4)})
        return pd.DataFrame(rows)


KIND = ConnectomeDemo()
