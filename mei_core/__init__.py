"""mei_core: batched, reproducible most-exciting-input (MEI) optimisation for PyTorch models.

The names below are imported on first use: ``python -m mei_core --help`` and the thin command-line
clients start without importing torch (measured in benchmarks/README.md, "start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import MEIConfigError

#: public name → the module that defines it
_LAZY = {
    "BatchResult": "engine",
    "State": "engine",
    "optimize": "engine",
    "Method": "method",
    "build_method": "method",
    "batched_gradient_ascent": "methods",
    "default_preset": "methods",
    "gradient_ascent": "methods",
}

__all__ = ["MEIConfigError", *sorted(_LAZY)]

if TYPE_CHECKING:  # for type checkers and IDEs: the eager imports
    from .engine import BatchResult, State, optimize
    from .method import Method, build_method
    from .methods import batched_gradient_ascent, default_preset, gradient_ascent


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mei_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
