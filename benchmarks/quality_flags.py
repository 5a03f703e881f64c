"""Evidence for the input_stats check and the quality flags (``mei_core/pipeline/quality.py``).

Trains (or loads from ``benchmarks/.cache/quality/``) two CNN members on each of three ground-truth
populations whose stimuli are in different units: display levels (mean 120, std 45) and 0–1 units
(mean 0.45, std 0.18) with batch norm, z-scores (mean 0, std 1) without. (A model fitted to raw
display levels without batch norm did not learn: test r 0.00; such a model is not a case to judge.)
Then

1. the plausibility check of ``input_stats``: each member judged against the correct statistics and
   against wrong ones (README's old example ``mean 0, std 1, range [-1.9, 2.4]``, std ×0.1 and ×10,
   mean ± 1 std, the other unit systems' statistics);
2. the flags: MEIs (``default`` preset, seeds 0 and 1, every neuron) with the correct statistics (and
   the 64-stimulus sample) and with README's example statistics; per MEI the label-free columns and
   flags as the pipeline computes them, and the true drive (ground-truth rate at the MEI ÷ at the
   correct run's MEI of the same neuron and seed). Rates: the share of wrong-stats MEIs with true drive
   < 0.5 that are flagged, and the share of correct-run MEIs that are flagged.

    PYTHONPATH=. /work/main/.venv/bin/python benchmarks/quality_flags.py   # tables for config/README.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mei_core import presets  # noqa: E402
from mei_core.demo.populations import PopulationRecipe, StimulusGroundTruth, build_population_cnn, train_member  # noqa: E402
from mei_core.methods import batched_gradient_ascent  # noqa: E402
from mei_core.models.ensemble import EnsembleModel  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402
from mei_core.pipeline import quality  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache" / "quality"
BASE = PopulationRecipe("base", size=24, n_simple=12, n_complex=8, n_dog=4, n_images=3000, epochs=10,
                        kernel_sizes=(9, 7), channels=16, readout="factorised", population_seed=5)
POPULATIONS = {
    "display_bn": replace(BASE, name="display_bn", stimulus_mean=120.0, stimulus_std=45.0, batchnorm=True),
    "unit_bn": replace(BASE, name="unit_bn", stimulus_mean=0.45, stimulus_std=0.18, batchnorm=True, population_seed=7),
    "z": replace(BASE, name="z", stimulus_mean=0.0, stimulus_std=1.0, batchnorm=False, population_seed=8),
}
README_STATS = {"mean": [0.0], "std": [1.0], "range": [-1.9, 2.4]}


def members(recipe: PopulationRecipe) -> list[torch.nn.Module]:
    CACHE.mkdir(parents=True, exist_ok=True)
    models = []
    for seed in recipe.member_seeds:
        path = CACHE / f"{recipe.name}_{seed}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
            model = build_population_cnn(**saved["kwargs"])
            model.load_state_dict(saved["state_dict"])
        else:
            started = time.perf_counter()
            trained = train_member(recipe, seed)
            model = trained.model
            torch.save({"kwargs": trained.kwargs, "state_dict": model.state_dict()}, path)
            print(f"trained {recipe.name} member {seed} in {time.perf_counter() - started:.0f} s, "
                  f"median test r {np.median(trained.metrics['test_correlation']):.3f}", flush=True)
        models.append(model.eval())
    return models


def sample_of(recipe: PopulationRecipe) -> np.ndarray:
    images, _ = recipe.dataset()
    index = np.linspace(0, len(images) - 1, quality.SAMPLE_DRAWS).round().astype(int)
    return images[index].numpy()


def true_stats(recipe: PopulationRecipe) -> dict:
    images, _ = recipe.dataset()
    return {"mean": [float(images.mean())], "std": [float(images.std())], "range": [float(images.min()), float(images.max())]}


def stated_variants(recipe: PopulationRecipe) -> dict[str, dict]:
    correct = true_stats(recipe)
    mean, std = correct["mean"][0], correct["std"][0]
    variants = {
        "correct": correct,
        "correct, no range": {"mean": [mean], "std": [std]},
        "README example": README_STATS,
        "std ×0.1": {"mean": [mean], "std": [0.1 * std]},
        "std ×10": {"mean": [mean], "std": [10 * std]},
        "mean + 1 std": {"mean": [mean + std], "std": [std]},
        "mean − 1 std": {"mean": [mean - std], "std": [std]},
    }
    for name, other in POPULATIONS.items():
        if (other.stimulus_mean, other.stimulus_std) != (recipe.stimulus_mean, recipe.stimulus_std):
            variants[f"stats of {name}"] = {"mean": [other.stimulus_mean], "std": [other.stimulus_std]}
    return variants


def check_table() -> list[dict]:
    rows = []
    for name, recipe in POPULATIONS.items():
        models = members(recipe)
        for variant, stats in stated_variants(recipe).items():
            verdicts = [quality.stats_check(m, recipe.input_shape, stats) for m in models]
            rows.append({"population": name, "stated": variant,
                         "bn_std_ratio": [round(v.bn_std_ratio, 3) for v in verdicts],
                         "bn_mean_offset": [round(v.bn_mean_offset, 2) for v in verdicts],
                         "response_cv": [round(v.response_cv, 3) for v in verdicts],
                         "judged": "refused" if any(v.problem and v.decisive for v in verdicts) else "warned" if any(v.problem for v in verdicts) else "plausible"})
    return rows


def run_meis(recipe: PopulationRecipe, models: list[torch.nn.Module], stats: dict, sample: np.ndarray | None) -> dict[str, np.ndarray]:
    ensemble = EnsembleModel(*models).eval()
    n = recipe.n_simple + recipe.n_complex + recipe.n_dog
    units, seeds = list(range(n)) * 2, [0] * n + [1] * n
    objective = UnitObjective(ensemble, units=units)
    config = presets.default(recipe.input_shape, stats)
    result = batched_gradient_ascent(objective, config, seeds, recipe.input_shape, "cpu")
    meis = result.meis.numpy()
    mean = np.asarray(stats["mean"]).reshape(1, -1, 1, 1)
    contrast = np.linalg.norm((meis - mean).reshape(len(meis), -1), axis=1)
    baseline = quality.baseline_responses(objective, np.arange(len(units)), recipe.input_shape, stats, "cpu", contrast, sample=sample)
    scores = result.scores.numpy()
    columns = {"neuron": np.asarray(units), "seed": np.asarray(seeds), "score": scores, **baseline,
               "gain": np.where(baseline["noise_response"] > 0, scores / baseline["noise_response"], np.nan),
               "clip_fraction": quality.clip_fraction(meis, stats),
               "seed_agreement": quality.seed_agreement(meis.reshape(2, n, *meis.shape[1:])).reshape(-1)}
    columns["sample_ratio"] = scores / baseline["sample_best"] if "sample_best" in baseline else np.full(len(units), np.nan)
    truth = StimulusGroundTruth(recipe)
    with torch.no_grad():
        rates = truth(torch.from_numpy(meis))
    columns["true_rate"] = rates[torch.arange(len(units)), torch.as_tensor(units)].numpy()
    columns["flags"] = quality.quality_flags(columns)
    columns["cell_type"] = np.asarray(truth.population.cell_types)[units]
    return columns


def wrong_variants(recipe: PopulationRecipe) -> dict[str, dict]:
    """Wrong statistics a user might state (run past the plan-time check, as with ``check: warn``)."""
    variants = stated_variants(recipe)
    return {name: variants[name] for name in ("README example", "std ×0.1", "std ×10", "mean + 1 std", "mean − 1 std")}


def flag_rates() -> list[dict]:
    rows = []
    for name, recipe in POPULATIONS.items():
        models = members(recipe)
        correct = run_meis(recipe, models, true_stats(recipe), sample_of(recipe))
        flagged_correct = correct["flags"] != ""
        rows.append({"population": name, "run": "correct (with the sample)", "n": len(flagged_correct),
                     "flagged": f"{flagged_correct.mean():.0%}", "flags": _counts(correct["flags"]),
                     "gain median / min": f"{np.nanmedian(correct['gain']):.2f} / {np.nanmin(correct['gain']):.2f}",
                     "sample ratio min": f"{np.nanmin(correct['sample_ratio']):.2f}",
                     "seed agreement min": f"{np.nanmin(correct['seed_agreement']):.2f}",
                     "clip fraction max": f"{np.nanmax(correct['clip_fraction']):.2f}"})
        print(json.dumps(rows[-1], default=str), flush=True)
        for variant, stats in wrong_variants(recipe).items():
            wrong = run_meis(recipe, models, stats, None)
            drive = wrong["true_rate"] / correct["true_rate"]
            weak = drive < 0.5
            flagged = wrong["flags"] != ""
            rows.append({"population": name, "run": f"wrong: {variant}", "n": len(drive),
                         "true drive < 0.5": int(weak.sum()),
                         "of those flagged": f"{flagged[weak].mean():.0%}" if weak.any() else "—",
                         "flagged": f"{flagged.mean():.0%}", "flags": _counts(wrong["flags"]),
                         "gain median / max of weak": (f"{np.nanmedian(wrong['gain'][weak]):.2f} / {np.nanmax(wrong['gain'][weak]):.2f}" if weak.any() else "—"),
                         "median true drive": f"{np.median(drive):.2f}",
                         "clip fraction max": f"{np.nanmax(wrong['clip_fraction']):.2f}"})
            print(json.dumps(rows[-1], default=str), flush=True)
    return rows


def _counts(flags: np.ndarray) -> dict[str, int]:
    names, counts = np.unique([f for f in flags if f], return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=["check", "flags", "both"], default="both")
    args = parser.parse_args()
    if args.part in ("check", "both"):
        for row in check_table():
            print(json.dumps(row), flush=True)
    if args.part in ("flags", "both"):
        flag_rates()


if __name__ == "__main__":
    main()
