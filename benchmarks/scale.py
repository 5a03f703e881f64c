"""Scale benchmark: time per optimisation step against batch size, the engine against a bare
vectorised torch loop, without and with random transforms, on the CPU and on CUDA when present.

Run from the repository root: ``.venv/bin/python benchmarks/scale.py`` (``--help`` for options; on a
busy 2-core machine the CPU part takes ≈ 10 minutes, ``--quick`` ≈ 2). One torch thread on the CPU.

For every (device, model, batch size), the six runs (engine and bare loop × no transform, ``Jitter(2)``,
``RandomCrop``) are timed back to back, ``--reps`` times, the order rotating from one repetition to the
next, so each ratio compares runs made under the same load. Printed per batch size: median ms per
step of each run, engine/bare for each transform (median [min–max] over repetitions) and what
``Jitter`` adds to a plain step, for the engine and for the bare loop; then the same ratios of the
fastest repetitions (the least disturbed by other processes on a shared machine).

- Models: ``tiny``: a linear readout of 64 units from 1×16×16 (the cheapest possible forward, so the
  loop's own costs show); ``demo``: ``mei_core.demo.v1.build_demo_cnn`` (two valid convolutions, 16
  channels, 9×9 and 7×7, factorised readout to 64 units) on 1×24×24.
- The method: SGD lr 0.5 on the per-row normalised gradient (``DivideByMeanOfAbsolute``), rows rescaled
  to L2 norm 10 (``ChangeNorm``) and clipped to ±3; ``NumIterations``. With ``RandomCrop`` the optimised
  image is 4 pixels larger than what the model sees.
- The bare loop does the same steps by hand, drawing its shifts and offsets with one
  ``torch.randint`` per step from one generator (what a hand-written loop would do; the engine draws
  from per-item counter-based streams instead, so an item's MEI does not depend on its batch) and
  applying them with the same gather (``mei_core.ops.gather_windows``). Without transforms both
  return bit-identical MEIs (checked at start).
- Times on the CPU are process CPU time (steadier than wall-clock time on a shared machine: one torch
  thread, so it is the work itself); on CUDA, wall-clock time between synchronisations.
- A time per step is the difference of two calls, one of 2N steps and one of N, divided by N: what a
  step costs, without the per-call set-up (initial guesses, method build) and final scoring, which
  are the same for every N. N shrinks with the batch size (``--rows``: rows × N, N at most 200) but is at least 2.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .` too

from mei_core import batched_gradient_ascent  # noqa: E402
from mei_core.demo.v1 import build_demo_cnn  # noqa: E402
from mei_core.objectives import UnitObjective  # noqa: E402
from mei_core.ops import gather_windows  # noqa: E402

BATCHES = (1, 16, 64, 256, 1024, 4096)
N_UNITS = 64
LR, NORM, CLIP, JITTER, CROP_MARGIN = 0.5, 10.0, 3.0, 2, 4
TRANSFORMS = ("none", "jitter", "crop")


def tiny_model(size: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, N_UNITS))
    return model.eval().requires_grad_(False)


def demo_model(size: int) -> nn.Module:
    return build_demo_cnn(n_neurons=N_UNITS, in_shape=(1, size, size)).eval().requires_grad_(False)


MODELS = {"tiny": (16, tiny_model), "demo": (24, demo_model)}


def method(steps: int, transform: str, size: int) -> dict:
    config = {
        "initial": {"path": "RandomNormal"},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": LR}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": steps}},
        "precondition": [{"path": "DivideByMeanOfAbsolute"}],
        "postprocessing": [{"path": "ChangeNorm", "kwargs": {"norm": NORM}}, {"path": "ClipRange", "kwargs": {"x_min": -CLIP, "x_max": CLIP}}],
    }
    if transform == "jitter":
        config["transform"] = {"path": "Jitter", "kwargs": {"max_jitter": JITTER}}
    elif transform == "crop":
        config["transform"] = {"path": "RandomCrop", "kwargs": {"height": size, "width": size}}
    return config


def engine_run(model, units, seeds, size, steps, transform, device):
    optimised = size + CROP_MARGIN if transform == "crop" else size
    result = batched_gradient_ascent(UnitObjective(model, units), method(steps, transform, size), seeds, (1, optimised, optimised), device)
    return result.meis, result.scores


def bare_run(model, units, seeds, size, steps, transform, device):
    optimised = size + CROP_MARGIN if transform == "crop" else size
    x = torch.cat([torch.randn((1, 1, optimised, optimised), generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(device)
    x.requires_grad_(True)
    optimizer = torch.optim.SGD([x], lr=LR)
    index = torch.as_tensor(units, device=device).view(-1, 1)
    generator = torch.Generator(device=device).manual_seed(0)
    rows = (-1, 1, 1, 1)

    def seen(x):
        if transform == "jitter":
            shifts = torch.randint(-JITTER, JITTER + 1, (len(x), 2), generator=generator, device=device)
            return gather_windows(x, -shifts[:, 0], -shifts[:, 1], optimised, optimised, circular=True)
        if transform == "crop":
            offsets = torch.randint(0, CROP_MARGIN + 1, (len(x), 2), generator=generator, device=device)
            return gather_windows(x, offsets[:, 0], offsets[:, 1], size, size)
        return x

    for _ in range(steps):
        activation = model(seen(x)).gather(1, index).squeeze(1)
        (grad,) = torch.autograd.grad(-activation.sum(), x)
        with torch.no_grad():
            x.grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(rows)
        optimizer.step()
        with torch.no_grad():
            x.mul_((NORM / x.flatten(1).norm(dim=1).clamp_min(1e-12)).view(rows)).clamp_(-CLIP, CLIP)
    with torch.no_grad():
        centred = x if transform != "crop" else x[..., CROP_MARGIN // 2 : CROP_MARGIN // 2 + size, CROP_MARGIN // 2 : CROP_MARGIN // 2 + size]
        score = model(centred).gather(1, index).squeeze(1)
    return x.detach().cpu(), score.cpu()


def timed(job: Callable[[], object], device: str) -> float:
    """CPU: the process's CPU time (one thread: the work itself, not the time spent waiting for a
    core on a shared machine). CUDA: wall-clock time between two synchronisations."""
    if device != "cuda":
        started = time.process_time()
        job()
        return time.process_time() - started
    torch.cuda.synchronize()
    started = time.perf_counter()
    job()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.2f}-{max(values):.2f}]"


def check_same_steps(model: nn.Module, size: int, device: str) -> None:
    units, seeds = [0, 5, 9, 63], [11, 12, 13, 14]
    a = engine_run(model, units, seeds, size, 10, "none", device)
    b = bare_run(model, units, seeds, size, 10, "none", device)
    same = torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    close = torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-4)
    if not close:
        raise SystemExit(f"{device}: the bare loop no longer does what the engine does (max |dMEI| {(a[0] - b[0]).abs().max():.2g})")
    print(f"  check ({device}): engine and bare loop return {'bit-identical' if same else 'equal (to 1e-5)'} MEIs and scores without transforms")


def measure(name: str, model: nn.Module, size: int, device: str, batch: int, steps: int, reps: int) -> dict[str, list[float]]:
    units = [u % N_UNITS for u in range(batch)]
    seeds = list(range(batch))
    runs = [(runner, transform) for transform in TRANSFORMS for runner in ("engine", "bare")]
    times: dict[str, list[float]] = {f"{r} {t}": [] for r, t in runs}
    for rep in range(reps):
        shift = rep % len(runs)
        for runner, transform in runs[shift:] + runs[:shift]:  # rotate the order
            run = engine_run if runner == "engine" else bare_run
            short = timed(lambda: run(model, units, seeds, size, steps, transform, device), device)
            long = timed(lambda: run(model, units, seeds, size, 2 * steps, transform, device), device)
            times[f"{runner} {transform}"].append(max(long - short, 1e-9) / steps * 1e3)
    return times


def report(batch: int, steps: int, times: dict[str, list[float]]) -> dict[str, float]:
    ms = {key: statistics.median(values) for key, values in times.items()}
    ratios = {t: [e / b for e, b in zip(times[f"engine {t}"], times[f"bare {t}"])] for t in TRANSFORMS}
    jitter_cost = {r: [j / p for j, p in zip(times[f"{r} jitter"], times[f"{r} none"])] for r in ("engine", "bare")}
    print(
        f"  {batch:5d} {steps:4d}  "
        + "  ".join(f"{ms[f'engine {t}']:8.2f} {ms[f'bare {t}']:8.2f}" for t in TRANSFORMS)
        + "   " + "  ".join(f"{summary(ratios[t]):>19s}" for t in TRANSFORMS)
        + f"   {100 * (statistics.median(jitter_cost['engine']) - 1):+6.1f}% {100 * (statistics.median(jitter_cost['bare']) - 1):+6.1f}%",
        flush=True,
    )
    fastest = {t: min(times[f"engine {t}"]) / min(times[f"bare {t}"]) for t in TRANSFORMS}
    print(f"  {'':11s}fastest repetitions: engine/bare " + ", ".join(f"{t} {fastest[t]:.3f}" for t in TRANSFORMS)
          + f"; Jitter adds {100 * (min(times['engine jitter']) / min(times['engine none']) - 1):+.1f}% (engine), "
          f"{100 * (min(times['bare jitter']) / min(times['bare none']) - 1):+.1f}% (bare)", flush=True)
    return {f"ratio {t}": statistics.median(ratios[t]) for t in TRANSFORMS}


def stop_checks(device: str, reps: int) -> None:
    """Whole-call time of an early-stopped batch against ``stop_check_every``: checking often drops
    stopped items from the forward pass sooner, each check costs a host sync (on a GPU: the queue
    drains). 256 items of the demo CNN, EarlyStopper(patience 5, min_delta 0.02), at most 150 steps."""
    size, build = MODELS["demo"]
    model = build(size).to(device)
    units, seeds = [u % N_UNITS for u in range(256)], list(range(256))
    config = method(150, "jitter", size)
    config["stopper"] = {"path": "EarlyStopper", "kwargs": {"patience": 5, "min_delta": 0.02, "max_iterations": 150}}
    everies = (1, 5, 10, 25, 50)
    times: dict[int, list[float]] = {every: [] for every in everies}
    for rep in range(reps):
        for every in everies[rep % len(everies):] + everies[: rep % len(everies)]:
            job = lambda: batched_gradient_ascent(UnitObjective(model, units), {**config, "stop_check_every": every}, seeds, (1, size, size), device)  # noqa: E731
            times[every].append(timed(job, device))
    result = batched_gradient_ascent(UnitObjective(model, units), config, seeds, (1, size, size), device)
    steps = sorted(result.n_iterations)
    print(f"\n{device}, stop checks: 256 items of the demo CNN stopping at steps {steps[0]}-{steps[-1]} (median {steps[128]})")
    for every in everies:
        print(f"  stop_check_every {every:3d}: {statistics.median(times[every]):6.2f} s per call "
              f"({statistics.median(times[every]) / statistics.median(times[1]):.3f} of checking every step)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="batch sizes (default 1 16 64 256 1024 4096)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of every run (default 5)")
    parser.add_argument("--rows", type=int, default=32768, help="rows × steps per call on the CPU (default 32768, at most 200 steps; ×16 on CUDA)")
    parser.add_argument("--quick", action="store_true", help="batches 1 64 512, 3 repetitions")
    parser.add_argument("--stop-checks", action="store_true", help="only the stop_check_every comparison")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.reps = [1, 64, 512], 3
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    started = time.perf_counter()
    print(f"mei_core scale benchmark: torch {torch.__version__}, {os.cpu_count()} cores, load average "
          f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}"
          + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print("ms per step (median); ratios: engine/bare per repetition, median [min-max]; Jitter: jitter step / plain step - 1")
    if args.stop_checks:
        for device in devices:
            stop_checks(device, args.reps)
        return
    for device in devices:
        for name in args.models:
            size, build = MODELS[name]
            model = build(size).to(device)
            print(f"\n{device}, model {name} (1x{size}x{size}, {N_UNITS} units)")
            check_same_steps(model, size, device)
            for transform in TRANSFORMS:  # warm-up: imports, allocator, kernels
                engine_run(model, [0, 1], [0, 1], size, 2, transform, device)
                bare_run(model, [0, 1], [0, 1], size, 2, transform, device)
            print("  batch steps    engine     bare  (none)  engine     bare  (jitter) engine    bare  (crop)"
                  "      engine/bare none    engine/bare jitter      engine/bare crop   Jitter: engine  bare")
            budget = args.rows * (16 if device == "cuda" else 1)
            for batch in args.batches:
                steps = max(2, min(200, budget // batch))
                report(batch, steps, measure(name, model, size, device, batch, steps, args.reps))
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
