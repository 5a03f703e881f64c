"""connectome_interpreter's ``activation_maximisation`` call, run on the batched engine.

:func:`activation_maximisation` takes the arguments of the released connectome_interpreter 2.9.5's
function of that name (``seed``, ``normalize_gradients`` and ``quiet`` are additions) and returns its
tuple ``(input, output, activation_losses, output_reg_losses, input_reg_losses, input_snapshots)``. Per row it optimises what connectome_interpreter optimises (checked against its
code): Adam on ``mean_targets (a − value)² + λ_in·(‖x‖₁ + ‖x‖₂) + λ_out·(‖a‖₁ + ‖a‖₂)`` (or the ``in`` /
``out`` functions of ``custom_reg_functions``), early stopping when the last ``n_runs`` losses span
less than ``stopping_threshold`` (looked at from iteration ``n_runs + 1`` on), then the input
thresholded at the model's threshold and passed through ``tanh``, and the model's activations for
it. Snapshots of the input are taken every 5 iterations (thresholded and ``tanh``-ed likewise).

Differences: every row (target set) is optimised and stopped on its own; connectome_interpreter
averages the target loss over the batch and takes the norms over the whole batch, so with more than
one row its rows are coupled (identical for one row). The returned per-iteration losses are the mean
of the rows' target losses and the sums of their penalties. ``wandb`` logging is not supported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..initial import FromArray
from ..methods import batched_gradient_ascent
from ..models.connectome import TargetActivation
from ..objectives.targets import TargetActivationObjective

__all__ = ["activation_maximisation", "targets_of"]


def targets_of(target_activations: Any) -> TargetActivation:
    """Our :class:`TargetActivation` from connectome_interpreter's (its ``targets_df`` and
    ``batch_size``), ours, a ``{layer: {neuron: value}}`` dict or a DataFrame (``batch``, ``layer``,
    ``neuron`` or ``neuron_idx``, ``value``)."""
    return TargetActivation.of(target_activations)


class _PerRow:
    """``weight · fn(activations[b:b+1])`` for every row: a whole-tensor function made per row."""

    def __init__(self, function: Callable[[Tensor], Tensor], weight: float):
        self.function, self.weight = function, weight

    def __call__(self, activations: Tensor) -> Tensor:
        return self.weight * torch.stack([torch.as_tensor(self.function(activations[b : b + 1])).reshape(()) for b in range(len(activations))])


class _L1PlusL2:
    """connectome_interpreter's default regulariser ``‖a‖₁ + ‖a‖₂``, per row, times ``weight``."""

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, activations: Tensor) -> Tensor:
        flat = activations.flatten(1)
        return self.weight * (flat.abs().sum(1) + flat.norm(dim=1))


class _Rows(FromArray):
    """The given start of every item, in item order (the engine draws the items' starts in order)."""

    def __init__(self, rows: np.ndarray):
        super().__init__(rows)
        self._next = 0

    def __call__(self, shape, generator):
        row = self.array[self._next : self._next + shape[0]]
        self._next += shape[0]
        return row.clone()


