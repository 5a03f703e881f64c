"""Reference outputs of convis 0.6.3's Virtual Retina for tests/fixtures/convis_reference.json.

Not part of the test suite; it needs convis in a separate virtual environment (never the project's):

    python3 -m venv /tmp/convis-venv
    /tmp/convis-venv/bin/pip install torch convis==0.6.3 "numpy<2" scipy
    /tmp/convis-venv/bin/python benchmarks/make_convis_reference.py   # from the repository root

convis 0.6.3 predates numpy's refusal of float sample counts in ``np.linspace``; the shim below casts
them to int (the only change needed on numpy 1.26; ``np.math`` still exists there).

Configuration: ``convis.retina.Retina()`` as shipped — Virtual Retina's human parvocellular file at
convis' resolution (1 ms steps, 10 px/deg, luminance used as given), which has no contrast gain
control (adaptation-feedback-amplification__Hz = 0). The stimulus (:func:`reference_stimulus`) is a
closed form, so the test rebuilds it instead of storing it. Stored: the OPL current, the bipolar
potential and both ganglion layers' input currents (before spiking) at :data:`PIXELS`, every frame.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

FRAMES = 400
SIZE = (24, 24)
PIXELS = [(12, 12), (12, 8), (8, 15), (16, 16), (4, 4)]  # (y, x)
OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "convis_reference.json"


def reference_stimulus(frames: int = FRAMES, size: tuple[int, int] = SIZE) -> list[list[list[float]]]:
    """``T×H×W`` luminance in [0.1, 0.9]: mean 0.5, a disc of radius 4 px at the centre stepping to
    +0.25 for frames 100–249, and a grating (period 8 px, amplitude 0.15) drifting at 4 Hz (1 ms
    frames) from frame 150 on. Plain Python so both environments compute it identically."""
    h, w = size
    cy, cx = (h - 1) / 2, (w - 1) / 2
    video = []
    for t in range(frames):
        frame = []
        for y in range(h):
            row = []
            for x in range(w):
                value = 0.5
                if 100 <= t < 250 and (y - cy) ** 2 + (x - cx) ** 2 <= 16:
                    value += 0.25
                if t >= 150:
                    value += 0.15 * math.sin(2 * math.pi * (x / 8.0 - 4.0 * t / 1000.0))
                row.append(value)
            frame.append(row)
        video.append(frame)
    return video


def main() -> None:
    import numpy as np
    import torch

    _linspace = np.linspace

    def linspace(start, stop, num=50, *args, **kwargs):
        return _linspace(start, stop, int(num), *args, **kwargs)

    np.linspace = linspace
    import convis

    torch.set_num_threads(1)
    retina = convis.retina.Retina()
    stimulus = torch.tensor(reference_stimulus(), dtype=torch.float32)[None, None]
    with torch.no_grad():
        opl = retina.opl(stimulus)
        bipolar = retina.bipolar(opl)
        ganglion_on = retina.gang_0_input(bipolar)
        ganglion_off = retina.gang_1_input(bipolar)

    def traces(video) -> list[list[float]]:
        array = np.asarray(video.detach() if hasattr(video, "detach") else video)[0, 0]
        return [[round(float(array[t, y, x]), 6) for (y, x) in PIXELS] for t in range(array.shape[0])]

    data = {
        "convis_version": convis.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "configuration": "convis.retina.Retina() defaults (Virtual Retina human parvo; 1 ms, 10 px/deg)",
        "frames": FRAMES,
        "size": list(SIZE),
        "pixels_yx": [list(p) for p in PIXELS],
        "opl": traces(opl),
        "bipolar": traces(bipolar),
        "ganglion_on": traces(ganglion_on),
        "ganglion_off": traces(ganglion_off),
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(data, separators=(",", ":")))
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
