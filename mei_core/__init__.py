"""mei_core: batched, reproducible most-exciting-input (MEI) optimisation for PyTorch models."""

from .engine import BatchResult, State, optimize
from .errors import MEIConfigError
from .method import Method, build_method
from .methods import batched_gradient_ascent, default_preset, gradient_ascent

__all__ = [
    "BatchResult",
    "MEIConfigError",
    "Method",
    "State",
    "batched_gradient_ascent",
    "build_method",
    "default_preset",
    "gradient_ascent",
    "optimize",
]
