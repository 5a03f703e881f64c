"""The arithmetic of the model's forward pass (method option ``precision``).

The optimised input, its gradient, the optimiser's update and the final scores stay float32 whatever
the option; only the model forward (and so its backward) changes:

- ``float32``: full float32, TF32 off (on CUDA, cuDNN convolutions would otherwise use TF32 by default).
- ``tf32``: float32 tensors, TF32 tensor-core matmuls and convolutions on CUDA (Ampere and newer);
  the same as ``float32`` on the CPU.
- ``bf16``: ``torch.autocast`` to bfloat16 for the forward, on CUDA and on the CPU.
"""

from __future__ import annotations

import contextlib
import torch

from .options import METHOD_OPTIONS

#: the option's choices, declared once with the method's other options
PRECISIONS = tuple(next(option.choices for option in METHOD_OPTIONS if option.name == "precision"))


class _TF32:
    """Sets the global TF32 switches for the forward and puts them back after it (reusable)."""

    def __init__(self, allowed: bool):
        self.allowed = allowed
        self.saved: tuple[bool, bool] | None = None

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.allowed

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def forward_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the model forward runs in: made once per run, entered every step (cheap); it
    restores the global TF32 switches afterwards, so other code in the process is not affected."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda":
        return _TF32(precision == "tf32")
    return contextlib.nullcontext()
