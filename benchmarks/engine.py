"""Engine benchmarks: the overhead of ``mei_core``'s loop and what batching gains (CPU, one thread).

Run from the repository root: ``.venv/bin/python benchmarks/engine.py`` (``make bench`` runs it too);
about 2 minutes on 2 cores (up to 3 when the host is busy). ``--help`` lists the steps and repetitions
of each comparison; the defaults keep every call short and the repetitions many, because this machine's
speed drifts by tens of percent within a minute (``--steps-a 100 --steps-b 100 --reps 3`` is group 2 at
the full 100 steps: about 8 minutes).

Every ratio compares two things timed back to back (wall clock) in the same process: engine then bare
loop, or bare loop then engine, the order alternating so that neither always runs first. Printed: median
times, the median [min-max] of the per-repetition ratios, and the ratio of the fastest repetitions
("fastest": the least disturbed by other processes, a check on the median when the machine is busy;
the load average is printed at start and end).

1. Engine overhead: time per MEI of ``batched_gradient_ascent(UnitObjective(model, units),
   default_preset(iterations=N), seeds, shape)`` / a bare hand-written torch loop doing exactly the same
   steps (checked at start-up: both return bit-identical MEIs and scores), at batch 1 (100 steps) and
   batch 64 (20 steps: per step a batch-64 call costs as much as 20 batch-1 calls). Goal <= 1.05.
2. Batching gain: 64 MEIs computed one call at a time / the same 64 in one call, for the engine and for
   the bare loop, on two models; engine gain / bare gain, goal >= 0.95. The 64 single calls are
   interleaved MEI by MEI (engine, bare, bare, engine, ...); then the two batched calls.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .` too

from mei_core import batched_gradient_ascent, default_preset  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402
from mei_core.ops import gaussian_blur  # noqa: E402

N_UNITS = 64
N_MEIS = 64
OVERHEAD_GOAL = 1.05
GAIN_GOAL = 0.95
REFERENCE_BARE_GAIN = {"a": 3.5, "b": 1.7}  # measured before on this kind of machine


# --------------------------------------------------------------------------- models


def small_cnn(in_shape: tuple[int, int, int], channels: int, n_layers: int, kernel: int = 5, seed: int = 0) -> nn.Module:
    """``n_layers`` same-padded ``kernel``×``kernel`` convolutions with ELU, a linear readout to
    ``N_UNITS`` units and a softplus (the architecture of ``tests/helpers.small_cnn``).

    Frozen (``requires_grad=False``) and in eval mode, as a trained model should be when its MEIs
    are computed: the backward pass then computes the input gradient only.
    """
    in_channels, height, width = in_shape
    layers: list[nn.Module] = []
    previous = in_channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n_layers):
            layers += [nn.Conv2d(previous, channels, kernel, padding=kernel // 2), nn.ELU()]
            previous = channels
        model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * height * width, N_UNITS), nn.Softplus())
    return model.eval().requires_grad_(False)


MODELS = {
    # name: (description, input shape C×H×W, builder)
    "a": ("2 conv layers (5x5, 12 ch), 1x24x24", (1, 24, 24), lambda: small_cnn((1, 24, 24), 12, 2)),
    "b": ("3 conv layers (5x5, 12 ch), 1x36x64", (1, 36, 64), lambda: small_cnn((1, 36, 64), 12, 3)),
}


# --------------------------------------------------------------------------- the two runners


def engine_run(model: nn.Module, units: Sequence[int], seeds: Sequence[int], shape: tuple[int, ...], steps: int):
    result = batched_gradient_ascent(UnitObjective(model, units), default_preset(iterations=steps), seeds, shape)
    return result.meis, result.scores


def bare_run(model: nn.Module, units: Sequence[int], seeds: Sequence[int], shape: tuple[int, ...], steps: int):
    """``default_preset`` written out by hand: the same N optimiser steps, then one no-grad forward for
    the score. Its constants are read from ``default_preset`` so that the two cannot drift apart."""
    preset = default_preset(iterations=steps)
    lr = preset["optimizer"]["kwargs"]["lr"]
    blur = preset["precondition"][0]["kwargs"]
    sigma0, decay, min_sigma = blur["sigma"], blur["decay_factor"], blur["min_sigma"]
    norm = preset["postprocessing"][0]["kwargs"]["norm"]
    x_min, x_max = preset["postprocessing"][1]["kwargs"]["x_min"], preset["postprocessing"][1]["kwargs"]["x_max"]

    x = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    x.requires_grad_(True)
    optimizer = torch.optim.SGD([x], lr=lr)
    index = torch.as_tensor(units, dtype=torch.long).view(-1, 1)
    row_shape = (-1,) + (1,) * len(shape)
    for i in range(steps):
        activation = model(x).gather(1, index).squeeze(1)
        optimizer.zero_grad(set_to_none=True)
        (-activation.sum()).backward()
        with torch.no_grad():
            grad = x.grad
            sigma = sigma0 * decay**i
            if sigma > min_sigma:
                grad = gaussian_blur(grad, sigma)
            x.grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(row_shape)
        optimizer.step()
        with torch.no_grad():
            x.mul_((norm / x.flatten(1).norm(dim=1).clamp_min(1e-12)).view(row_shape)).clamp_(x_min, x_max)
    with torch.no_grad():
        score = model(x).gather(1, index).squeeze(1)
    return x.detach(), score


# --------------------------------------------------------------------------- timing


def timed(job: Callable[[], object]) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def pair(engine_job: Callable[[], object], bare_job: Callable[[], object], engine_first: bool) -> tuple[float, float]:
    """(engine seconds, bare seconds), the two timed back to back in the order given."""
    if engine_first:
        engine = timed(engine_job)
        return engine, timed(bare_job)
    bare = timed(bare_job)
    return timed(engine_job), bare


def summary(values: list[float], digits: int = 3) -> str:
    """The median, and the spread over repetitions (shows how stable a figure is)."""
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def verdict(value: float, goal: float, at_most: bool) -> str:
    ok = value <= goal if at_most else value >= goal
    return f"goal {'<=' if at_most else '>='} {goal:.2f}: {'ok' if ok else 'MISSED'}"


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


# --------------------------------------------------------------------------- the benchmarks


def check_same_steps(model: nn.Module, shape: tuple[int, ...]) -> None:
    """The bare loop must do what the engine does: identical MEIs and scores on a small batch."""
    units, seeds = [0, 5, 9, 63], [11, 12, 13, 14]
    engine_meis, engine_scores = engine_run(model, units, seeds, shape, 25)
    bare_meis, bare_scores = bare_run(model, units, seeds, shape, 25)
    if torch.equal(engine_meis, bare_meis) and torch.equal(engine_scores, bare_scores):
        print("  check: engine and bare loop return bit-identical MEIs and scores (4 MEIs, 25 steps)")
        return
    difference = (engine_meis - bare_meis).abs().max().item()
    if not torch.allclose(engine_meis, bare_meis, atol=1e-5) or not torch.allclose(engine_scores, bare_scores, atol=1e-5):
        raise SystemExit(f"the bare loop no longer does what the engine does (max |dMEI| = {difference:.3g})")
    print(f"  check: engine and bare loop agree to {difference:.1e} (not bit-identical)")


def overhead(model: nn.Module, shape: tuple[int, ...], steps: int, batch: int, reps: int) -> dict[str, float]:
    """Engine time / bare time for one call of ``batch`` MEIs; per repetition, the two calls back to back."""
    engine_times, bare_times = [], []
    for rep in range(reps):
        units = [(rep + u) % N_UNITS for u in range(batch)]
        seeds = [1000 + rep * batch + u for u in range(batch)]
        engine, bare = pair(
            lambda: engine_run(model, units, seeds, shape, steps),
            lambda: bare_run(model, units, seeds, shape, steps),
            engine_first=rep % 2 == 0,
        )
        engine_times.append(engine)
        bare_times.append(bare)
    ratios = [e / b for e, b in zip(engine_times, bare_times)]
    figures = {
        "engine_ms": statistics.median(engine_times) / batch * 1e3,
        "bare_ms": statistics.median(bare_times) / batch * 1e3,
        "ratio": statistics.median(ratios),
        "ratio_fastest": min(engine_times) / min(bare_times),
    }
    print(
        f"  batch {batch:2d}, {steps:3d} steps, {reps:2d} reps: engine {figures['engine_ms']:6.2f} ms/MEI, "
        f"bare {figures['bare_ms']:6.2f} ms/MEI; engine/bare {summary(ratios)}, fastest {figures['ratio_fastest']:.3f}"
        f"  {verdict(figures['ratio'], OVERHEAD_GOAL, at_most=True)}"
    )
    return figures


def batching_gain(name: str, model: nn.Module, shape: tuple[int, ...], steps: int, reps: int) -> dict[str, float]:
    """Per repetition: the 64 MEIs one call each (engine and bare back to back for every MEI), then the
    64 in one call (engine and bare back to back)."""
    units, seeds = list(range(N_MEIS)), list(range(N_MEIS))
    runs: dict[str, list[float]] = {key: [] for key in ("engine 1x64", "bare 1x64", "engine 64x1", "bare 64x1")}
    for rep in range(reps):
        engine_total = bare_total = 0.0
        for i, (unit, seed) in enumerate(zip(units, seeds)):
            engine, bare = pair(
                lambda: engine_run(model, [unit], [seed], shape, steps),
                lambda: bare_run(model, [unit], [seed], shape, steps),
                engine_first=(i + rep) % 2 == 0,
            )
            engine_total += engine
            bare_total += bare
        runs["engine 1x64"].append(engine_total)
        runs["bare 1x64"].append(bare_total)
        engine, bare = pair(
            lambda: engine_run(model, units, seeds, shape, steps),
            lambda: bare_run(model, units, seeds, shape, steps),
            engine_first=rep % 2 == 1,
        )
        runs["engine 64x1"].append(engine)
        runs["bare 64x1"].append(bare)

    figures: dict[str, float] = {}
    gains: dict[str, list[float]] = {}
    for runner in ("bare", "engine"):
        sequential, batched = runs[f"{runner} 1x64"], runs[f"{runner} 64x1"]
        gains[runner] = [s / b for s, b in zip(sequential, batched)]
        figures[f"{runner}_sequential_s"] = statistics.median(sequential)
        figures[f"{runner}_batched_s"] = statistics.median(batched)
        figures[f"{runner}_gain"] = statistics.median(gains[runner])
        figures[f"{runner}_gain_fastest"] = min(sequential) / min(batched)
        print(
            f"  {runner:6s}: 64 one at a time {figures[f'{runner}_sequential_s']:5.2f} s, "
            f"64 in one call {figures[f'{runner}_batched_s']:5.2f} s; gain {summary(gains[runner], 2)}, "
            f"fastest {figures[f'{runner}_gain_fastest']:.2f}"
            + (f"   (bare gain measured before: {REFERENCE_BARE_GAIN[name]})" if runner == "bare" else "")
        )
    relative = [e / b for e, b in zip(gains["engine"], gains["bare"])]
    figures["relative"] = statistics.median(relative)
    figures["relative_fastest"] = figures["engine_gain_fastest"] / figures["bare_gain_fastest"]
    print(
        f"  engine gain / bare gain {summary(relative)}, fastest {figures['relative_fastest']:.3f}"
        f"  {verdict(figures['relative'], GAIN_GOAL, at_most=False)}"
    )
    # engine gain / bare gain = (engine/bare one at a time) / (engine/bare in one call): show both factors
    one = [e / b for e, b in zip(runs["engine 1x64"], runs["bare 1x64"])]
    batched = [e / b for e, b in zip(runs["engine 64x1"], runs["bare 64x1"])]
    figures["overhead_1"], figures["overhead_64"] = statistics.median(one), statistics.median(batched)
    print(f"  (= engine/bare time one at a time {summary(one)} / engine/bare time in one call {summary(batched)})")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-1", type=int, default=100, help="group 1, batch 1: optimiser steps (default 100)")
    parser.add_argument("--reps-1", type=int, default=21, help="group 1, batch 1: repetitions (default 21)")
    parser.add_argument("--steps-64", type=int, default=20, help="group 1, batch 64: optimiser steps (default 20)")
    parser.add_argument("--reps-64", type=int, default=9, help="group 1, batch 64: repetitions (default 9)")
    parser.add_argument("--steps-a", type=int, default=30, help="group 2, model (a): optimiser steps (default 30)")
    parser.add_argument("--steps-b", type=int, default=10, help="group 2, model (b): optimiser steps (default 10)")
    parser.add_argument("--reps", type=int, default=5, help="group 2: repetitions (default 5)")
    args = parser.parse_args()

    started = time.perf_counter()
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    print(f"mei_core engine benchmark: torch {torch.__version__}, {torch.get_num_threads()} thread, "
          f"{os.cpu_count()} cores ({cpu}), python {platform.python_version()}, load average {load()}")
    print("Both runners do N optimiser steps (forward, pick the unit, backward of the sum, Gaussian blur of the gradient")
    print("with sigma 1.5*0.99^i, divide by per-row mean |g|, SGD step, rescale rows to L2 norm 10, clip to [-3, 3])")
    print("then one final forward for the score (the bare loop's under no_grad; the engine's is its (N+1)-th evaluation).")
    print("Times: medians. Ratios: median [min-max] of the per-repetition ratios; 'fastest': ratio of the fastest runs.")

    models = {name: builder() for name, (_, _, builder) in MODELS.items()}
    for name, (_, shape, _) in MODELS.items():  # warm-up: first calls import, allocate, fill caches
        for runner in (engine_run, bare_run):
            runner(models[name], [0], [0], shape, 3)
            runner(models[name], list(range(N_MEIS)), list(range(N_MEIS)), shape, 2)

    print(f"\n1. Engine overhead: engine time / bare-loop time per MEI, model (a) {MODELS['a'][0]}")
    check_same_steps(models["a"], MODELS["a"][1])
    overhead(models["a"], MODELS["a"][1], args.steps_1, batch=1, reps=args.reps_1)
    overhead(models["a"], MODELS["a"][1], args.steps_64, batch=64, reps=args.reps_64)

    print(f"\n2. Batching gain: time of 64 MEIs one call at a time / the same 64 in one call, {args.reps} reps")
    for name, steps in (("a", args.steps_a), ("b", args.steps_b)):
        description, shape, _ = MODELS[name]
        print(f" ({name}) {description}, {steps} steps, units 0-63, seeds 0-63")
        batching_gain(name, models[name], shape, steps, args.reps)

    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average {load()}")


if __name__ == "__main__":
    main()
