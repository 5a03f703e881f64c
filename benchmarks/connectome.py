"""Connectome model benchmark: one target-activation step on a 5,000-neuron connectome (CPU, 1 thread).

Run from the repository root: ``.venv/bin/python benchmarks/connectome.py`` (about 30 s; ``--help``).

What is timed, per iteration: forward of ``MultilayeredNetwork`` (5,000 neurons, 250,000 synapses,
batch 4, 5 layers) → target-matching loss (each row's mean squared error to 20 target activations of
its own, plus connectome_interpreter's L1+L2 penalties on the input and on the activations) →
backward → Adam step on the input. Two implementations of the same forward:

* **ours**: ``mei_core.models.connectome.MultilayeredNetwork`` (CSR weights with int32 indices, cached
  CSR transpose, a custom autograd Function whose backward is ``W^T @ grad``);
* **COO baseline**: the straightforward forward of connectome_interpreter 2.9.5, written out below:
  a coalesced COO weight tensor and ``torch.sparse.mm`` (whose backward transposes and coalesces ``W``
  on every call).

Both share the loss and optimiser code, so the difference is the model alone. At start-up the script
checks that both give the same activations and the same input gradient (``allclose``). Timing: wall
clock, in repetitions of a few iterations each, alternating which implementation runs first; printed
are the median ms/iteration of each, the median [min-max] of the per-repetition speed-up ratios and
the ratio of the fastest repetitions (the least disturbed on a shared machine). A second comparison
times forward+backward alone (no loss, no Adam).
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

from torch import Tensor, nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .` too

from mei_core.models.connectome import MultilayeredNetwork, TargetActivation, random_connectome  # noqa: E402

N_NEURONS, N_SYNAPSES, N_SENSORY, BATCH, LAYERS = 5000, 250_000, 500, 4, 5
N_TARGETS = 20  # per row
IN_REG, OUT_REG, LR = 0.01, 0.01, 0.1
SPEEDUP_GOAL = 10.0


class COOBaseline(nn.Module):
    """connectome_interpreter 2.9.5's forward with group slopes/biases, straightforwardly: COO weights,
    ``torch.sparse.mm``, state neurons × batch."""

    def __init__(self, model: MultilayeredNetwork):
        super().__init__()
        self.weights = model.weights.to_sparse_coo().coalesce()
        self.sensory_indices = model.sensory_indices
        self.num_layers, self.threshold = model.num_layers, model.threshold
        self.slope = model.slope.detach()[model.group_index].unsqueeze(1)
        self.bias = model.raw_biases.detach().abs()[model.group_index].unsqueeze(1)

    def activation(self, x: Tensor) -> Tensor:
        x = self.slope * x + self.bias
        return torch.tanh(torch.where(x >= self.threshold, x, torch.zeros_like(x)))

    def forward(self, inputs: Tensor) -> Tensor:
        inputs = torch.where(inputs >= self.threshold, inputs, torch.zeros_like(inputs))
        inputs = torch.where(inputs > 1, torch.ones_like(inputs), inputs)
        full_input = torch.zeros(self.weights.size(1), inputs.size(0), dtype=inputs.dtype)
        full_input = full_input.index_add(0, self.sensory_indices, inputs[:, :, 0].t())
        x = full_input
        acts = []
        for layer in range(self.num_layers):
            x = self.activation(torch.sparse.mm(self.weights, x))
            if layer != self.num_layers - 1:
                x = x.clone()
                x[self.sensory_indices, :] = x[self.sensory_indices, :] + inputs[:, :, layer + 1].t()
                x = torch.where(x > 1, torch.ones_like(x), x)
            acts.append(x.t())
        return torch.stack(acts, dim=-1)


def l1_plus_l2(values: Tensor) -> Tensor:
    """Per row: L1 + L2 norm (connectome_interpreter's default regulariser, per row)."""
    flat = values.reshape(values.shape[0], -1)
    return flat.abs().sum(1) + flat.norm(dim=1)


def make_step(model: nn.Module, targets: TargetActivation, start: Tensor) -> tuple[Tensor, Callable[[], None]]:
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=LR)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        activations = model(x)
        loss = targets.loss(activations) + IN_REG * l1_plus_l2(x) + OUT_REG * l1_plus_l2(activations)
        loss.sum().backward()
        optimizer.step()

    return x, step


def timed(fn: Callable[[], None], iterations: int) -> float:
    started = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - started) / iterations * 1e3


