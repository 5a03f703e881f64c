"""Quality assertions: a measured figure (a filter r, a response ratio, a loss) against its threshold.

Every threshold in the suite that a platform can move (torch's CPU code path, numpy's BLAS kernels,
the thread count, the versions of cma and numpy) goes through ``at_least`` / ``at_most``, so that
``benchmarks/platform_spread.py`` can record each value under each variant: with
``MEI_QUALITY_LOG=path.jsonl`` set, every call appends one JSON line {test, name, value, threshold,
bound, environment} to that file (before it asserts, so a failing value is recorded too).
The rule the thresholds follow (benchmarks/README.md, "Quality thresholds across platforms"): a
threshold lies at least 3× the spread seen across the variants below the worst value seen.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _numpy_blas() -> str:
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas" and "numpy" in i.get("filepath", "")]
    return f"{blas[0].get('internal_api')} {blas[0].get('architecture')} {blas[0].get('num_threads')} threads" if blas else "?"


def environment() -> dict[str, Any]:
    import cma
    import numpy
    import torch

    return {
        "variant": os.environ.get("MEI_QUALITY_VARIANT", ""),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy_blas": _numpy_blas(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cma": cma.__version__.split()[0],
    }


def _record(name: str, value: float, threshold: float, bound: str) -> None:
    path = os.environ.get("MEI_QUALITY_LOG")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    line = {"test": test, "name": name, "value": value, "threshold": threshold, "bound": bound, "environment": environment()}
    with open(path, "a") as log:
        log.write(json.dumps(line) + "\n")


def at_least(name: str, value: Any, threshold: float) -> None:
    """Assert ``value >= threshold`` (``value`` a number or a 0-d tensor/array); logged when asked."""
    value = float(value)
    _record(name, value, threshold, "at_least")
    assert value >= threshold, f"{name} = {value:.4f} < {threshold}"


def at_most(name: str, value: Any, threshold: float) -> None:
    """Assert ``value <= threshold``; logged when asked."""
    value = float(value)
    _record(name, value, threshold, "at_most")
    assert value <= threshold, f"{name} = {value:.4f} > {threshold}"
