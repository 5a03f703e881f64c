"""Contrast budget of the default preset: filter correlation vs norm and steps on simulated populations.

For every population recipe (``mei_core.demo.populations.RECIPES``) this trains, or loads from
``benchmarks/.cache/``, two ensemble members and one validation member, then computes one MEI per
neuron (seed 0, all neurons in one batch) on the 2-member ensemble with ``presets.default`` at every
norm factor (norm = factor · sqrt(H·W·Σ std²), the expected L2 contrast of a training image), each
preset variant (``--variants``: JSON overrides) and each number of steps (a separate run each), and
records per cell type: the median and worst ``filter_correlation`` to the true filter
(phase-invariant for complex cells), the median relative activation (true rate over the true
optimum's at equal contrast), the median held-out ratio (validation member's rate at the MEI over
the ensemble's: a label-free signal), the fraction of clipped pixels and the MEI's peak
|pixel - mean| in stimulus stds.  Results and commands: ``config/README.md``, "The default preset and its contrast budget".

    PYTHONPATH=. .venv/bin/python benchmarks/contrast_budget.py --populations demo A B C   # norm sweep
    PYTHONPATH=. .venv/bin/python benchmarks/contrast_budget.py --rule --populations D     # the rule at 100/200/400 steps

Rows are appended to ``--csv`` as they are computed (a rerun skips rows already there); a Markdown
table of everything in the CSV for the chosen populations is printed at the end.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mei_core.methods import batched_gradient_ascent  # noqa: E402
from mei_core.demo.v1 import GroundTruthV1, build_demo_cnn, filter_correlation  # noqa: E402
from mei_core.models.ensemble import EnsembleModel  # noqa: E402
from mei_core.demo.populations import (  # noqa: E402
    RECIPES,
    PopulationRecipe,
    build_population_cnn,
    stimulus_relative_activation,
    train_member,
)
from mei_core.objectives import UnitObjective  # noqa: E402
from mei_core import presets  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
DEFAULT_CSV = CACHE / "contrast_budget.csv"
NORM_FACTORS = (0.1, 0.15, 0.25, 0.35, 0.5, 1.0)
STEPS = (100, 200, 400)
CELL_TYPES = ("simple", "complex", "dog")
COLUMNS = ["population", "held_out", "variant", "norm_factor", "norm", "steps", "cell_type", "n",
           "median_r", "min_r", "median_relative_activation", "median_heldout_ratio", "clipped_fraction",
           "median_peak_stds", "seconds"]


def recipe_key(recipe: PopulationRecipe) -> str:
    """Cache key: changes whenever anything in the recipe changes."""
    return hashlib.sha1(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def load_or_train(recipe: PopulationRecipe, seed: int) -> torch.nn.Module:
    """A member from the cache, else trained now (and cached); in eval mode."""
    path = CACHE / "models" / f"{recipe.name}_{recipe_key(recipe)}_seed{seed}.pt"
    builder = build_demo_cnn if recipe.trainer == "demo" else build_population_cnn
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model = builder(**json.loads(saved["kwargs"]))
        model.load_state_dict(saved["state_dict"])
        return model.eval()
    member = train_member(recipe, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": member.model.state_dict(), "kwargs": json.dumps(member.kwargs),
                "metrics": json.dumps(member.metrics)}, path)
    correlation = torch.tensor(member.metrics["test_correlation"])
    print(f"  trained {recipe.name} seed {seed}: {member.metrics.get('train_seconds', 0):.0f} s, "
          f"test r to clean rates median {correlation.median():.3f}", file=sys.stderr, flush=True)
    return member.model.eval()


def meis(model: torch.nn.Module, config: dict, n_neurons: int, shape: tuple[int, ...]) -> torch.Tensor:
    """One MEI per neuron (seed 0, all neurons in one batch), ``N×C×H×W``.  Every number of steps
    is its own run: the preset's blur schedule ends at ``final_sigma`` whatever the step count."""
    return batched_gradient_ascent(UnitObjective(model, list(range(n_neurons))), config, [0] * n_neurons, shape).meis