def compare(name: str, ours: Callable[[], None], baseline: Callable[[], None], reps: int, iters_ours: int, iters_base: int) -> float:
    ours(), baseline()  # warm-up
    times_ours, times_base, ratios = [], [], []
    for rep in range(reps):
        if rep % 2 == 0:
            t_ours, t_base = timed(ours, iters_ours), timed(baseline, iters_base)
        else:
            t_base, t_ours = timed(baseline, iters_base), timed(ours, iters_ours)
        times_ours.append(t_ours)
        times_base.append(t_base)
        ratios.append(t_base / t_ours)
    median = statistics.median(ratios)
    print(f"\n{name} ({reps} repetitions, {iters_ours} / {iters_base} iterations each)")
    print(f"  ours (CSR + cached transpose): {statistics.median(times_ours):8.2f} ms/iteration (fastest {min(times_ours):.2f})")
    print(f"  COO torch.sparse.mm baseline: {statistics.median(times_base):8.2f} ms/iteration (fastest {min(times_base):.2f})")
    print(f"  speed-up: median {median:.1f}x [{min(ratios):.1f}-{max(ratios):.1f}], fastest runs {min(times_base) / min(times_ours):.1f}x")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="repetitions of each comparison (default 15)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, load average {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()

    connectome = random_connectome(N_NEURONS, N_SYNAPSES, N_SENSORY, seed=0)
    model = MultilayeredNetwork(
        connectome.weights, connectome.sensory_indices, num_layers=LAYERS, idx_to_group=connectome.idx_to_group
    ).requires_grad_(False)
    baseline = COOBaseline(model)
    generator = torch.Generator().manual_seed(0)
    start = torch.rand(BATCH, N_SENSORY, LAYERS, generator=generator)
    non_sensory = torch.ones(N_NEURONS, dtype=torch.bool)
    non_sensory[model.sensory_indices] = False
    candidates = non_sensory.nonzero().flatten()
    import pandas as pd

    rows = []
    for b in range(BATCH):  # every row its own targets
        picks = candidates[torch.randperm(len(candidates), generator=generator)[:N_TARGETS]]
        layers = torch.randint(1, LAYERS, (N_TARGETS,), generator=generator)
        values = torch.rand(N_TARGETS, generator=generator)
        rows += [{"batch": b, "layer": int(l), "neuron": int(n), "value": float(v)} for n, l, v in zip(picks, layers, values)]
    targets = TargetActivation(pd.DataFrame(rows))
    print(f"{model}\nbatch {BATCH}, {N_TARGETS} targets per row, built in {time.perf_counter() - started:.1f} s")

    # the same activations and input gradients, or the timing means nothing
    x_ours, x_base = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    a_ours, a_base = model(x_ours), baseline(x_base)
    (targets.loss(a_ours) + l1_plus_l2(a_ours)).sum().backward()
    (targets.loss(a_base) + l1_plus_l2(a_base)).sum().backward()
    a_diff = float((a_ours - a_base).detach().abs().max())
    g_diff = float((x_ours.grad - x_base.grad).abs().max())
    assert torch.allclose(a_ours.detach(), a_base.detach(), atol=1e-5, rtol=1e-5), a_diff
    assert torch.allclose(x_ours.grad, x_base.grad, atol=1e-5, rtol=1e-4), g_diff
    print(f"check: activations max |diff| {a_diff:.1e}, input gradients max |diff| {g_diff:.1e} "
          f"(of max |gradient| {float(x_base.grad.abs().max()):.2f})")

    _, step_ours = make_step(model, targets, start)
    _, step_base = make_step(baseline, targets, start)
    ratio = compare("forward + loss + backward + Adam step", step_ours, step_base, args.reps, 20, 2)

    def fwd_bwd(net: nn.Module) -> Callable[[], None]:
        x = start.clone().requires_grad_(True)
        return lambda: net(x).sum().backward()

    compare("forward + backward only", fwd_bwd(model), fwd_bwd(baseline), args.reps, 20, 2)

    # the whole target-maximisation iteration as users run it: the batched engine with the
    # target-activation objective, L1+L2 on the input and the activations, Adam, clip to [0, 1]
    from mei_core import batched_gradient_ascent
    from mei_core.objectives import TargetActivationObjective

    per_row = [[[r["layer"], r["neuron"], r["value"]] for r in rows if r["batch"] == b] for b in range(BATCH)]

    def engine_run(net: nn.Module, iterations: int) -> Callable[[], None]:
        config = {
            "initial": {"path": "RandomUniform", "kwargs": {"low": 0.0, "high": 1.0}},
            "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05}},
            "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
            "regularization": {"path": "L1L2", "kwargs": {"l1": IN_REG, "l2": IN_REG}},
            "postprocessing": {"path": "ClipRange", "kwargs": {"x_min": 0.0, "x_max": 1.0}},
        }
        objective = TargetActivationObjective(net, per_row, l1=OUT_REG, l2=OUT_REG)
        return lambda: batched_gradient_ascent(objective, config, seeds=list(range(BATCH)), shape=(N_SENSORY, LAYERS))

    engine_ratio = compare("engine target maximisation, 10 iterations per call incl. set-up (times are per call)",
                           engine_run(model, 10), engine_run(baseline, 10), max(3, args.reps // 3), 1, 1)
    print(f"  engine speed-up over the COO network: {engine_ratio:.1f}x")
    verdict = "meets" if ratio >= SPEEDUP_GOAL else "MISSES"
    print(f"\nheadline speed-up {ratio:.1f}x {verdict} the goal of >= {SPEEDUP_GOAL:.0f}x; "
          f"total {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
