"""The optimisation loop: many (unit, seed) items in one batch, each stopped, scored and traced alone.

Per step: transform → objective (one forward) → regularisation → stopper → backward → precondition
the gradient → optimiser step → postprocess (outside autograd). An item that stops is frozen: its
rows leave the forward pass and keep their values; its score is the objective of exactly the input
that is returned.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import contextvars

from .components import Step, Tracker
from .method import Method
from .objectives import Objective


#: Called with every State (e.g. a progress bar in pipeline jobs); set by the caller, off by default.
step_callback: contextvars.ContextVar = contextvars.ContextVar("step_callback", default=None)


@dataclass
class State:
    """What stoppers and trackers see at step ``i_iter``. Holds references, never copies.

    Row tensors cover the whole batch (rows of stopped items keep their last values); per-item
    tensors have one entry per item. ``progress`` is what is maximised: sign·objective − penalty.
    """

    i_iter: int
    sign: float
    evaluation: Tensor
    reg_term: Tensor
    progress_per_row: Tensor
    evaluation_per_item: Tensor
    progress: Tensor
    input_: Tensor
    transformed_input: Tensor
    post_processed_input: Tensor
    active_items: Tensor
    grad: Tensor | None = None
    preconditioned_grad: Tensor | None = None
    stopper_output: Any = None


@dataclass
class BatchResult:
    """``meis``: rows × C × … on the CPU, rows grouped by item (``n_meis`` consecutive rows each).
    ``scores``: objective of each returned row; per item: iterations taken and why it stopped."""

    meis: Tensor
    scores: Tensor
    row_items: Tensor
    n_iterations: list[int]
    stop_reasons: list[str]
    traces: dict[str, Tracker] = field(default_factory=dict)
    runtime_s: float = 0.0
    device: str = "cpu"


def _per_item(values: Tensor, row_items: Tensor, n_items: int, n_meis: int) -> Tensor:
    if n_meis == 1:
        return values
    return values.reshape(n_items, n_meis).mean(1)


def _normalise_stop(stop: Any, n_items: int, device: torch.device) -> Tensor:
    if isinstance(stop, Tensor):
        return stop.to(device=device, dtype=torch.bool).reshape(n_items) if stop.numel() == n_items else stop.to(device=device, dtype=torch.bool).reshape(()).expand(n_items)
    return torch.full((n_items,), bool(stop), device=device)


def optimize(
    objective: Objective,
    method: Method,
    seeds: list[int],
    shape: tuple[int, ...],
    device: str | torch.device = "cpu",
) -> BatchResult:
    """Optimise one item per seed (each with ``method.n_meis`` rows of ``shape`` = C×H×W or C×T×H×W).

    The objective knows each row's target; item ``k`` owns rows ``k·n_meis … (k+1)·n_meis − 1``.
    """
    started = time.perf_counter()
    device = torch.device(device)
    n_items, n_meis = len(seeds), method.n_meis
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    x = torch.cat([method.initial((n_meis, *shape), g) for g in generators]).to(device).requires_grad_(True)
    optimizer = method.make_optimizer([x])
    row_items = torch.arange(n_items, device=device).repeat_interleave(n_meis)
    all_rows = torch.arange(n_items * n_meis, device=device)
    rows, full_batch = all_rows, True
    active = torch.ones(n_items, dtype=torch.bool, device=device)
    n_iterations, stop_reasons = [0] * n_items, [""] * n_items
    evaluation_all = reg_all = progress_all = torch.zeros(len(all_rows), device=device)
    frozen: Tensor | None = None

    for i_iter in itertools.count():
        step = Step(i_iter, rows, row_items, generators)
        x_in = x if full_batch else x[rows]
        transformed = method.transform(x_in, step)
        evaluation = objective(transformed, rows)
        reg_term = sum((r(x_in, step) for r in method.regularizers), torch.zeros_like(evaluation))
        progress_rows = method.sign * evaluation - reg_term

        if full_batch:
            evaluation_all, reg_all, progress_all = evaluation.detach(), reg_term.detach(), progress_rows.detach()
        else:
            evaluation_all[rows], reg_all[rows], progress_all[rows] = evaluation.detach(), reg_term.detach(), progress_rows.detach()
        state = State(
            i_iter=i_iter,
            sign=method.sign,
            evaluation=evaluation_all,
            reg_term=reg_all,
            progress_per_row=progress_all,
            evaluation_per_item=_per_item(evaluation_all, row_items, n_items, n_meis),
            progress=_per_item(progress_all, row_items, n_items, n_meis),
            input_=x.detach(),
            transformed_input=transformed.detach(),
            post_processed_input=x.detach(),
            active_items=active,
        )
        stop, reason = method.stopper(state)
        state.stopper_output = reason
        stopping = _normalise_stop(stop, n_items, device) & active
        for tracker in method.trackers.values():
            tracker(state)
        if (callback := step_callback.get()) is not None:
            callback(state)
        if isinstance(stop, bool) and not stop:
            newly_stopped: list[int] = []
        else:
            newly_stopped = stopping.nonzero().flatten().tolist()
        if newly_stopped:
            for item in newly_stopped:
                n_iterations[item] = i_iter
                stop_reasons[item] = _reason_of(reason, item, method.stopper)
            active = active & ~stopping
            if not bool(active.any()):
                break
            frozen = x.detach().clone() if frozen is None else frozen
            frozen_rows = (~active)[row_items]
            frozen[frozen_rows] = x.detach()[frozen_rows]
            rows = active[row_items].nonzero().flatten()
            full_batch = False
            progress_rows = progress_rows[active[row_items[step.rows]]]

        optimizer.zero_grad(set_to_none=True)
        (-progress_rows.sum()).backward()
        with torch.no_grad():
            grad = x.grad if full_batch else x.grad[rows]
            state.grad = grad
            for preconditioner in method.preconditioners:
                grad = preconditioner(grad, step_for(step, rows, full_batch))
            state.preconditioned_grad = grad
            if full_batch:
                x.grad = grad
            else:
                x.grad.zero_()
                x.grad[rows] = grad
        optimizer.step()
        with torch.no_grad():
            if not full_batch:
                x[~active[row_items]] = frozen[~active[row_items]]
            if method.postprocessors:
                post_step = step_for(step, rows, full_batch)
                updated = x if full_batch else x[rows]
                for postprocessor in method.postprocessors:
                    updated = postprocessor(updated, post_step)
                if full_batch:
                    x.copy_(updated)
                else:
                    x[rows] = updated

    # rows of stopped items kept the evaluation of exactly their returned input; a random transform
    # (jitter, crops) evaluated a moved copy, so score the returned input itself
    scores = evaluation_all
    if method.transform.random:
        with torch.no_grad():
            scores = objective(method.transform.at_evaluation(x.detach()), all_rows).detach()
    runtime = time.perf_counter() - started
    return BatchResult(
        meis=x.detach().to("cpu"),
        scores=scores.to("cpu"),
        row_items=row_items.to("cpu"),
        n_iterations=n_iterations,
        stop_reasons=stop_reasons,
        traces=method.trackers,
        runtime_s=runtime,
        device=str(device),
    )


def step_for(step: Step, rows: Tensor, full_batch: bool) -> Step:
    """The Step describing the rows the backward pass left active (fewer after items stopped)."""
    if full_batch or rows is step.rows:
        return step
    return Step(step.i_iter, rows, step.row_items, step.generators)


def _reason_of(reason: Any, item: int, stopper: Any) -> str:
    if isinstance(reason, str):
        return reason
    if isinstance(reason, (list, tuple)) and len(reason) > item and isinstance(reason[item], str):
        return reason[item]
    return type(stopper).__name__
