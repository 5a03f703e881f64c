"""Pipeline steps of the embedded ground-truth demo: simulate data, train one ensemble member."""

from __future__ import annotations

from typing import Any

import torch

from .files import atomic_path, read_json, write_json
from .models.demo import GroundTruthV1, pink_noise, simulate_responses, train_demo_cnn

DEMO_DEFAULTS = {"n_simple": 12, "n_complex": 8, "n_dog": 4, "size": 24, "n_images": 3000, "epochs": 10, "population_seed": 0}


def demo_settings(spec: dict[str, Any]) -> dict[str, Any]:
    return {**DEMO_DEFAULTS, **{k: v for k, v in spec.items() if k != "name"}}


def make_demo_dataset(spec_path: str, dataset_path: str, truth_path: str, threads: int = 1) -> None:
    """Simulate the population and its Poisson responses to pink-noise images (deterministic)."""
    torch.set_num_threads(threads)
    settings = demo_settings(read_json(spec_path))
    population = GroundTruthV1.random(settings["n_simple"], settings["n_complex"], settings["n_dog"], size=settings["size"], seed=settings["population_seed"])
    generator = torch.Generator().manual_seed(settings["population_seed"] + 1)
    images = pink_noise(settings["n_images"], settings["size"], generator)
    responses = simulate_responses(population, images, generator)
    with atomic_path(dataset_path, suffix=".pt") as temporary:
        torch.save({"images": images, "responses": responses}, temporary)
    write_json(truth_path, {"kind": "demo_v1", "population": population.to_dict()})


def train_demo_member(spec_path: str, dataset_path: str, truth_path: str, seed: int, checkpoint_path: str, metrics_path: str, threads: int = 1) -> dict[str, Any]:
    """Fit one member (its own init/shuffle seed) and save its ``state_dict`` and test metrics."""
    torch.set_num_threads(threads)
    settings = demo_settings(read_json(spec_path))
    data = torch.load(dataset_path, weights_only=True)
    population = GroundTruthV1.from_dict(read_json(truth_path)["population"])
    model, metrics = train_demo_cnn(data["images"], data["responses"], seed=seed, epochs=settings["epochs"], population=population, **settings.get("train", {}))
    with atomic_path(checkpoint_path, suffix=".pt") as temporary:
        torch.save(model.state_dict(), temporary)
    write_json(metrics_path, {"seed": seed, **metrics})
    return metrics


# --------------------------------------------------------------------------- the connectome demo

CONNECTOME_DEFAULTS = {"n_neurons": 2000, "n_synapses": 40000, "n_sensory": 100, "num_layers": 5, "population_seed": 0}


def connectome_settings(spec: dict[str, Any]) -> dict[str, Any]:
    return {**CONNECTOME_DEFAULTS, **{k: v for k, v in spec.items() if k not in ("name", "kind")}}


def _demo_network(settings: dict[str, Any]):
    from .models.connectome import random_connectome

    return random_connectome(settings["n_neurons"], settings["n_synapses"], settings["n_sensory"], seed=settings["population_seed"])


def make_demo_connectome(spec_path: str, weights_path: str, network_path: str) -> None:
    """The synthetic connectome of the demo (deterministic per ``population_seed``)."""
    from .models.connectome import save_connectome

    connectome = _demo_network(connectome_settings(read_json(spec_path)))
    with atomic_path(weights_path, suffix=".npz") as weights, atomic_path(network_path, suffix=".json") as network:
        save_connectome(connectome, str(weights), str(network))


def demo_connectome_targets(spec: dict[str, Any], n_items: int = 16, per_item: int = 3, seed: int = 1):
    """Reachable targets by construction: the activations a hidden random input gives to a few
    last-layer neurons (moderately active ones, 0.2–0.9). Columns ``item, layer, neuron, value``."""
    import numpy as np
    import pandas as pd

    from .models.connectome import MultilayeredNetwork

    settings = connectome_settings(spec)
    connectome = _demo_network(settings)
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


# --------------------------------------------------------------------------- the retina demo

RETINA_DEFAULTS = {"n_cells": 8, "size": [16, 16], "channels": 2, "frames_kernel": 15, "population_seed": 0}


def make_demo_retina(spec_path: str, description_path: str) -> None:
    """Known ON/OFF centre-surround ganglion cells with known temporal kernels (deterministic per seed)."""
    from .models.retina import RetinaModel

    spec = read_json(spec_path)
    settings = {**RETINA_DEFAULTS, **{k: v for k, v in spec.items() if k not in ("name", "kind")}}
    model = RetinaModel.random(settings["n_cells"], size=tuple(settings["size"]), channels=settings["channels"],
                               frames_kernel=settings["frames_kernel"], seed=settings["population_seed"])
    write_json(description_path, model.describe())