def activation_maximisation(
    model: torch.nn.Module,
    target_activations: Any,
    input_tensor: Tensor | np.ndarray | None = None,
    num_iterations: int = 50,
    learning_rate: float = 0.1,
    in_reg_lambda: float = 0.01,
    out_reg_lambda: float = 0.01,
    custom_reg_functions: Mapping[str, Callable[[Tensor], Tensor]] | None = None,
    early_stopping: bool = True,
    stopping_threshold: float = 1e-5,
    n_runs: int = 10,
    use_tqdm: bool = True,
    print_output: bool = True,
    device: torch.device | str | None = None,
    wandb: bool = False,
    seed: int | None = None,
    normalize_gradients: bool = False,
    quiet: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[float], list[float], list[float], list[np.ndarray]]:
    """Inputs ``B×S×L`` that drive ``model`` (a ``MultilayeredNetwork``) to ``target_activations``.

    Returns, as connectome_interpreter 2.9.5: the optimised input thresholded at ``model.threshold`` and
    passed through ``tanh`` (``B×S×L``; ``S×L``
    when ``B = 1``), the model's activations for it (``B×N×L`` / ``N×L``), the per-iteration target
    losses, output-regularisation losses and input-regularisation losses (lists of floats, one per
    optimiser step), and the input snapshots every 5 iterations (arrays like the input).
    ``use_tqdm``, ``print_output`` and ``quiet`` are accepted and ignored (the engine prints nothing).
    """
    if wandb:
        raise ValueError("wandb: logging to Weights & Biases is not supported; use the returned loss lists")
    targets = targets_of(target_activations)
    batch_size = targets.batch_size
    shape = (len(model.sensory_indices), model.num_layers)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if input_tensor is None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        start = torch.rand((batch_size, *shape), generator=generator)  # torch.manual_seed(seed); torch.rand(...)
    else:
        start = torch.as_tensor(np.asarray(input_tensor.detach().cpu() if isinstance(input_tensor, Tensor) else input_tensor), dtype=torch.float32)
        if tuple(start.shape) != (batch_size, *shape):
            raise ValueError(f"Expected input shape (batch_size={batch_size}, num_input_neurons={shape[0]}, num_layers={shape[1]}), got {tuple(start.shape)}")

    custom = dict(custom_reg_functions or {})
    out_reg = _PerRow(custom["out"], out_reg_lambda) if "out" in custom else _L1PlusL2(out_reg_lambda)
    if "in" in custom:
        in_reg: Any = {"path": "RowFunction", "kwargs": {"function": custom["in"], "weight": in_reg_lambda}}
    else:
        in_reg = [{"path": "LpNorm", "kwargs": {"p": 1, "weight": in_reg_lambda}}, {"path": "LpNorm", "kwargs": {"p": 2, "weight": in_reg_lambda}}]
    if early_stopping:
        stopper = {"path": "LossRange", "kwargs": {"n_runs": n_runs, "threshold": stopping_threshold,
                                                   "max_iterations": num_iterations, "min_iterations": n_runs + 1}}
    else:
        stopper = {"path": "NumIterations", "kwargs": {"num_iterations": num_iterations}}
    config: dict[str, Any] = {
        "initial": {"path": f"{__name__}._Rows", "kwargs": {"rows": start.numpy()}},
        "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": learning_rate}},
        "stopper": stopper,
        "regularization": in_reg,
        "trackers": {
            "target_loss": {"path": "ObjectiveTerm", "kwargs": {"term": "target_loss"}},
            "out_reg": {"path": "ObjectiveTerm", "kwargs": {"term": "activation_penalty"}},
            "in_reg": "PenaltyObjective",
            "snapshots": {"path": "InputObjective", "kwargs": {"interval": 5}},
        },
    }
    if normalize_gradients:
        config["precondition"] = {"path": "DivideByNorm", "kwargs": {"dims": [0], "eps": 1e-8}}
    objective = TargetActivationObjective(model, targets, activation_regularizers=[out_reg], reduction="mean")
    result = batched_gradient_ascent(objective, config, seeds=[0] * batch_size, shape=shape, device=device)

    steps = max(result.n_iterations)  # optimiser steps of the longest-running row
    traces = result.traces
    act_loss = [float(v.mean()) for v in traces["target_loss"].values[:steps]]
    out_reg_losses = [float(v.sum()) for v in traces["out_reg"].values[:steps]]
    in_reg_losses = [float(v.sum()) for v in traces["in_reg"].values[:steps]]
    threshold = float(model.threshold)
    # connectome_interpreter's iterations are 0 … num_iterations − 1: none at the final evaluation
    snapshots = [np.tanh(np.where(v.numpy() >= threshold, v.numpy(), 0))
                 for step, v in zip(traces["snapshots"].steps, traces["snapshots"].values) if step < num_iterations]

    # 2.9.5's final processing: the input thresholded at the model's threshold, then tanh
    final = torch.tanh(torch.where(result.meis >= threshold, result.meis, 0))
    with torch.no_grad():
        output = model(final.to(device)).cpu().numpy()
    final = final.numpy()
    if batch_size == 1:
        return final[0], output[0], act_loss, out_reg_losses, in_reg_losses, [s[0] for s in snapshots]
    return final, output, act_loss, out_reg_losses, in_reg_losses, snapshots
