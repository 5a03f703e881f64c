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
