"""Time to quality: filter r and score against MEI-steps and wall time, per ground-truth population.

For every population recipe (``mei_core.demo.populations.RECIPES``: demo, A, B, C and E were used to
choose the converged default's numbers, D was kept out of it) this loads or trains the two ensemble
members (``benchmarks/.cache``, shared with ``contrast_budget.py``), computes one MEI per neuron and
seed (all neurons of a seed in one batch) with each method, and records along the run the median
``filter_correlation`` per cell type and the median score (the ensemble's response) at a set of steps.
Per method it prints the final medians, the mean steps per MEI actually run, the wall time, and the
first recorded step at which every cell type's median r is within 0.005 of its final value and the
median score reaches 99 % of its final value. A second table holds the issue's check: the converged
default against today's 200-step default (Δ median r per cell type, ratio of median scores).

    PYTHONPATH=. .venv/bin/python benchmarks/time_to_quality.py                         # default before/after, 3 seeds
    PYTHONPATH=. .venv/bin/python benchmarks/time_to_quality.py --methods walker2019 cma_es --seeds 0

Methods: ``default_200`` (``presets.default(iterations=200)``: the fixed 200 steps of rounds 1-2),
``default`` (the converged default), ``walker2019`` (1000 steps), ``cma_es`` (generations; its
curve holds the score only, its r is the final MEI's). Rows go to ``--csv`` (a rerun skips rows there).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from contrast_budget import CACHE, CELL_TYPES, load_or_train  # noqa: E402
from mei_core import presets  # noqa: E402
from mei_core.cmaes import cma_es  # noqa: E402
from mei_core.demo.populations import RECIPES, PopulationRecipe  # noqa: E402
from mei_core.demo.v1 import filter_correlation  # noqa: E402
from mei_core.engine import step_callback  # noqa: E402
from mei_core.methods import batched_gradient_ascent  # noqa: E402
from mei_core.models.ensemble import EnsembleModel  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402

DEFAULT_CSV = CACHE / "time_to_quality.csv"
METHODS = ("default_200", "default", "walker2019", "cma_es")
#: steps at which the curve is recorded (and the last step of every run)
RECORDED = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750, 1000)
R_WITHIN = 0.005
SCORE_FRACTION = 0.99
COLUMNS = ["population", "held_out", "method", "seeds", "step", "median_r_simple", "median_r_complex", "median_r_dog",
           "median_score", "mean_steps", "seconds"]


def method_config(method: str, recipe: PopulationRecipe) -> dict:
    if method == "default_200":
        return presets.default(recipe.input_shape, recipe.input_stats, iterations=presets.ITERATIONS)
    if method == "default":
        return presets.default(recipe.input_shape, recipe.input_stats)
    if method == "walker2019":
        return presets.walker2019(recipe.input_shape, recipe.input_stats)
    return presets.cma_es(recipe.input_shape, recipe.input_stats)


def medians(meis: torch.Tensor, scores: torch.Tensor, neurons: list[int], population) -> dict[str, float]:
    """Median r per cell type and median score over rows (``neurons[k]`` is row k's neuron)."""
    out: dict[str, float] = {}
    for cell_type in CELL_TYPES:
        rows = [k for k, n in enumerate(neurons) if population.cell_types[n] == cell_type]
        if rows:
            out[f"median_r_{cell_type}"] = torch.tensor([filter_correlation(meis[k], population, neurons[k]) for k in rows]).median().item()
    out["median_score"] = scores.median().item()
    return out


def run(recipe: PopulationRecipe, method: str, seeds: list[int]) -> list[dict]:
    """The recorded curve and the final row of one method on one population."""
    population = recipe.ground_truth()
    ensemble = EnsembleModel(*(load_or_train(recipe, seed) for seed in recipe.member_seeds)).eval()
    n = population.n_neurons
    snapshots: dict[int, list] = {}
    gradient = method != "cma_es"

    def record(state) -> None:
        if state.i_iter in RECORDED:
            stimulus = state.input_ if gradient else None
            snapshots.setdefault(state.i_iter, []).append(
                (None if stimulus is None else stimulus.detach().clone(), state.evaluation_per_item.detach().clone()))

    finals, steps, seconds = [], [], 0.0
    for seed in seeds:
        config = method_config(method, recipe)
        token = step_callback.set(record)
        started = time.perf_counter()
        try:
            if gradient:
                result = batched_gradient_ascent(UnitObjective(ensemble, list(range(n))), config, [seed] * n, recipe.input_shape)
            else:
                result = cma_es(UnitObjective(ensemble, list(range(n))), config, [seed] * n, recipe.input_shape)
        finally:
            step_callback.reset(token)
        seconds += time.perf_counter() - started
        finals.append(result)
        steps += result.n_iterations
    neurons = list(range(n)) * len(seeds)
    rows = []
    base = {"population": recipe.name, "held_out": recipe.held_out, "method": method, "seeds": " ".join(map(str, seeds))}
    for step in sorted(snapshots):
        if len(snapshots[step]) != len(seeds):
            continue  # a step only some seeds' runs reached
        scores = torch.cat([s for _, s in snapshots[step]])
        if gradient:
            values = medians(torch.cat([x for x, _ in snapshots[step]]), scores, neurons, population)
        else:
            values = {"median_score": scores.median().item()}
        rows.append({**base, "step": step, **values})
    final = medians(torch.cat([r.meis for r in finals]), torch.cat([r.scores for r in finals]), neurons, population)
    rows.append({**base, "step": "final", **final, "mean_steps": sum(steps) / len(steps), "seconds": seconds})
    return rows


def first_step(curve: list[dict], final: dict) -> tuple[int | None, int | None]:
    """The first recorded step with every cell type's median r within R_WITHIN of its final value,
    and the first with the median score at SCORE_FRACTION of its final value."""
    r_step = score_step = None
    for row in curve:
        types = [t for t in CELL_TYPES if final.get(f"median_r_{t}") not in (None, "")]
        if r_step is None and types and all(row.get(f"median_r_{t}") not in (None, "")
                                           and float(row[f"median_r_{t}"]) >= float(final[f"median_r_{t}"]) - R_WITHIN for t in types):
            r_step = int(row["step"])
        if score_step is None and float(row["median_score"]) >= SCORE_FRACTION * float(final["median_score"]):
            score_step = int(row["step"])
    return r_step, score_step


def tables(rows: list[dict], populations: list[str]) -> str:
    by_key: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["population"] in populations:
            by_key.setdefault((row["population"], row["method"]), []).append(row)

    def r(row: dict, t: str) -> str:
        value = row.get(f"median_r_{t}")
        return "–" if value in (None, "") else f"{float(value):.4f}"

    lines = ["| population | method | r simple / complex / DoG | median score | mean steps per MEI | wall s | steps to r within 0.005 | steps to 99 % score |",
             "|---|---|---|---|---|---|---|---|"]
    for (population, method), group in by_key.items():
        final = next(row for row in group if row["step"] == "final")
        curve = [row for row in group if row["step"] != "final"]
        r_step, score_step = first_step(curve, final)
        name = population + (" (held out)" if str(final["held_out"]) == "True" else "")
        lines.append(f"| {name} | {method} | {' / '.join(r(final, t) for t in CELL_TYPES)} | {float(final['median_score']):.3f} | "
                     f"{float(final['mean_steps']):.1f} | {float(final['seconds']):.1f} | "
                     f"{'–' if r_step is None or method == 'cma_es' else r_step} | {'–' if score_step is None else score_step} |")
    lines += ["", "The converged default against the 200-step default (the issue's check: Δr ≥ −0.005, score ≥ 99 %, mean steps ≤ 15):", "",
              "| population | Δ median r simple / complex / DoG | median score ratio | mean steps per MEI |", "|---|---|---|---|"]
    for population in populations:
        old = next((row for row in by_key.get((population, "default_200"), []) if row["step"] == "final"), None)
        new = next((row for row in by_key.get((population, "default"), []) if row["step"] == "final"), None)
        if old is None or new is None:
            continue
        deltas = " / ".join("–" if new.get(f"median_r_{t}") in (None, "") else f"{float(new[f'median_r_{t}']) - float(old[f'median_r_{t}']):+.4f}"
                            for t in CELL_TYPES)
        name = population + (" (held out)" if str(new["held_out"]) == "True" else "")
        lines.append(f"| {name} | {deltas} | {float(new['median_score']) / float(old['median_score']):.4f} | {float(new['mean_steps']):.1f} |")
    return "\n".join(lines)


def read(csv_path: Path) -> list[dict]:
    if not csv_path.exists():
        return []
    with csv_path.open() as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--methods", nargs="+", default=["default_200", "default"], choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    seeds = " ".join(map(str, args.seeds))
    for name in args.populations:
        for method in args.methods:
            done = {(row["population"], row["method"], row["seeds"]) for row in read(args.csv) if row["step"] == "final"}
            if (name, method, seeds) in done:
                continue
            rows = run(RECIPES[name], method, args.seeds)
            write_header = not args.csv.exists()
            with args.csv.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                if write_header:
                    writer.writeheader()
                writer.writerows({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
            final = rows[-1]
            print(f"{name} {method}: {json.dumps({k: final[k] for k in final if k.startswith('median') or k == 'mean_steps'})}",
                  file=sys.stderr, flush=True)
    print(tables([row for row in read(args.csv) if row["seeds"] == seeds], args.populations))


if __name__ == "__main__":
    main()
