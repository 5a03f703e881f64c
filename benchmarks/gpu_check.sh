#!/usr/bin/env bash
# GPU check (< 5 minutes on one GPU): install, one scale run, one demo generation job with
# device: cuda and precision: bf16, and the precision benchmark on the GPU.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; PYTHON=... to pick the interpreter
#
# Needs a Python with a CUDA build of torch and mei_core's dependencies (numpy, pandas, pyyaml,
# jsonschema, tqdm); nothing is downloaded. Output: the scale table (engine vs bare on CUDA), the
# precision table, and the generation job's log (its start-up, device and runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)

echo "== install (a throw-away venv on top of the system's packages: no other environment changes)"
venv=$(mktemp -d)/venv
if "$PYTHON" -m venv --system-site-packages "$venv" \
   && "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1; then
  PYTHON="$venv/bin/python"
else
  echo "(install failed, offline or no setuptools: using $PYTHON with PYTHONPATH=$PWD)"
fi
"$PYTHON" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF

echo "== scale (CUDA): engine vs bare loop per step, with and without Jitter / RandomCrop"
timeout 150 "$PYTHON" benchmarks/scale.py --devices cuda --batches 1 64 1024 4096 --reps 3

echo "== stop_check_every on CUDA (early-stopped batch)"
timeout 90 "$PYTHON" benchmarks/scale.py --devices cuda --stop-checks --reps 2

echo "== precision on the ground truth (CPU and CUDA)"
timeout 60 "$PYTHON" benchmarks/precision.py

echo "== one demo generation job: device cuda, precision bf16, 256 neurons, 200 steps"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" - "$work" <<'EOF'
import json, sys, torch
from pathlib import Path
from mei_core.demo.v1 import build_demo_cnn
from mei_core.pipeline.ensembles import assemble_ensemble
from mei_core.methods import default_preset
from mei_core.pipeline.plan import prepare
import os
folder = Path(sys.argv[1])
os.chdir(folder)
kwargs = {"n_neurons": 256, "in_shape": [1, 24, 24]}
Path("models").mkdir()
torch.save(build_demo_cnn(**kwargs, init_seed=1).state_dict(), "models/member.pt")
method = {**default_preset(norm=24.0, iterations=200), "precision": "bf16", "transform": {"path": "Jitter", "kwargs": {"max_jitter": 2}}}
config = {"device": "cuda", "shard_size": 256, "seeds": [0],
          "ensembles": {"demo": {"input_shape": [1, 24, 24], "outputs": 256, "max_batch": 4096,
                                 "members": [{"checkpoint": "models/member.pt", "builder": "mei_core.demo.v1.build_demo_cnn", "builder_kwargs": kwargs}]}},
          "objectives": {"demo": {"neurons": "all"}}, "methods": {"bf16": {"config": method}}}
plan = prepare(config, folder)
assemble_ensemble(plan.paths.member_spec("demo", "members"), plan.paths.manifest("demo", "members"))
json.dump({"manifest": plan.paths.manifest("demo", "members"), "method": plan.paths.method_spec("bf16"),
           "shard": plan.paths.shard_spec("demo", 0)}, open("paths.json", "w"))
EOF
(cd "$work" && "$PYTHON" - <<'EOF'
import json, subprocess, sys, time
import numpy as np
paths = json.load(open("paths.json"))
started = time.time()
subprocess.run([sys.executable, "-m", "mei_core", "generate", "--manifest", paths["manifest"], "--method", paths["method"],
                "--shard", paths["shard"], "--seed", "0", "--out", "shard.npz", "--device", "cuda"], check=True)
with np.load("shard.npz") as shard:
    meta = json.loads(str(shard["metadata"]))
    print(f"job: {time.time() - started:.1f} s wall, engine {meta['runtime_s']:.1f} s on {meta.get('device', '?')}, "
          f"{len(shard['meis'])} MEIs, scores finite: {bool(np.isfinite(shard['scores']).all())}, "
          f"median score {float(np.median(shard['scores'])):.3f}")
EOF
)
echo "== done in $(( $(date +%s) - started )) s"
