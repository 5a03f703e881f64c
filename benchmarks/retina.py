"""Timing of ``VirtualRetina`` against convis 0.6.3's ``Retina`` on the same 200×50×50 input (1 thread).

    .venv/bin/python benchmarks/retina.py                       # from the repository root
    .venv/bin/python benchmarks/retina.py --convis-python /tmp/convis-venv/bin/python --reps 5

Both models run Virtual Retina's human parvo defaults at convis' resolution (1 ms steps, 10 px/deg)
with an ON and an OFF ganglion layer and noisy spiking. convis computes per-pixel maps for both
layers, so ours reads out one ON and one OFF cell per pixel (N = 2·50·50 = 5000), spikes included
(one generator per item). convis runs in its own virtual environment (see
``benchmarks/make_convis_reference.py``), timed by a child process started by this script, in
turns with ours: ``--reps`` rounds of (ours, convis), each reporting its own median wall clock. When
no convis interpreter is found the script prints the issue's convis figure (0.46 s per pass) instead.

convis' default configuration has no gain control (λ_A = 0), which lets ours run the bipolar stage
inside its linear recursion; convis steps its feedback loop every frame anyway. So ours is also timed
with the feedback on (λ_A = 50 Hz: the per-frame bipolar ODE runs), the like-for-like amount of work.

Printed: median seconds per 200×50×50 pass at batch 1 (ours: spikes; rates only; spikes with the
feedback on; convis), and for 16 stimuli (ours in one batched call; convis: 16 passes, as its bipolar
stage reads batch item 0 only), with the ratios convis ÷ ours per round (median [min–max]).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mei_core.models.virtual_retina import VirtualRetina  # noqa: E402

FRAMES, SIZE = 200, (50, 50)
ISSUE_CONVIS_SECONDS = 0.46

CONVIS_CHILD = r"""
import json, sys, time
import numpy as np, torch
_linspace = np.linspace
np.linspace = lambda start, stop, num=50, *a, **k: _linspace(start, stop, int(num), *a, **k)
import convis
torch.set_num_threads(1)
reps, frames, h, w = (int(v) for v in sys.argv[1:5])
retina = convis.retina.Retina()
video = np.random.RandomState(0).rand(frames, h, w)
retina.run(video, dt=frames)  # warm-up (filters are built lazily)
times = []
for _ in range(reps):
    start = time.perf_counter()
    retina.run(video, dt=frames)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def _ours(batch: int) -> VirtualRetina:
    ys, xs = torch.meshgrid(torch.arange(SIZE[0]), torch.arange(SIZE[1]), indexing="ij")
    pixels = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    return VirtualRetina(size=SIZE, cells=torch.cat([pixels, pixels]).tolist(),
                         cell_layers=[0] * pixels.shape[0] + [1] * pixels.shape[0],
                         ganglion_layers=[{"sign": 1.0}, {"sign": -1.0}])


def _time_ours(model: VirtualRetina, batch: int, spikes: bool, reps: int) -> float:
    video = torch.rand(batch, 1, FRAMES, *SIZE, generator=torch.Generator().manual_seed(0))
    times = []
    for rep in range(reps + 1):  # the first run warms up
        generators = [torch.Generator().manual_seed(rep * 100 + i) for i in range(batch)]
        start = time.perf_counter()
        with torch.no_grad():
            model(video, spikes=spikes, generators=generators)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _time_convis(python: str, reps: int) -> float:
    out = subprocess.run([python, "-c", CONVIS_CHILD, str(reps), str(FRAMES), *map(str, SIZE)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--convis-python", default="/tmp/convis-venv/bin/python")
    parser.add_argument("--reps", type=int, default=5, help="rounds of (ours, convis)")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    have_convis = Path(args.convis_python).exists()
    print(f"load average at start: {os.getloadavg()[0]:.2f}; torch threads: {torch.get_num_threads()}")
    model = _ours(1)
    feedback = _ours(1)
    with torch.no_grad():
        feedback.adaptation_amplification.fill_(50.0)
    rounds = []
    for _ in range(args.reps):
        ours_spikes = _time_ours(model, 1, True, 3)
        ours_rates = _time_ours(model, 1, False, 3)
        ours_feedback = _time_ours(feedback, 1, True, 3)
        batched = _time_ours(model, args.batch, True, 2)
        theirs = _time_convis(args.convis_python, 3) if have_convis else ISSUE_CONVIS_SECONDS
        rounds.append((ours_spikes, ours_rates, ours_feedback, batched, theirs))
    spikes_1, rates_1, feedback_1, batched, convis_1 = (statistics.median(r[i] for r in rounds) for i in range(5))

    def ratios(i: int, stimuli: int = 1) -> str:
        values = [stimuli * r[4] / r[i] for r in rounds]
        return f"median {statistics.median(values):.1f} [{min(values):.1f}–{max(values):.1f}]"

    source = "measured here, same run" if have_convis else "the issue's figure (convis not found)"
    print(f"\nbatch 1, one {FRAMES}×{SIZE[0]}×{SIZE[1]} pass (median of {args.reps} rounds):")
    print(f"  ours, spikes                      {spikes_1 * 1e3:8.1f} ms")
    print(f"  ours, rates                       {rates_1 * 1e3:8.1f} ms")
    print(f"  ours, spikes, gain-control on     {feedback_1 * 1e3:8.1f} ms")
    print(f"  convis 0.6.3                      {convis_1 * 1e3:8.1f} ms   ({source})")
    print(f"  convis ÷ ours (spikes): {ratios(0)} (goal ≥ 10)")
    print(f"  convis ÷ ours (spikes, gain-control on): {ratios(2)}")
    print(f"\n{args.batch} stimuli:")
    print(f"  ours, one batched call, spikes   {batched:8.3f} s  ({batched / args.batch * 1e3:.1f} ms per stimulus)")
    print(f"  convis, {args.batch} passes               {convis_1 * args.batch:8.3f} s")
    print(f"  convis ÷ ours: {ratios(3, args.batch)}; ours batched ÷ ours one by one: "
          f"{batched / (args.batch * spikes_1):.2f}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