def score(meis: torch.Tensor, recipe: PopulationRecipe, population: GroundTruthV1, ensemble: torch.nn.Module,
          validation: torch.nn.Module, budget: dict) -> dict[str, dict[str, float]]:
    """Per cell type: median/min r, median relative activation, median held-out ratio, clipped
    fraction and the median over MEIs of the largest |pixel - mean| in stimulus stds."""
    units = torch.arange(len(meis))
    with torch.no_grad():
        ratio = validation(meis)[units, units] / ensemble(meis)[units, units]
    low, high = (torch.as_tensor(budget[k], dtype=meis.dtype).reshape(-1) for k in ("x_min", "x_max"))
    stats = presets.check_input_stats(recipe.input_stats, meis.shape[1])
    mean, std = (torch.tensor(stats[k], dtype=meis.dtype).view(1, -1, 1, 1) for k in ("mean", "std"))
    peak_stds = ((meis - mean) / std).abs().flatten(1).amax(1)  # how close the MEI comes to a clip of mean ± k·std
    clipped = ((meis <= low.view(1, -1, 1, 1) + 1e-6) | (meis >= high.view(1, -1, 1, 1) - 1e-6)).flatten(1).float().mean(1)
    out: dict[str, dict[str, float]] = {}
    for cell_type in CELL_TYPES:
        index = [i for i, t in enumerate(population.cell_types) if t == cell_type]
        if not index:
            continue
        r = torch.tensor([filter_correlation(meis[i], population, i) for i in index])
        activation = torch.tensor([stimulus_relative_activation(meis[i], recipe, population, i) for i in index])
        out[cell_type] = {"n": len(index), "median_r": r.median().item(), "min_r": r.min().item(),
                          "median_relative_activation": activation.median().item(),
                          "median_heldout_ratio": ratio[index].median().item(),
                          "clipped_fraction": clipped[index].mean().item(),
                          "median_peak_stds": peak_stds[index].median().item()}
    return out


def done_keys(csv_path: Path) -> set[tuple]:
    if not csv_path.exists():
        return set()
    with csv_path.open() as handle:
        return {(row["population"], row["variant"], float(row["norm_factor"]), int(row["steps"]))
                for row in csv.DictReader(handle)}


def variant_overrides(variant: str, recipe: PopulationRecipe) -> dict:
    """``presets.default`` overrides of a variant (JSON); ``sigma_per_24px: s`` means a gradient
    blur of ``s · H / 24`` pixels (a blur that scales with the image)."""
    overrides = json.loads(variant)
    if "sigma_per_24px" in overrides:
        overrides["sigma"] = overrides.pop("sigma_per_24px") * recipe.size / 24
    return overrides


def run_population(recipe: PopulationRecipe, norm_factors: list[float], variants: list[str],
                   steps: tuple[int, ...], csv_path: Path) -> None:
    done = done_keys(csv_path)
    population = recipe.ground_truth()
    members = [load_or_train(recipe, seed) for seed in recipe.member_seeds]
    validation = load_or_train(recipe, recipe.validation_seed)
    ensemble = EnsembleModel(*members).eval()
    for variant in variants:
        for norm_factor in norm_factors:
            if all((recipe.name, variant, norm_factor, s) in done for s in steps):
                continue
            budget = presets.contrast_budget(recipe.input_shape, recipe.input_stats, norm_factor)
            rows = []
            for n_steps in steps:
                config = presets.default(recipe.input_shape, recipe.input_stats, norm_factor=norm_factor,
                                         iterations=n_steps, **variant_overrides(variant, recipe))
                started = time.perf_counter()
                found = meis(ensemble, config, population.n_neurons, recipe.input_shape)
                seconds = time.perf_counter() - started
                for cell_type, values in score(found, recipe, population, ensemble, validation, budget).items():
                    rows.append({"population": recipe.name, "held_out": recipe.held_out, "variant": variant,
                                 "norm_factor": norm_factor, "norm": round(budget["norm"], 3), "steps": n_steps,
                                 "cell_type": cell_type, **{k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()},
                                 "seconds": round(seconds, 1)})
                print(f"  {recipe.name} {variant} f={norm_factor} {n_steps} steps: {seconds:.0f} s; "
                      + " ".join(f"{r['cell_type']} {r['median_r']:.3f}" for r in rows if r["steps"] == n_steps),
                      file=sys.stderr, flush=True)
            write_header = not csv_path.exists()
            with csv_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                if write_header:
                    writer.writeheader()
                writer.writerows(rows)


