"""convis 0.6.3's Virtual Retina with contrast gain control on, for tests/fixtures/convis_gain_control_reference.json.

Not part of the test suite; run it like ``make_convis_reference.py`` (same stimulus, pixels and
configuration, convis in its own environment), from the repository root:

    /tmp/convis-venv/bin/python benchmarks/make_convis_gain_control_reference.py

Two runs with ``adaptation-feedback-amplification__Hz`` = 50 (convis' ``bipolar.lambda_amp``):

- ``as_shipped``: convis' ``Bipolar`` as it computes. Its gain-control low-pass is
  ``Σ_t = G(c Σ_{t−1} + (1 + c) λ_A V_{t−1}²)`` with ``c = exp(−steps/tau)`` evaluated when the layer is
  built, ``steps`` = 0.001 (seconds) and ``tau`` = 5 (its default, in steps): a 5 s time constant, the
  input weighted ``1 + c`` (≈ 2, not ``1 − c``), and ``Σ`` starts at 1 Hz;
- ``units_fixed``: the same with ``c = exp(−dt/τ_A)`` (dt = 1 ms, τ_A = 5 ms) and the weight ``1 − c``,
  Virtual Retina's ``Exp(τ_A)``; everything else (the start at 1 Hz included) as shipped.

convis blurs ``Σ`` with a fixed 7×7 Gaussian of 1 px (0.1° at its 10 px/deg; adaptation-sigma__deg is not
read). Stored: the OPL current, the bipolar potential and both ganglion layers' input currents at
``PIXELS``, every frame. The numpy shims let convis 0.6.3 import on numpy 2 as well as on 1.26.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_convis_reference import FRAMES, PIXELS, SIZE, reference_stimulus  # noqa: E402

OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "convis_gain_control_reference.json"
ADAPTATION_AMPLIFICATION = 50.0


def main() -> None:
    import numpy as np
    import torch

    _linspace = np.linspace
    np.linspace = lambda start, stop, num=50, *a, **k: _linspace(start, stop, int(num), *a, **k)
    for name, value in (("math", math), ("float", float), ("int", int), ("bool", bool)):
        if name not in np.__dict__:
            setattr(np, name, value)
    import convis

    torch.set_num_threads(1)
    stimulus = torch.tensor(reference_stimulus(), dtype=torch.float32)[None, None]

    def traces(video) -> list[list[float]]:
        array = np.asarray(video.detach() if hasattr(video, "detach") else video)[0, 0]
        return [[round(float(array[t, y, x]), 6) for (y, x) in PIXELS] for t in range(array.shape[0])]

    runs = {}
    for name in ("as_shipped", "units_fixed"):
        retina = convis.retina.Retina()
        bipolar = retina.bipolar
        bipolar.lambda_amp.data = torch.tensor(ADAPTATION_AMPLIFICATION)
        if name == "units_fixed":
            c = math.exp(-0.001 / 0.005)
            bipolar.a_1, bipolar.b_0 = torch.tensor([-c]), torch.tensor([1.0 - c])
        with torch.no_grad():
            opl = retina.opl(stimulus)
            potential = retina.bipolar(opl)
            runs[name] = {"opl": traces(opl), "bipolar": traces(potential),
                          "ganglion_on": traces(retina.gang_0_input(potential)),
                          "ganglion_off": traces(retina.gang_1_input(potential))}
    data = {
        "convis_version": convis.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "configuration": "convis.retina.Retina() defaults (Virtual Retina human parvo; 1 ms, 10 px/deg) "
                         f"with bipolar.lambda_amp = {ADAPTATION_AMPLIFICATION}",
        "frames": FRAMES,
        "size": list(SIZE),
        "pixels_yx": [list(p) for p in PIXELS],
        "runs": runs,
    }
    OUTPUT.write_text(json.dumps(data, separators=(",", ":")))
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
