"""Demo kind ``v1``: a simulated V1 population (known Gabor and DoG filters), its Poisson responses
to pink noise, and CNN members trained on them; MEIs are validated against the true filters.

The population, the CNN and their training live in :mod:`mei_core.models.v1`, imported when a demo
job runs: the Snakefile reads this kind's file names without importing torch. Their names are also
reachable here (``mei_core.demo.v1.build_demo_cnn`` is the builder of the demo's members in configs
and manifests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..files import atomic_path, read_json, write_json
from . import DemoKind

if TYPE_CHECKING:
    import pandas as pd


class V1Demo(DemoKind):
    """Simulated V1 responses to pink noise and CNN members trained on them (``kind: v1``)."""

    name = "v1"
    defaults = {"n_simple": 12, "n_complex": 8, "n_dog": 4, "size": 24, "n_images": 3000, "epochs": 10,
                "population_seed": 0, "member_seeds": [1, 2, 3], "train": {}}
    files = {"dataset": "dataset.pt", "truth": "ground_truth.json", "member": "member_{seed}.pt", "metrics": "member_{seed}.metrics.json"}
    one_step = False  # rules demo_dataset and demo_member (workflow/rules/demo.smk)

    def outputs(self, folder: str, spec: Mapping[str, Any]) -> set[str]:
        seeds = self.settings(spec)["member_seeds"]
        members = {f"{folder}/{self.files[role].format(seed=seed)}" for seed in seeds for role in ("member", "metrics")}
        return members | {f"{folder}/{self.files['dataset']}", f"{folder}/{self.files['truth']}"}

    def make_dataset(self, spec_path: str, dataset_path: str, truth_path: str, threads: int = 1) -> None:
        """Simulate the population and its Poisson responses to pink-noise images (deterministic)."""
        import torch

        from ..models.v1 import GroundTruthV1, pink_noise, simulate_responses

        torch.set_num_threads(threads)
        settings = self.settings(read_json(spec_path))
        population = GroundTruthV1.random(settings["n_simple"], settings["n_complex"], settings["n_dog"], size=settings["size"], seed=settings["population_seed"])
        generator = torch.Generator().manual_seed(settings["population_seed"] + 1)
        images = pink_noise(settings["n_images"], settings["size"], generator)
        responses = simulate_responses(population, images, generator)
        with atomic_path(dataset_path, suffix=".pt") as temporary:
            torch.save({"images": images, "responses": responses}, temporary)
        write_json(truth_path, {"kind": self.name, "population": population.to_dict()})

    def train_member(self, spec_path: str, dataset_path: str, truth_path: str, seed: int, checkpoint_path: str, metrics_path: str, threads: int = 1) -> dict[str, Any]:
        """Fit one member (its own init/shuffle seed) and save its ``state_dict`` and test metrics."""
        import torch

        from ..models.v1 import GroundTruthV1, train_demo_cnn

        torch.set_num_threads(threads)
        settings = self.settings(read_json(spec_path))
        data = torch.load(dataset_path, weights_only=True)
        population = GroundTruthV1.from_dict(read_json(truth_path)["population"])
        model, metrics = train_demo_cnn(data["images"], data["responses"], seed=seed, epochs=settings["epochs"], population=population, **settings["train"])
        with atomic_path(checkpoint_path, suffix=".pt") as temporary:
            torch.save(model.state_dict(), temporary)
        write_json(metrics_path, {"seed": seed, **metrics})
        return metrics

    def validate(self, truth_file: str, meis: Any, table: pd.DataFrame, objective_options: Any) -> pd.DataFrame:
        """The correlation of every MEI to its neuron's true filter (phase-invariant for complex
        cells) and the true neuron's activation relative to its optimum at the same norm."""
        import numpy as np
        import torch

        from ..models.v1 import GroundTruthV1, filter_correlation, relative_activation
        from ..stored import stored_slabs

        population = GroundTruthV1.from_dict(read_json(truth_file)["population"])
        correlation = np.full(len(table), np.nan, dtype=np.float32)
        activation = np.full(len(table), np.nan, dtype=np.float32)
        for slab in stored_slabs(meis, table):
            for row, unit, mei in zip(slab.rows.index, slab.rows["output_unit"], slab.meis):
                mei = torch.from_numpy(np.ascontiguousarray(mei))
                correlation[row] = filter_correlation(mei, population, int(unit))
                activation[row] = relative_activation(mei, population, int(unit))
        table["cell_type"] = [population.cell_types[int(u)] for u in table["output_unit"]]
        table["filter_correlation"] = correlation
        table["relative_activation"] = activation
        return table


KIND = V1Demo()


def __getattr__(name: str) -> Any:
    """``mei_core.demo.v1.<name>`` for the names of :mod:`mei_core.models.v1` (imported on first use)."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..models import v1 as model

    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
