"""Video MEIs: N = 32 neurons one at a time (openretina's way) ÷ all 32 in one batch, for the engine and
for a bare torch loop doing the same steps, side by side; and the engine's overhead over the bare loop.

Model: an openretina-sized 3-D CNN (2 → 8 → 8 channels, space-time separable-ish kernels, ≈ 13k
parameters) on 1×2×50×18×16 stimuli, answering B×T'×32. Method: the Höfling 2024 preset (SGD lr 100,
joint norm 30, per-channel clip, range penalty 0.1), objective: mean response over frames 10–20.
Run: `.venv/bin/python benchmarks/video.py` (≈ 1–2 min, 1 torch thread).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch import nn  # noqa: E402

from mei_core import batched_gradient_ascent  # noqa: E402
from mei_core.presets import hoefling2024 as hoefling_2024_preset  # noqa: E402
from mei_core.objectives import IncreaseObjective, SliceMeanReducer  # noqa: E402

N, STEPS, SHAPE = 32, 10, (2, 50, 18, 16)
RANGES = torch.tensor([[-0.654, 6.269], [-0.913, 6.269]])


class RetinaCNN(nn.Module):
    def __init__(self):
        super().__init__()
        generator = torch.random.get_rng_state()
        torch.manual_seed(0)
        self.core = nn.Sequential(nn.Conv3d(2, 8, (11, 5, 5)), nn.ELU(), nn.Conv3d(8, 8, (11, 5, 5)), nn.ELU())
        self.readout = nn.Linear(8 * 10 * 8, N)
        torch.random.set_rng_state(generator)
        self.requires_grad_(False).eval()

    def forward(self, x, data_key=None):
        features = self.core(x)  # B×8×T'×10×8
        b, c, t, h, w = features.shape
        return nn.functional.softplus(self.readout(features.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w)))  # B×T'×N


def bare(model, units, seeds):
    """The same steps by hand: SGD on −(slice-mean response − range penalty), joint norm, per-channel clip."""
    x = torch.cat([torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(s)) * 0.1 for s in seeds]).requires_grad_(True)
    optimizer = torch.optim.SGD([x], lr=100.0)
    low, high = RANGES[:, 0].view(1, 2, 1, 1, 1), RANGES[:, 1].view(1, 2, 1, 1, 1)
    index = torch.tensor(units)
    for _ in range(STEPS):
        response = model(x)[:, 10:20].gather(2, index.view(-1, 1, 1).expand(-1, 10, 1)).squeeze(2).mean(1)
        excess = (torch.relu(low - x) + torch.relu(x - high)).flatten(1).sum(1)
        norm_excess = torch.relu(x.flatten(1).norm(dim=1) - 30.0)
        (grad,) = torch.autograd.grad(-(response - 0.1 * (excess + norm_excess)).sum(), x)
        x.grad = grad
        optimizer.step()
        with torch.no_grad():
            x.mul_(30.0 / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1))
            x.copy_(torch.maximum(torch.minimum(x, high), low))
    with torch.no_grad():
        model(x)
    return x.detach()


def engine(model, units, seeds):
    objective = IncreaseObjective(model, units, response_reducer=SliceMeanReducer(axis=0, start=10, length=10))
    return batched_gradient_ascent(objective, hoefling_2024_preset(STEPS), seeds, SHAPE).meis


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(reps: int = 5) -> None:
    model = RetinaCNN()
    print(f"model {sum(p.numel() for p in model.parameters())} parameters, stimulus 1×{'×'.join(map(str, SHAPE))}, {STEPS} steps, N = {N}")
    units, seeds = list(range(N)), list(range(N))
    one_e = [engine(model, [u], [s]) for u, s in zip(units[:2], seeds[:2])]
    one_b = [bare(model, [u], [s]) for u, s in zip(units[:2], seeds[:2])]
    print(f"check: engine and bare loop MEIs max |Δ| {max(float((a - b).abs().max()) for a, b in zip(one_e, one_b)):.1e}")
    gains = {"engine": [], "bare": []}
    singles = {"engine": [], "bare": []}
    batches = {"engine": [], "bare": []}
    runners = {"engine": engine, "bare": bare}
    for rep in range(reps):
        order = ("engine", "bare") if rep % 2 == 0 else ("bare", "engine")
        for name in order:
            single = timed(lambda: [runners[name](model, [u], [s]) for u, s in zip(units, seeds)])
            batch = timed(lambda: runners[name](model, units, seeds))
            singles[name].append(single)
            batches[name].append(batch)
            gains[name].append(single / batch)
    for name in ("bare", "engine"):
        print(f"{name:6}: 32 one at a time {statistics.median(singles[name]):.2f} s ({statistics.median(singles[name]) / N / STEPS * 1000:.1f} ms/iteration), "
              f"32 in one batch {statistics.median(batches[name]):.2f} s; gain {statistics.median(gains[name]):.2f}×")
    keep = [e / b for e, b in zip(gains["engine"], gains["bare"])]
    overhead = [e / b for e, b in zip(batches["engine"], batches["bare"])]
    print(f"engine gain ÷ bare gain {statistics.median(keep):.3f} [{min(keep):.3f}–{max(keep):.3f}]  (goal ≥ 0.95)")
    print(f"engine/bare time, batch of 32: {statistics.median(overhead):.3f} [{min(overhead):.3f}–{max(overhead):.3f}]  (goal ≤ 1.05)")


if __name__ == "__main__":
    main()
