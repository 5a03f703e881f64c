"""Soak benchmark of the results browser (``results/browse/index.html``, mei_core/pipeline/browse.py):
a synthetic run of 50,000 MEIs written in the pipeline's own formats, the browser built from it, its
size, and its load time in headless Chromium.

Run from the repository root: ``.venv/bin/python benchmarks/browse.py`` (``--help``; ``--neurons``,
``--seeds``, ``--methods`` set the size, default 5,000 × 5 × 2; ``--keep DIR`` keeps the files).

- The results: one ensemble of ``1×36×64`` images (a mouse V1 recording's size) in a Zarr store made
  by the aggregation's own store layout (``results.StoreLayout``, ``results._create_store``), MEIs
  smooth random blobs (bilinear ×4 upsampled noise: PNG compresses them about as well as real MEIs);
  ``scores.parquet`` with the score table's columns plus ``quality_flags``; ``validation.parquet``
  with a ``filter_correlation``; ``traces.parquet`` with one tracker every 10 steps of 100.
- Timed: each method's thumbnails (``draw_thumbnails``, one job each in the workflow) and the page
  (``write_browser``), as process CPU time; then Chromium opening the page from the file system.
- Load time: the page's own ``data-ready-ms`` (``performance.now()`` when the first view is complete:
  navigation, parsing ``data.js``, filtering and sorting every row, drawing a page of the table), for
  the table as it opens, sorted by score, filtered, a neuron page and the method comparison; and the
  wall time of ``chromium --dump-dom`` for the page against the same for an empty page (Chromium's own
  start-up), the median of ``--reps`` runs. Thumbnails load lazily: a table page of 100 rows shows at
  most 100 thumbnails from a few sheets of 256.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import zarr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .` too

from mei_core.pipeline.browse import draw_thumbnails, find_chromium, open_in_chromium, write_browser  # noqa: E402
from mei_core.pipeline.paths import Paths  # noqa: E402
from mei_core.pipeline.results import StoreLayout, _create_store  # noqa: E402

ENSEMBLE = "soak_v1"
SHAPE = (1, 36, 64)


def make_results(paths: Paths, n_neurons: int, seeds: list[int], methods: list[str]) -> int:
    """Write the store and the three tables of a synthetic run; returns the number of MEIs."""
    rng = np.random.default_rng(0)
    neurons = np.arange(n_neurons, dtype=np.int64) * 3 + 1000  # ids that are not positions
    table = pd.DataFrame({"neuron_id": neurons, "output_unit": np.arange(n_neurons)})
    layout = StoreLayout(methods, seeds, neurons, list(SHAPE), n_meis=1, shard_items=1000)
    store = Path(paths.zarr(ENSEMBLE))
    arrays = _create_store(store, layout, {"name": ENSEMBLE, "ensemble_hash": "soak"}, table)
    rows = []
    for m, method in enumerate(methods):
        for s, seed in enumerate(seeds):
            coarse = torch.from_numpy(rng.normal(size=(n_neurons, 1, SHAPE[1] // 4, SHAPE[2] // 4)).astype(np.float32))
            meis = torch.nn.functional.interpolate(coarse, size=SHAPE[1:], mode="bilinear", align_corners=False).numpy()
            arrays["mei"][m, s] = meis
            score = rng.gamma(4.0, 0.5, n_neurons).astype(np.float32)
            arrays["score"][m, s] = score
            rows.append(pd.DataFrame({
                "ensemble": ENSEMBLE, "method": method, "method_hash": f"h{m}", "seed": seed, "neuron_id": neurons, "output_unit": np.arange(n_neurons),
                "mei_index": np.zeros(n_neurons, np.int32), "score": score, "heldout_score": (score * rng.uniform(0.5, 1.0, n_neurons)).astype(np.float32),
                "n_iterations": rng.integers(50, 500, n_neurons).astype(np.int32), "stop_reason": rng.choice(["num_iterations", "early_stop"], n_neurons),
                "status": "ok", "quality_flags": rng.choice(["", "", "", "low_gain", "seed_disagreement"], n_neurons),
            }))
    zarr.consolidate_metadata(str(store))
    scores = pd.concat(rows, ignore_index=True)
    scores.to_parquet(paths.table("scores"), index=False)
    validation = scores[["ensemble", "method", "seed", "neuron_id", "mei_index", "score", "heldout_score"]].copy()
    validation["filter_correlation"] = rng.uniform(-0.2, 1.0, len(validation)).astype(np.float32)
    validation.to_parquet(paths.table("validation"), index=False)
    steps = np.arange(0, 100, 10, dtype=np.int32)
    keys = scores[["ensemble", "method", "seed", "neuron_id", "mei_index"]].loc[scores.index.repeat(len(steps))].reset_index(drop=True)
    keys["tracker"] = "evaluation"
    keys["step"] = np.tile(steps, len(scores))
    keys["value"] = (np.repeat(scores["score"].to_numpy(), len(steps)) * (1 - np.exp(-keys["step"].to_numpy() / 30.0))).astype(np.float32)
    keys.to_parquet(paths.table("traces"), index=False)
    return len(scores)


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def ready_ms(index: Path, fragment: str) -> tuple[int, float]:
    started = time.perf_counter()
    dom = open_in_chromium(index, fragment, budget_ms=None)
    wall = time.perf_counter() - started
    match = re.search(r'data-ready-ms="(\d+)"', dom)
    if match is None:
        raise RuntimeError(f"#{fragment}: the page never finished its first view")
    return int(match.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", default=None, help="write into this folder and keep it")
    parser.add_argument("--reuse", action="store_true", help="the results in --keep are there already: build and time the browser only")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mei-browse-soak-"))
    paths = Paths(results=str(folder / "results"), resources=str(folder / "resources"))
    Path(paths.results).mkdir(parents=True, exist_ok=True)
    methods = [f"method{k}" for k in range(args.methods)]
    started = time.perf_counter()
    if args.reuse:
        count = len(pd.read_parquet(paths.table("scores"), columns=["score"]))
    else:
        count = make_results(paths, args.neurons, list(range(args.seeds)), methods)
    print(f"{count} MEIs ({args.methods} methods × {args.seeds} seeds × {args.neurons} neurons, {'×'.join(map(str, SHAPE))}) written in {time.perf_counter() - started:.1f} s")

    thumbnail_dirs = []
    for method in methods:
        started = time.process_time()
        out = paths.browse_thumbnails(ENSEMBLE, method)
        draw_thumbnails(paths.zarr(ENSEMBLE), method, out)
        thumbnail_dirs.append(out)
        print(f"thumbnails of {method}: {time.process_time() - started:.1f} s CPU, {size_of(Path(out)) / 1e6:.1f} MB")
    started = time.process_time()
    write_browser(paths.table("scores"), paths.table("validation"), paths.table("traces"), thumbnail_dirs, paths.browse_index(), paths.browse_data(), paths.browse_traces())
    print(f"page and data: {time.process_time() - started:.1f} s CPU")
    browse = Path(paths.browse_folder())
    print(f"sizes: index.html {size_of(Path(paths.browse_index())) / 1e3:.0f} kB, data.js {size_of(Path(paths.browse_data())) / 1e6:.2f} MB, "
          f"traces {size_of(Path(paths.browse_traces())) / 1e6:.1f} MB in {len(list(Path(paths.browse_traces()).rglob('*.js')))} files, "
          f"thumbnails {size_of(browse / 'thumbnails') / 1e6:.1f} MB in {len(list((browse / 'thumbnails').rglob('*.png')))} sheets; "
          f"total {size_of(browse) / 1e6:.1f} MB")

    if find_chromium() is None:
        print("no chromium: load times not measured")
        return
    blank = folder / "blank.html"
    blank.write_text("<!doctype html><title>blank</title><body data-ready-ms='0'></body>")
    index = Path(paths.browse_index())
    first_neuron = 1000 + 3 * (args.neurons // 2)
    views = {"table": "", "sorted by score": "sort=-score", "filtered": "filter=flags~seed+score%3E2&sort=-truth",
             "neuron page": f"neuron={ENSEMBLE}/{first_neuron}", "methods side by side": f"compare={ENSEMBLE}/*"}
    baseline = statistics.median(ready_ms(blank, "")[1] for _ in range(args.reps))
    print(f"chromium --dump-dom of an empty page: {baseline:.2f} s (start-up)")
    for name, fragment in views.items():
        runs = [ready_ms(index, fragment) for _ in range(args.reps)]
        print(f"{name:22s} #{fragment:45s} ready after {statistics.median(r[0] for r in runs):6.0f} ms "
              f"(min {min(r[0] for r in runs)}), dump-dom {statistics.median(r[1] for r in runs):.2f} s")
    print(f"files in {folder}" if args.keep else "")


if __name__ == "__main__":
    main()
