"""The spread of every quality figure across platforms: `pytest -m quality` under each variant.

A variant changes one thing that moves floating-point results on a CPU: torch's kernel code path
(ATEN_CPU_CAPABILITY), numpy's OpenBLAS kernels (OPENBLAS_CORETYPE: cma's eigendecompositions run
there), torch's or OpenBLAS' thread count, or the Python environment (another venv, e.g. with the
lowest allowed cma). Each run logs its values through tests/quality.py (MEI_QUALITY_LOG); the table
gives per figure the threshold, the worst value seen, the spread (max − min over the variants), the
margin (worst − threshold, positive = passes) and margin ÷ spread, which the rule wants ≥ 3
(benchmarks/README.md, "Quality thresholds across platforms").

    python benchmarks/platform_spread.py                       # all variants below, not slow tests
    python benchmarks/platform_spread.py --python cma-4.0.0=/tmp/venv-cma40/bin/python
    python benchmarks/platform_spread.py --variants base,cap-default --marker quality   # slow tests too
    python benchmarks/platform_spread.py --table-only --out results/platform_spread     # re-read logs

Values do not depend on speed, so --jobs 2 runs two variants at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, str]] = {
    "base": {},
    "cap-default": {"ATEN_CPU_CAPABILITY": "default"},
    "cap-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "cap-avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "blas-Haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "blas-Zen": {"OPENBLAS_CORETYPE": "Zen"},
    "blas-Prescott": {"OPENBLAS_CORETYPE": "Prescott"},
    "blas-1-thread": {"OPENBLAS_NUM_THREADS": "1"},
    "torch-2-threads": {"MEI_TEST_THREADS": "2"},
    "default+Prescott+2-threads": {"ATEN_CPU_CAPABILITY": "default", "OPENBLAS_CORETYPE": "Prescott", "MEI_TEST_THREADS": "2"},
}


def run_variant(label: str, env_overrides: dict[str, str], python: str, out: Path, marker: str, extra: list[str]) -> tuple[str, int, float]:
    log = out / f"{label}.jsonl"
    log.unlink(missing_ok=True)
    env = {**os.environ, **env_overrides, "MEI_QUALITY_LOG": str(log), "MEI_QUALITY_VARIANT": label}
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, *extra]
    start = time.perf_counter()
    with open(out / f"{label}.out", "w") as output:
        rc = subprocess.call(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    return label, rc, time.perf_counter() - start


def read_logs(out: Path) -> list[dict]:
    rows = []
    for log in sorted(out.glob("*.jsonl")):
        rows += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return rows


def table(rows: list[dict]) -> str:
    figures: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        figures[(row["test"].split("::")[0].removeprefix("tests/"), row["test"].split("::")[-1], row["name"], row["bound"], row["threshold"])].append(row)
    lines = ["| test | figure | threshold | worst | best | spread | margin | margin ÷ spread | variants |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (module, test, name, bound, threshold), seen in sorted(figures.items()):
        values = [r["value"] for r in seen]
        worst, best = (min(values), max(values)) if bound == "at_least" else (max(values), min(values))
        spread = max(values) - min(values)
        margin = worst - threshold if bound == "at_least" else threshold - worst
        ratio = "∞" if spread == 0 else f"{margin / spread:.1f}"
        sign = "≥" if bound == "at_least" else "≤"
        variants = len({r["environment"]["variant"] for r in seen})
        name = name.replace("|", "\\|")  # a figure such as |a − b| inside a Markdown cell
        lines.append(f"| {module}::{test} | {name} | {sign} {threshold:g} | {worst:.4g} | {best:.4g} | {spread:.2g} | {margin:.3g} | {ratio} | {variants} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(v for v in VARIANTS if v != "cap-avx512"),
                        help=f"comma-separated, of: {', '.join(VARIANTS)} (base is the machine's own)")
    parser.add_argument("--python", action="append", default=[], metavar="LABEL=PATH",
                        help="also run with another environment's python (e.g. the lowest allowed cma), as variant LABEL")
    parser.add_argument("--marker", default="quality and not slow", help="pytest -m expression (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "platform_spread")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="only print the table of the logs in --out")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        jobs = [(v, VARIANTS[v], sys.executable) for v in args.variants.split(",") if v]
        for spec in args.python:
            label, path = spec.split("=", 1)
            jobs.append((label, {}, path))
        with ThreadPoolExecutor(args.jobs) as pool:
            for label, rc, seconds in pool.map(lambda j: run_variant(*j, args.out, args.marker, args.pytest_args), jobs):
                tail = (args.out / f"{label}.out").read_text().strip().splitlines()[-1:]
                print(f"{label}: exit {rc}, {seconds:.0f} s: {tail[0] if tail else ''}", flush=True)
    rows = read_logs(args.out)
    environments = sorted({json.dumps(r["environment"], sort_keys=True) for r in rows})
    print("\nenvironments seen:")
    for e in environments:
        print("  " + e)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
