"""Precision benchmark: MEI quality of the ``precision`` method option on a ground truth.

Run from the repository root: ``.venv/bin/python benchmarks/precision.py`` (≈ 1 minute on the CPU).

The model is ``mei_core.demo.v1.GroundTruthV1.random()`` itself (24 neurons: 12 simple, 8 complex,
4 difference-of-Gaussians cells with known filters), so an MEI's quality is its correlation with the
neuron's true filter (complex cells: the length of its correlations with the quadrature pair). MEIs:
``default_preset(norm=24)`` (the L2 norm of a training image) with ``Jitter(1)``, 200 steps, one seed
per neuron. For each device present (CPU; CUDA when available), each precision: median and min r, and
the largest change of one neuron's r against float32 on the same device (same seeds and draws).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mei_core import batched_gradient_ascent, default_preset  # noqa: E402
from mei_core.demo.v1 import GroundTruthV1  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402


def quality(population: GroundTruthV1, meis: torch.Tensor) -> list[float]:
    """Correlation of every MEI with its neuron's true filter (complex: with the quadrature pair)."""
    values = []
    for neuron, mei in enumerate(meis):
        filters = population.filters(neuron).reshape(-1, mei.numel()).double()
        m = (mei.flatten().double() - mei.mean()) / mei.double().std()
        r = [(torch.corrcoef(torch.stack([m, f]))[0, 1]).item() for f in filters]
        values.append(sum(v * v for v in r) ** 0.5 if len(r) == 2 else r[0])
    return values


def main() -> None:
    torch.set_num_threads(1)
    population = GroundTruthV1.random().eval()
    neurons = list(range(population.n_neurons))
    config = default_preset(norm=24.0, iterations=200)
    config["transform"] = {"path": "Jitter", "kwargs": {"max_jitter": 1}}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"GroundTruthV1 ({population.n_neurons} neurons, 1x24x24), default_preset(norm=24) + Jitter(1), 200 steps, seed = neuron")
    for device in devices:
        reference = None
        for precision in ("float32", "tf32", "bf16"):
            started = time.perf_counter()
            result = batched_gradient_ascent(UnitObjective(population, neurons), {**config, "precision": precision}, neurons, (1, 24, 24), device)
            r = quality(population, result.meis)
            reference = reference or r
            change = max(abs(a - b) for a, b in zip(r, reference))
            print(f"  {device:4s} {precision:7s}: median r {statistics.median(r):.4f}, min {min(r):.4f}; "
                  f"median change vs float32 {statistics.median(r) - statistics.median(reference):+.4f}, largest |change| {change:.4f} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
