"""Population C's plateau: does power-iteration momentum let the converged default escape it sooner?

A study, not adopted (benchmarks/README.md, "Population C's plateau"). The default's update rescales
``d + lr·p`` (``d``: the MEI's deviation from the stimulus mean, ``p``: the blurred, normalised
gradient) back to the contrast budget: a power iteration on the step map ``M d = d + lr·p``, whose
speed is set by the gap between its leading eigenvalues. The momentum power method (Xu et al. 2018,
"Accelerated stochastic power iteration") replaces ``M d_t`` by ``M d_t − β d_{t−1}`` and speeds up
the slow direction when ``β`` is close to (second eigenvalue)² / 4, but every faster direction then
decays at ``√β`` per step. Here ``β = γ · ν² / 4`` per row, ``ν = |M d_t| / |d_t|`` (the row's growth,
an estimate of the leading eigenvalue), so ``γ`` is the fraction of the largest stable ``β``.

For each ``γ`` (0: today's default) and each tuning population (D stays held out), one MEI per neuron
and seed (seeds 0–2) with the converged default, compared MEI by MEI with the 200-step default:

    PYTHONPATH=. .venv/bin/python benchmarks/plateau_momentum.py                 # γ 0, 0.9, 0.93, 0.95, 0.97
    PYTHONPATH=. .venv/bin/python benchmarks/plateau_momentum.py --populations C --gammas 0 0.95
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.optim import Optimizer

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from contrast_budget import load_or_train  # noqa: E402
from mei_core import presets  # noqa: E402
from mei_core.demo.populations import RECIPES, PopulationRecipe  # noqa: E402
from mei_core.methods import batched_gradient_ascent  # noqa: E402
from mei_core.models.ensemble import EnsembleModel  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402
from mei_core.ops import per_row, row_norm  # noqa: E402

TUNING = [name for name, recipe in RECIPES.items() if not recipe.held_out]
SEEDS = (0, 1, 2)


class PowerMomentumSGD(Optimizer):
    """SGD whose step subtracts ``β/ν_t · d_{t−1}`` (the previous deviation, in this step's scale).

    ``centre``: the per-channel stimulus mean the contrast budget measures around (the momentum
    acts on deviations; a constant offset would otherwise be pushed too). Rows are independent.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, centre: float | list[float] = 0.0, gamma: float = 0.95):
        super().__init__(params, {"lr": lr, "centre": centre, "gamma": gamma})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for x in group["params"]:
                centre = torch.as_tensor(group["centre"], dtype=x.dtype).reshape(1, -1, *[1] * (x.dim() - 2))
                state = self.state[x]
                deviation = x - centre
                norm = row_norm(deviation).clamp_min(1e-12)
                stepped = deviation - group["lr"] * x.grad
                new = stepped
                if "previous" in state:
                    growth = row_norm(stepped) / norm  # ν: the leading eigenvalue of the step map, estimated
                    beta = group["gamma"] * growth**2 / 4
                    # the previous deviation in this step's scale: divided by the rescaling the budget applied
                    new = stepped - per_row(beta * norm / state["unscaled_norm"], x) * state["previous"]
                state["previous"], state["unscaled_norm"] = deviation.clone(), row_norm(new)
                x.copy_(centre + new)


def scores(recipe: PopulationRecipe, ensemble: torch.nn.Module, gamma: float | None) -> tuple[torch.Tensor, list[int]]:
    """Seeds × neurons scores and the steps every MEI ran (``gamma`` None: the 200-step default)."""
    n = recipe.ground_truth().n_neurons
    if gamma is None:
        config = presets.default(recipe.input_shape, recipe.input_stats, iterations=presets.ITERATIONS)
    else:
        config = presets.default(recipe.input_shape, recipe.input_stats)
        if gamma > 0:
            # the step size and the budget's centre as the preset wrote them (its SGD, its ChangeNormAroundMean)
            lr = config["optimizer"]["kwargs"]["lr"]
            (budget,) = [p for p in config["postprocessing"] if p["path"] == "ChangeNormAroundMean"]
            config["optimizer"] = {"path": f"{__name__}.PowerMomentumSGD",
                                   "kwargs": {"lr": lr, "centre": budget["kwargs"]["mean"], "gamma": gamma}}
    results = [batched_gradient_ascent(UnitObjective(ensemble, list(range(n))), config, [seed] * n, recipe.input_shape)
               for seed in SEEDS]
    return torch.stack([r.scores for r in results]), [s for r in results for s in r.n_iterations]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", nargs="+", default=TUNING, choices=list(RECIPES))
    parser.add_argument("--gammas", nargs="+", type=float, default=[0.0, 0.9, 0.93, 0.95, 0.97])
    args = parser.parse_args()
    print("| population | γ | median score ratio | MEIs below 99 % of their 200-step score | mean steps per MEI | max steps |")
    print("|---|---|---|---|---|---|")
    for name in args.populations:
        recipe = RECIPES[name]
        ensemble = EnsembleModel(*(load_or_train(recipe, seed) for seed in recipe.member_seeds)).eval()
        reference, _ = scores(recipe, ensemble, None)
        for gamma in args.gammas:
            new, steps = scores(recipe, ensemble, gamma)
            below = int((new < 0.99 * reference).sum())
            print(f"| {name} | {gamma:g} | {float(new.median() / reference.median()):.4f} | {below} of {new.numel()} | "
                  f"{sum(steps) / len(steps):.1f} | {max(steps)} |", flush=True)


if __name__ == "__main__":
    main()
