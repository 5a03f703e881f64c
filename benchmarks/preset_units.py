"""Every preset in the stimulus's own units: filter r per population × preset × unit system.

A fitted CNN member of each population (``mei_core.demo.populations`` recipes, members cached in
``benchmarks/.cache/`` by ``benchmarks/contrast_budget.py``'s ``load_or_train``) is seen through the
unit maps of ``tests/unit_systems.py`` (display levels 0–255, 0–1, z-scores: ``x = mean + std · z``,
with the matching ``input_stats``). Each preset makes one MEI per neuron and seed (seeds 0 and 1); the
table gives the median filter r to the true filters (simple / complex / DoG), the MEIs below r 0.8,
the largest offset of an MEI's mean from the stimulus mean (stds: −2.67 is black in these units) and
the median true drive ÷ the default's; a refused preset gives its reason. Also the trap that remains
by design: ``fixed_budget`` without ``input_stats`` (z-score numbers) on 0–255 stimuli.

    PYTHONPATH=. .venv/bin/python benchmarks/preset_units.py --populations known demo D A

``known`` is the test's own population (the truth itself, no fitting). Prints a Markdown table
(config/README.md, "Presets in the stimulus's units").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]
torch.set_num_threads(1)

from contrast_budget import CACHE, load_or_train  # noqa: E402
from mei_core import presets  # noqa: E402
from mei_core.cmaes import cma_es  # noqa: E402
from mei_core.demo.populations import RECIPES, PopulationRecipe  # noqa: E402
from mei_core.errors import MEIConfigError  # noqa: E402
from mei_core.methods import batched_gradient_ascent  # noqa: E402
from mei_core.models.v1 import GroundTruthV1  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402
from unit_systems import DISPLAY, UNIT_SYSTEMS, InUnits, UnitSystem, known_population, score_meis  # noqa: E402

SEEDS = (0, 1)
PRESET_NAMES = ("default", "fixed_budget", "cma_es", "walker2019", "sinzlab_default")


class RecipeInZ(nn.Module):
    """A member fitted in its recipe's stimulus units, fed z-images: ``member(mean + std · z)``."""

    def __init__(self, member: nn.Module, recipe: PopulationRecipe) -> None:
        super().__init__()
        self.member, self.recipe = member, recipe

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.member(self.recipe.stimulus_mean + self.recipe.stimulus_std * z)


def population(name: str) -> tuple[nn.Module, GroundTruthV1, tuple[int, int, int]]:
    """The model of z-images, its truth and the input shape."""
    if name == "known":
        truth = known_population()
        return truth, truth, (1, truth.size, truth.size)
    recipe = RECIPES[name]
    return RecipeInZ(load_or_train(recipe, recipe.member_seeds[0]), recipe).eval(), recipe.ground_truth(), recipe.input_shape


def config_for(name: str, system: UnitSystem, shape: tuple[int, ...]) -> dict:
    stats = {"input_shape": list(shape), "input_stats": system.input_stats}
    if name == "fixed_budget":  # the norm by hand: the default's, written in the system's units
        return presets.preset(name, norm=presets.contrast_budget(shape, system.input_stats)["norm"], input_stats=system.input_stats)
    if name == "fixed_budget without input_stats":
        return presets.preset("fixed_budget")
    accepted = presets.PRESETS.entry(name, "preset").parameters
    return presets.preset(name, **{k: v for k, v in stats.items() if k in accepted})


def run(model: nn.Module, truth: GroundTruthV1, shape: tuple[int, ...], system: UnitSystem, name: str) -> dict:
    try:
        config = config_for(name, system, shape)
    except MEIConfigError as refused:
        return {"refused": str(refused)}
    preset_name = name.split(" ")[0]
    method = cma_es if presets.preset_method_fn(preset_name) == "mei_core.cmaes.cma_es" else batched_gradient_ascent
    neurons = [n for n in range(truth.n_neurons) for _ in SEEDS]
    seeds = [s for _ in range(truth.n_neurons) for s in SEEDS]
    started = time.perf_counter()
    meis = method(UnitObjective(InUnits(model, system), neurons), config, seeds, shape).meis
    scores = score_meis(meis, neurons, system, truth)
    return {"scores": scores, "neurons": neurons, "seconds": time.perf_counter() - started}


def row(population_name: str, truth: GroundTruthV1, system: UnitSystem, name: str, result: dict, default: dict) -> str:
    if "refused" in result:
        return f"| {population_name} | {system.name} | {name} | refused: {result['refused'].split(';')[0]} | | | | |"
    scores, types = result["scores"], [truth.cell_types[n] for n in result["neurons"]]
    medians = []
    for cell_type in ("simple", "complex", "dog"):
        r = scores.filter_r[torch.tensor([t == cell_type for t in types])]
        medians.append(f"{r.median():.3f}" if len(r) else "–")
    drive = (scores.true_drive / default["scores"].true_drive).median()
    return (f"| {population_name} | {system.name} | {name} | {' / '.join(medians)} | {int((scores.filter_r < 0.8).sum())}/{len(types)} "
            f"| {scores.offset_stds.abs().max():.2f} | {drive:.2f} | {result['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--populations", nargs="+", default=["known", "demo", "D", "A"])
    parser.add_argument("--systems", nargs="+", default=[s.name for s in UNIT_SYSTEMS])
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    print("| population | units | preset | median r s / c / d | r < 0.8 | max \\|offset\\| (std) | drive ÷ default | s |")
    print("|---|---|---|---|---|---|---|---|")
    for population_name in args.populations:
        model, truth, shape = population(population_name)
        for system in (s for s in UNIT_SYSTEMS if s.name in args.systems):
            names = list(PRESET_NAMES) + (["fixed_budget without input_stats"] if system is DISPLAY else [])
            default = run(model, truth, shape, system, "default")
            for name in names:
                result = default if name == "default" else run(model, truth, shape, system, name)
                print(row(population_name, truth, system, name, result, default), flush=True)


if __name__ == "__main__":
    main()