def markdown_table(csv_path: Path, populations: list[str]) -> str:
    """population × norm factor × steps rows with simple/complex/DoG median r (and the rest)."""
    with csv_path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["population"] in populations]
    grouped: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (row["population"], row["variant"], float(row["norm_factor"]), int(row["steps"]))
        grouped.setdefault(key, {})[row["cell_type"]] = row
    lines = ["| population | variant | norm factor | norm | steps | r simple | r complex | r DoG | rel. act. (s/c/d) | held-out ratio (s/c/d) | clipped |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: i for i, name in enumerate(RECIPES)}
    for key in sorted(grouped, key=lambda k: (order.get(k[0], 99), k[1], k[2], k[3])):
        cells = grouped[key]
        any_row = next(iter(cells.values()))

        def get(cell_type: str, column: str) -> str:
            return f"{float(cells[cell_type][column]):.3f}" if cell_type in cells else "–"

        name = key[0] + (" (held out)" if any_row["held_out"] == "True" else "")
        lines.append(f"| {name} | `{key[1]}` | {key[2]:g} | {float(any_row['norm']):.1f} | {key[3]} | "
                     f"{get('simple', 'median_r')} | {get('complex', 'median_r')} | {get('dog', 'median_r')} | "
                     + "/".join(get(t, "median_relative_activation") for t in CELL_TYPES) + " | "
                     + "/".join(get(t, "median_heldout_ratio") for t in CELL_TYPES) + " | "
                     + f"{max(float(c['clipped_fraction']) for c in cells.values()):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", nargs="+", default=[name for name, r in RECIPES.items() if not r.held_out],
                        choices=list(RECIPES), help="recipes to run (default: all but the held-out one)")
    parser.add_argument("--norm-factors", nargs="+", type=float, default=list(NORM_FACTORS))
    parser.add_argument("--variants", nargs="+", default=["{}"],
                        help="JSON overrides of presets.default, e.g. '{\"lr_factor\": 0.5}' or "
                             "'{\"sigma_per_24px\": 1.5}' (blur scaled with the image); '{}' = the preset's own")
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    parser.add_argument("--rule", action="store_true",
                        help="only the preset's own settings (presets.NORM_FACTOR ...) at ITERATIONS/2, ITERATIONS and 2×ITERATIONS steps")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--train-only", action="store_true", help="train and cache the members, then stop")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # models and CSVs are rebuilt locally, never committed
    if args.rule:
        args.norm_factors, args.variants = [presets.NORM_FACTOR], ["{}"]
        args.steps = [presets.ITERATIONS // 2, presets.ITERATIONS, 2 * presets.ITERATIONS]
    for name in args.populations:
        recipe = RECIPES[name]
        print(f"{name}: {recipe.size}×{recipe.size}, {recipe.readout}, BN {recipe.batchnorm}, depth "
              f"{len(recipe.kernel_sizes)}, stimulus mean {recipe.stimulus_mean} std {recipe.stimulus_std}, "
              f"rate {recipe.mean_rate}, {recipe.n_images} images", file=sys.stderr, flush=True)
        if args.train_only:
            for seed in (*recipe.member_seeds, recipe.validation_seed):
                load_or_train(recipe, seed)
            continue
        run_population(recipe, args.norm_factors, args.variants, tuple(sorted(args.steps)), args.csv)
    if not args.train_only:
        print(markdown_table(args.csv, args.populations))


if __name__ == "__main__":
    main()
