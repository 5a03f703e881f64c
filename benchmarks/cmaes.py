"""Gradient-free MEIs (``mei_core.cmaes.cma_es``) against gradient ascent on cells with known filters.

Run from the repository root: ``.venv/bin/python benchmarks/cmaes.py`` (about 3 minutes on 2 cores,
one torch thread); writes ``cmaes.json`` and ``cmaes.png`` to ``--out`` and prints a Markdown table.
``--section flat`` runs only section 4 (about 2 minutes) and writes ``cmaes_flat.json``.

1. The demo's true V1 population (``GroundTruthV1.random(seed=0)``: 12 simple, 8 complex, 4 DoG cells,
   24×24) under the demo's contrast budget (L2 norm 24, pixels within ±3): gradient ascent on pixels
   (``default_preset``, 200 steps, lr 1) on the differentiable rates; CMA-ES on a model that only
   answers with numbers (no autograd graph) over Gabor parameters (DoG parameters for DoG cells) and
   over a truncated Fourier basis (``Spectral(max_frequency=4)``, 90 numbers).
2. Pixels on a small image: a 10×10 population (4 simple, 4 complex, 2 DoG), budget norm 5, ±3.
3. Spiking models: Poisson spike counts and integer counts (``floor``) of the V1 rates (CMA-ES, Gabor
   parameters), and ``RetinaModel``'s deterministic integrate-and-fire spike output on 2×30×16×16
   videos (CMA-ES over a DoG × temporal-cosine decoder given by import path), against gradient ascent
   on the retina's rates (pixels).
4. Flat starts: 12 simple cells made silent below 0.6× their best response under the budget (norm
   10, ±3): ``relu(f·x − θ)`` and its integer counts ``floor(relu(f·x − θ))``, where a first
   generation usually sees nothing. Seeds 0–5 per cell, from the ``cma_es`` preset's centred start
   (20 candidates) and from ``cma_es_preset``'s ``RandomNormal(1)`` start (10 candidates); the
   default flat restarts (``flat_generations: 5``) against cma's own stops (``flat_generations:
   null``) and against those with ``tolfun: 0, tolfunhist: 0``. Per variant: searches that found a
   response (score > 0), r of their MEIs with the filter, model evaluations per search, restarts.

Per method: median filter correlation per cell type (``filter_correlation``: Pearson r with the true
filter, phase-invariant for complex cells); model evaluations per item (a row through the model:
gradient ascent 201 forward + 200 backward passes, CMA-ES generations × population + 1); wall time per
item (the batch's time / items: every method runs all its items in one batch).
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from torch import Tensor, nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .` too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the decoder below, by import path

from mei_core import batched_gradient_ascent, default_preset  # noqa: E402
from mei_core.cmaes import cma_es, cma_es_preset  # noqa: E402
from mei_core.demo.v1 import GroundTruthV1, filter_correlation  # noqa: E402
from mei_core.models.retina import RetinaModel  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402
from mei_core.parameterisations import DoG  # noqa: E402

RETINA_SHAPE = (2, 30, 16, 16)  # C×T×H×W
WINDOW = (20, 30)  # frames whose mean spike count is maximised


class ResponsesOnly(nn.Module):
    """The model as a closed-loop rig sees it: numbers back, no autograd graph."""

    def __init__(self, model: nn.Module, spikes: str | None = None, seed: int = 0):
        super().__init__()
        self.model, self.spikes = model, spikes
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            rates = self.model(x)
            if self.spikes == "poisson":
                return torch.poisson(rates, generator=self.generator)
            return torch.floor(rates) if self.spikes == "floor" else rates.clone()


class DoGMovie(nn.Module):
    """A decoder for ``cma_es`` (``Decoder(decoder="cmaes.DoGMovie", dimension=7 + 8)``): a DoG in
    space (7 numbers, :class:`mei_core.parameterisations.DoG` with 2 channel weights) times a time
    course of 8 cosines (frequencies 0–3.5 cycles per video): ``B×15 → B×2×30×16×16``."""

    def __init__(self, n_temporal: int = 8):
        super().__init__()
        self.spatial = DoG()
        self.spatial.initial_shape((RETINA_SHAPE[0], *RETINA_SHAPE[2:]))
        t = torch.arange(RETINA_SHAPE[1], dtype=torch.float32)
        self.register_buffer("basis", torch.stack([torch.cos(math.pi * k * (t + 0.5) / RETINA_SHAPE[1]) for k in range(n_temporal)]))

    def forward(self, z: Tensor) -> Tensor:
        space = self.spatial(z[:, :7])  # B×C×H×W
        time_course = z[:, 7:] @ self.basis.to(z)  # B×T
        return space[:, :, None] * time_course[:, None, :, None, None]


def window_mean(rows: Tensor) -> Tensor:
    return rows[:, WINDOW[0] : WINDOW[1]]


def retina_correlations(mei: Tensor, model: RetinaModel, cell: int) -> tuple[float, float]:
    """As ``mei_core.demo.retina.RetinaDemo.validate``: the MEI's leading space-time component (SVD of
    T × C·H·W) against the spatial filter, its time course against the window-summed reversed kernel."""
    frames = mei.shape[1]
    movie = mei.permute(1, 0, 2, 3).reshape(frames, -1).double().numpy()
    u, _, vt = np.linalg.svd(movie - movie.mean(), full_matrices=False)
    kernel = model.temporal_kernel(cell).double().numpy()
    lags = np.arange(*WINDOW)[None, :] - np.arange(frames)[:, None]
    expected = np.where((lags >= 0) & (lags < len(kernel)), kernel[np.clip(lags, 0, len(kernel) - 1)], 0.0).sum(1)
    spatial = abs(np.corrcoef(vt[0], model.spatial_filter(cell).double().numpy().reshape(-1))[0, 1])
    return float(spatial), float(abs(np.corrcoef(u[:, 0], expected)[0, 1]))


def run(label, name, function, objective, config, units, shape, evaluations, truth=None, types=None):
    started = time.perf_counter()
    result = function(objective, config, list(range(len(units))), shape)
    seconds = time.perf_counter() - started
    row = {"label": label, "method": name, "units": list(units), "cell_types": [types[u] for u in units] if types else None, "items": len(units), "seconds_per_item": seconds / len(units),
           "evaluations_per_item": evaluations(result), "stop_reasons": sorted(set(result.stop_reasons))}
    if truth is not None:
        r = [filter_correlation(result.meis[k], truth, u) for k, u in enumerate(units)]
        row["r"] = r
        for kind in ("simple", "complex", "dog"):
            of_kind = [v for v, u in zip(r, units) if types[u] == kind]
            if of_kind:
                row[f"median_r_{kind}"] = statistics.median(of_kind)
    print(f"  {name}: {seconds:.1f} s", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k not in ("r", "units", "cell_types")}, flush=True)
    return row, result


def gradient_evaluations(iterations: int):
    return lambda result: f"{iterations + 1} fwd + {iterations} bwd"


def cma_evaluations(dimension: int, population: int | None = None):
    population = population or 4 + int(3 * math.log(dimension))  # cma's default
    return lambda result: int(statistics.mean(result.n_iterations) * population + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/benchmarks/cmaes", help="folder for cmaes.json and cmaes.png")
    parser.add_argument("--section", choices=["all", "flat"], default="all", help="flat: only section 4 (flat starts)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.section == "flat":
        flat_starts(out)
        return
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows, examples = [], {}

    print("1. V1 ground truth, 24×24, budget norm 24, ±3", flush=True)
    v1 = GroundTruthV1.random(seed=0)
    types = v1.cell_types
    gabor_cells = [i for i, t in enumerate(types) if t in ("simple", "complex")]
    dog_cells = [i for i, t in enumerate(types) if t == "dog"]
    everyone = list(range(v1.n_neurons))
    row, result = run("GA pixels", "gradient ascent, pixels", batched_gradient_ascent, UnitObjective(v1, everyone),
                      default_preset(norm=24.0, iterations=200, lr=1.0), everyone, (1, 24, 24), gradient_evaluations(200), v1, types)
    rows.append(row)
    examples["GA pixels"] = dict(enumerate(result.meis))
    responses = ResponsesOnly(v1)
    row, result = run("CMA Gabor", "CMA-ES, Gabor (8 parameters)", cma_es, UnitObjective(responses, gabor_cells),
                      cma_es_preset("Gabor", norm=24.0, max_generations=150), gabor_cells, (1, 24, 24), cma_evaluations(8), v1, types)
    rows.append(row)
    examples["CMA Gabor / DoG"] = dict(zip(gabor_cells, result.meis))
    row, result = run("CMA DoG", "CMA-ES, DoG (6 parameters)", cma_es, UnitObjective(responses, dog_cells),
                      cma_es_preset("DoG", norm=24.0, max_generations=150), dog_cells, (1, 24, 24), cma_evaluations(6), v1, types)
    rows.append(row)
    examples["CMA Gabor / DoG"].update(dict(zip(dog_cells, result.meis)))
    spectral = {"path": "Spectral", "kwargs": {"max_frequency": 4}}
    row, result = run("CMA Fourier", "CMA-ES, Fourier basis (90 numbers)", cma_es, UnitObjective(responses, everyone),
                      cma_es_preset(spectral, norm=24.0, max_generations=300), everyone, (1, 24, 24), cma_evaluations(90), v1, types)
    rows.append(row)
    examples["CMA Fourier"] = dict(enumerate(result.meis))
    print("   the same at norm 10, where the ±3 clip is inactive", flush=True)
    row, _ = run("GA n10", "gradient ascent, pixels, norm 10", batched_gradient_ascent, UnitObjective(v1, everyone),
                 default_preset(norm=10.0, iterations=200, lr=1.0), everyone, (1, 24, 24), gradient_evaluations(200), v1, types)
    rows.append(row)
    row, _ = run("CMA Gabor n10", "CMA-ES, Gabor, norm 10", cma_es, UnitObjective(responses, gabor_cells),
                 cma_es_preset("Gabor", norm=10.0, max_generations=150), gabor_cells, (1, 24, 24), cma_evaluations(8), v1, types)
    rows.append(row)
    row, _ = run("CMA DoG n10", "CMA-ES, DoG, norm 10", cma_es, UnitObjective(responses, dog_cells),
                 cma_es_preset("DoG", norm=10.0, max_generations=150), dog_cells, (1, 24, 24), cma_evaluations(6), v1, types)
    rows.append(row)

    print("2. pixels on a small image, 10×10, budget norm 5, ±3", flush=True)
    small = GroundTruthV1.random(n_simple=4, n_complex=4, n_dog=2, size=10, seed=1)
    cells = list(range(small.n_neurons))
    row, _ = run("small GA", "10×10: gradient ascent, pixels", batched_gradient_ascent, UnitObjective(small, cells),
                 default_preset(norm=5.0, iterations=200, lr=1.0), cells, (1, 10, 10), gradient_evaluations(200), small, small.cell_types)
    rows.append(row)
    row, _ = run("small CMA pixels", "10×10: CMA-ES, pixels (100)", cma_es, UnitObjective(ResponsesOnly(small), cells),
                 cma_es_preset("Pixels", norm=5.0, max_generations=400), cells, (1, 10, 10), cma_evaluations(100), small, small.cell_types)
    rows.append(row)

    print("3. spiking models", flush=True)
    row, result = run("Poisson CMA", "spikes: CMA-ES, Gabor, Poisson counts, population 40", cma_es, UnitObjective(ResponsesOnly(v1, "poisson"), gabor_cells),
                      {**cma_es_preset("Gabor", norm=24.0, max_generations=150), "population_size": 40}, gabor_cells, (1, 24, 24), cma_evaluations(8, 40), v1, types)
    rows.append(row)
    examples["CMA Poisson spikes"] = dict(zip(gabor_cells, result.meis))
    row, _ = run("floor CMA", "spikes: CMA-ES, Gabor, floor(rate) counts", cma_es, UnitObjective(ResponsesOnly(v1, "floor"), gabor_cells),
                 cma_es_preset("Gabor", norm=24.0, max_generations=150), gabor_cells, (1, 24, 24), cma_evaluations(8), v1, types)
    rows.append(row)

    retina = RetinaModel.random(8, size=RETINA_SHAPE[2:], channels=RETINA_SHAPE[0], frames_kernel=15, seed=0)
    retina.spike_mode = "deterministic"
    retina.requires_grad_(False)
    cells = list(range(retina.n_cells))

    class RetinaSpikes(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            with torch.no_grad():
                return retina(x, spikes=True)

    for label, name, function, model, config, evaluations in [
        ("retina GA", "retina: gradient ascent on rates, pixels", batched_gradient_ascent, retina,
         default_preset(norm=30.0, iterations=200, lr=1.0, sigma=1.0), gradient_evaluations(200)),
        ("retina CMA", "retina: CMA-ES on spikes, DoG × 8 cosines (15)", cma_es, RetinaSpikes(),
         cma_es_preset({"path": "Decoder", "kwargs": {"decoder": "cmaes.DoGMovie", "dimension": 15}}, norm=30.0, max_generations=200), cma_evaluations(15)),
    ]:
        row, result = run(label, name, function, UnitObjective(model, cells, target_fn=window_mean), config, cells, RETINA_SHAPE, evaluations)
        pairs = [retina_correlations(result.meis[k], retina, c) for k, c in enumerate(cells)]
        row["median_spatial_r"] = statistics.median(p[0] for p in pairs)
        row["median_temporal_r"] = statistics.median(p[1] for p in pairs)
        with torch.no_grad():
            spikes = retina(result.meis, spikes=True)[:, WINDOW[0] : WINDOW[1]].mean(1)  # items × cells
        row["median_spikes"] = float(spikes[torch.arange(len(cells)), cells].median())
        print(f"    spatial r {row['median_spatial_r']:.3f}, temporal r {row['median_temporal_r']:.3f}, spikes/frame {row['median_spikes']:.2f}", flush=True)
        rows.append(row)

    flat_starts(out)
    print(f"load average at end: {os.getloadavg()}", flush=True)
    (out / "cmaes.json").write_text(json.dumps(rows, indent=1))
    table(rows)
    figure(rows, examples, v1, out / "cmaes.png")


class Thresholded(nn.Module):
    """``relu(f·x − θ)`` per cell (``floor`` of it: integer counts), θ = ``fraction`` × the response to
    the best image under the budget (the filter at L2 ``norm``, clipped to ±3)."""

    def __init__(self, filters: Tensor, norm: float, fraction: float, counts: bool = False):
        super().__init__()
        self.filters, self.counts = filters.reshape(len(filters), -1), counts
        self.theta = fraction * (self.filters * (norm * self.filters).clamp(-3, 3)).sum(1)

    def forward(self, x: Tensor) -> Tensor:
        drive = torch.relu(x.reshape(len(x), -1) @ self.filters.T - self.theta)
        return torch.floor(drive) if self.counts else drive


def flat_starts(out: Path, seeds: range = range(6), norm: float = 10.0, fraction: float = 0.6) -> list[dict]:
    """Section 4: searches on thresholded cells whose first generation sees nothing."""
    from mei_core.presets import preset

    print(f"4. flat starts: 12 simple cells silent below {fraction}× their best response (norm {norm}, ±3)", flush=True)
    v1 = GroundTruthV1.random(seed=0)
    cells = [i for i, t in enumerate(v1.cell_types) if t == "simple"]
    starts = {"cma_es preset (centred start, 20 candidates)": preset("cma_es", input_shape=(1, 24, 24), input_stats={"mean": 0.0, "std": 1.0}, norm=norm),
              "cma_es_preset (RandomNormal(1) start, 10 candidates)": cma_es_preset("Gabor", norm=norm, max_generations=150)}
    variants = {"flat restarts (default)": {}, "cma's stops": {"flat_generations": None},
                "cma's stops, tolfun 0, tolfunhist 0": {"flat_generations": None, "cma_options": {"tolfun": 0, "tolfunhist": 0}}}
    rows = []
    for counts in (False, True):
        model = Thresholded(v1.primary[cells], norm, fraction, counts)
        for start, base in starts.items():
            for variant, change in variants.items():
                config = {**base, **change}
                started = time.perf_counter()
                found, r, evaluations, restarts, reasons = 0, [], [], [], {}
                for seed in seeds:
                    result = cma_es(UnitObjective(model, list(range(len(cells)))), config, [seed] * len(cells), (1, 24, 24))
                    population = config.get("population_size") or 4 + int(3 * math.log(8))
                    for k, cell in enumerate(cells):
                        evaluations.append(result.n_iterations[k] * population + 1)
                        restarts.append(result.n_restarts[k])
                        reasons[result.stop_reasons[k]] = reasons.get(result.stop_reasons[k], 0) + 1
                        if result.scores[k] > 0:
                            found += 1
                            r.append(filter_correlation(result.meis[k], v1, cell))
                row = {"model": "floor(relu(f·x − θ))" if counts else "relu(f·x − θ)", "start": start, "variant": variant,
                       "searches": len(evaluations), "found": found, "min_r_found": min(r, default=float("nan")),
                       "median_r_found": statistics.median(r) if r else float("nan"), "mean_evaluations": statistics.mean(evaluations),
                       "median_restarts": statistics.median(restarts), "max_restarts": max(restarts), "stop_reasons": reasons,
                       "seconds": time.perf_counter() - started}
                print(f"  {row['model']}, {start}, {variant}: found {found}/{row['searches']}, r {row['min_r_found']:.3f}–, "
                      f"median {row['median_r_found']:.3f}, {row['mean_evaluations']:.0f} evaluations, restarts median {row['median_restarts']:.0f} "
                      f"max {row['max_restarts']}, {reasons}", flush=True)
                rows.append(row)
    (out / "cmaes_flat.json").write_text(json.dumps(rows, indent=1))
    print("\n| model | start | stops | found a response | r of those (min / median) | evaluations per search | restarts (median / max) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['start']} | {row['variant']} | {row['found']}/{row['searches']} | {row['min_r_found']:.3f} / {row['median_r_found']:.3f} "
              f"| {row['mean_evaluations']:.0f} | {row['median_restarts']:.0f} / {row['max_restarts']} |")
    return rows


def table(rows: list[dict]) -> None:
    print("\n| method | median r simple | complex | DoG | model evaluations per item | s per item | stop |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        def cell(key: str) -> str:
            return f"{row[key]:.3f}" if key in row else ""
        if "median_spatial_r" in row:
            rs = f"spatial {row['median_spatial_r']:.3f} | temporal {row['median_temporal_r']:.3f} | {row['median_spikes']:.2f} spikes/frame"
        else:
            rs = f"{cell('median_r_simple')} | {cell('median_r_complex')} | {cell('median_r_dog')}"
        print(f"| {row['method']} | {rs} | {row['evaluations_per_item']} | {row['seconds_per_item']:.3f} | {', '.join(row['stop_reasons'])} |")


def figure(rows: list[dict], examples: dict, v1: GroundTruthV1, path: Path) -> None:
    """``path``: r per cell and time per item per method; ``path`` with ``_examples``: MEIs of three cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"simple": "tab:blue", "complex": "tab:orange", "dog": "tab:green"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [1.6, 1]})
    for i, row in enumerate(rows):
        if "r" in row:
            for r, kind in zip(row["r"], row["cell_types"]):
                top.scatter(i + (list(colours).index(kind) - 1) * 0.18, r, s=12, color=colours[kind])
        else:  # the retina: spatial and temporal r of the leading space-time component
            top.scatter([i - 0.1], [row["median_spatial_r"]], marker="s", color="k", s=20)
            top.scatter([i + 0.1], [row["median_temporal_r"]], marker="^", color="k", s=20)
    for kind, colour in colours.items():
        top.scatter([], [], color=colour, label=kind)
    top.scatter([], [], marker="s", color="k", label="retina spatial r (median)")
    top.scatter([], [], marker="^", color="k", label="retina temporal r (median)")
    top.legend(loc="lower left", fontsize=8, ncol=2)
    top.set_ylim(0.6, 1.01)
    top.set_ylabel("MEI vs true filter: r")
    top.grid(axis="y", alpha=0.3)
    top.set_title("GA: gradient ascent on the rates (pixels). CMA: CMA-ES on responses only (no graph). n10: L2 norm 10, else 24 (±3 clip)", fontsize=9)
    seconds = [row["seconds_per_item"] for row in rows]
    bottom.bar(range(len(rows)), seconds, color=["tab:gray" if row["label"].startswith(("GA", "small GA", "retina GA")) else "tab:purple" for row in rows])
    for i, row in enumerate(rows):
        bottom.text(i, seconds[i] * 1.1, str(row["evaluations_per_item"]).replace(" + ", "\n+"), ha="center", fontsize=6)
    bottom.set_yscale("log")
    bottom.set_ylim(min(seconds) / 2, max(seconds) * 6)
    bottom.set_ylabel("s per item (batched, 1 thread)\n[model evaluations per item]")
    bottom.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=35, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

    cells = [0, 12, 20]  # a simple, a complex and a DoG cell
    panels = [("truth", None)] + list(examples.items())
    fig, axes = plt.subplots(len(cells), len(panels), figsize=(2 * len(panels), 2 * len(cells)))
    for j, cell in enumerate(cells):
        for i, (name, meis) in enumerate(panels):
            ax = axes[j, i]
            ax.set_xticks([])
            ax.set_yticks([])
            if meis is None:
                ax.imshow(v1.filters(cell).reshape(-1, 24, 24)[0].numpy(), cmap="gray")
            elif cell in meis:
                ax.imshow(meis[cell][0].numpy(), cmap="gray")
                ax.set_xlabel(f"r = {filter_correlation(meis[cell], v1, cell):.3f}", fontsize=8)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_title(name, fontsize=9)
            if i == 0:
                ax.set_ylabel(f"{v1.cell_types[cell]} cell {cell}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path.with_name(path.stem + "_examples.png"), dpi=110)
    print(f"wrote {path} and {path.with_name(path.stem + '_examples.png')}")


if __name__ == "__main__":
    main()
