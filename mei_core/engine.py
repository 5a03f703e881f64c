"""The optimisation loop: many (unit, seed) items in one batch, each stopped, scored and traced alone.

Per step: transform → objective (one forward) → regularisation → stopper → backward → precondition
the gradient → optimiser step → postprocess (outside autograd). An item that stops is frozen: its
rows leave the forward pass and keep their values; its score is the objective of exactly the input
that is returned.
"""

from __future__ import annotations

import contextvars
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .components import Step, Tracker
from .method import Method
from .objectives import Objective


#: Called with every State (e.g. a progress bar in pipeline jobs); set by the caller, off by default.
step_callback: contextvars.ContextVar = contextvars.ContextVar("step_callback", default=None)


@dataclass
class State:
    """What stoppers and trackers see at step ``i_iter``.

    Row tensors cover the whole batch (rows of stopped items keep their last values, and zero
    gradients); per-item tensors have one entry per item. ``progress`` is what is maximised:
    sign·objective − penalty.

    - ``input_``: the input evaluated at this step (``x_i``); ``transformed_input``: what the model saw
      of it (only the rows evaluated at this step).
    - ``grad``: the gradient of the loss (−progress) with respect to ``input_``, as the optimiser would
      receive it before preconditioning; ``preconditioned_grad``: after the preconditioners.
    - ``post_processed_input``: the next input (``x_{i+1}``: optimiser step, then postprocessing).
      It is ``None`` while the stopper runs (the step depends on the stopper's decision) and set
      before the trackers run; an item that stopped at this step keeps ``input_`` there.
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
    active_items: Tensor
    grad: Tensor
    preconditioned_grad: Tensor
    post_processed_input: Tensor | None = None
    stopper_output: Any = None
    #: parts of the objective (``objective.last_terms``, e.g. a target loss), per row of the batch
    objective_terms: dict[str, Tensor] = field(default_factory=dict)


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
    n_meis: int = 1


class _Batch:
    """The optimised rows and who is still active; stopped items are frozen where they stopped."""

    def __init__(self, method: Method, seeds: list[int], shape: tuple[int, ...], device: torch.device):
        self.n_items, self.n_meis = len(seeds), method.n_meis
        # every random draw of an item comes from its own generator: batch composition cannot matter
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        # the optimised variable lives in parameter space (the identity for pixels); meis are decoded
        variable_shape = method.parameterisation.initial_shape(tuple(shape))
        initial = torch.cat([method.initial((self.n_meis, *variable_shape), g) for g in self.generators])
        self.x = initial.to(device).requires_grad_(True)
        self.row_items = torch.arange(self.n_items, device=device).repeat_interleave(self.n_meis)
        self.all_rows = torch.arange(len(self.row_items), device=device)
        self.rows, self.full = self.all_rows, True
        self.items = self.row_items  # item of every active row: what objectives index by
        self.active = torch.ones(self.n_items, dtype=torch.bool, device=device)
        self.n_iterations, self.stop_reasons = [0] * self.n_items, [""] * self.n_items
        self.evaluation = self.penalty = self.progress = torch.zeros(len(self.all_rows), device=device)
        self.terms: dict[str, Tensor] = {}
        self.frozen: Tensor | None = None

    def inputs(self) -> Tensor:
        return self.x if self.full else self.x[self.rows]

    def step(self, i_iter: int) -> Step:
        return Step(i_iter, self.rows, self.row_items, self.generators, self.items)

    def whole_batch(self, rows_values: Tensor) -> Tensor:
        """Values of the active rows spread over the whole batch (zeros on rows of stopped items)."""
        if self.full:
            return rows_values
        return torch.zeros_like(self.x).index_copy_(0, self.rows, rows_values)

    def per_item(self, values: Tensor) -> Tensor:
        return values if self.n_meis == 1 else values.reshape(self.n_items, self.n_meis).mean(1)

    def keep(self, evaluation: Tensor, penalty: Tensor | None, progress: Tensor, terms: dict[str, Tensor]) -> None:
        """Whole-batch records; rows of stopped items keep the values of their returned input."""
        for name, value in terms.items():
            if self.full:
                self.terms[name] = value.detach()
            else:
                self.terms[name][self.rows] = value.detach()
        if self.full:
            self.evaluation, self.progress = evaluation.detach(), progress.detach()
            self.penalty = penalty.detach() if penalty is not None else torch.zeros_like(self.evaluation)
        else:
            self.evaluation[self.rows], self.progress[self.rows] = evaluation.detach(), progress.detach()
            if penalty is not None:
                self.penalty[self.rows] = penalty.detach()

    def stop(self, stop: Any, reason: Any, i_iter: int, stopper: Any) -> Tensor | None:
        """Freeze the items ``stop`` names; return the mask (over the rows just evaluated) of rows
        still active, or ``None`` when nothing changed."""
        if isinstance(stop, bool) or (isinstance(stop, Tensor) and stop.numel() == 1):
            stopping = self.active.clone() if bool(stop) else None
        else:
            stopping = stop.to(device=self.active.device, dtype=torch.bool).reshape(self.n_items) & self.active
            stopping = stopping if bool(stopping.any()) else None
        if stopping is None:
            return None
        for item in stopping.nonzero().flatten().tolist():
            self.n_iterations[item] = i_iter
            self.stop_reasons[item] = _reason_of(reason, item, stopper)
        previous_rows = self.rows
        self.active = self.active & ~stopping
        frozen_rows = (~self.active)[self.row_items]
        if self.frozen is None:
            self.frozen = self.x.detach().clone()
        self.frozen[frozen_rows] = self.x.detach()[frozen_rows]
        self.rows, self.full = self.active[self.row_items].nonzero().flatten(), False
        self.items = self.row_items[self.rows]
        return self.active[self.row_items[previous_rows]]

    @property
    def finished(self) -> bool:
        return not bool(self.active.any())


def optimize(
    objective: Objective,
    method: Method,
    seeds: list[int],
    shape: tuple[int, ...],
    device: str | torch.device = "cpu",
) -> BatchResult:
    """Optimise one item per seed (each with ``method.n_meis`` rows of ``shape`` = C×H×W or C×T×H×W).

    The objective is called with the item index of every row it evaluates (item ``k`` owns rows
    ``k·n_meis … (k+1)·n_meis − 1``); only this function knows how rows map to items.

    Per step: decode (``method.parameterisation``: the optimised variable → the stimulus; ``meis`` are
    decoded stimuli) → transform → objective (one forward) → regularisation → gradient → preconditioning →
    stopper (sees the gradient) → optimiser step on the rows still active → postprocessing → trackers.
    """
    started = time.perf_counter()
    batch = _Batch(method, seeds, shape, torch.device(device))
    x, optimizer = batch.x, method.make_optimizer([batch.x])
    callback = step_callback.get()
    # only trackers and callbacks read input_ after the in-place optimiser step: copy it for them alone
    copy_input = bool(method.trackers) or callback is not None
    for i_iter in itertools.count():
        step = batch.step(i_iter)
        x_in = batch.inputs()
        stimulus = method.parameterisation(x_in)
        transformed = method.transform(stimulus, step)
        evaluation = objective(transformed, step.items)
        regularized = transformed if method.regularize_transformed else stimulus
        penalty = sum(r(regularized, step) for r in method.regularizers) if method.regularizers else None
        progress = evaluation if method.sign > 0 else -evaluation
        progress = progress if penalty is None else progress - penalty
        batch.keep(evaluation, penalty, progress, getattr(objective, "last_terms", {}))

        # gradients of the input only: a user's model keeps no .grad and pays for no weight gradients
        (grad,) = torch.autograd.grad(-progress.sum(), x)
        with torch.no_grad():
            rows_grad = grad if batch.full else grad[batch.rows]
            for preconditioner in method.preconditioners:
                rows_grad = preconditioner(rows_grad, step)
        state = State(
            i_iter=i_iter, sign=method.sign, evaluation=batch.evaluation, reg_term=batch.penalty,
            progress_per_row=batch.progress, evaluation_per_item=batch.per_item(batch.evaluation),
            progress=batch.per_item(batch.progress), input_=x.detach().clone() if copy_input else x.detach(),
            transformed_input=transformed.detach(), active_items=batch.active, grad=grad,
            preconditioned_grad=batch.whole_batch(rows_grad), objective_terms=batch.terms,
        )
        stop, state.stopper_output = method.stopper(state)
        still_active = batch.stop(stop, state.stopper_output, i_iter, method.stopper)
        if not batch.finished:
            with torch.no_grad():
                if still_active is not None:
                    rows_grad = rows_grad[still_active]
                x.grad = batch.whole_batch(rows_grad)
            optimizer.step()
            with torch.no_grad():
                if not batch.full:
                    x[~batch.active[batch.row_items]] = batch.frozen[~batch.active[batch.row_items]]
                if method.postprocessors:
                    step = step_for(step, batch)
                    updated = batch.inputs()
                    for postprocessor in method.postprocessors:
                        updated = postprocessor(updated, step)
                    if batch.full:
                        x.copy_(updated)
                    else:
                        x[batch.rows] = updated
        state.post_processed_input = x.detach()
        for tracker in method.trackers.values():
            tracker(state)
        if callback is not None:
            callback(state)
        if batch.finished:
            break

    # rows of stopped items kept the evaluation of exactly their returned input; a random transform
    # (jitter, crops) evaluated a moved copy, so score the returned input itself
    scores = batch.evaluation
    with torch.no_grad():
        meis = method.parameterisation(x.detach())
        if method.transform.random:
            scores = objective(method.transform.at_evaluation(meis), batch.row_items).detach()
    return BatchResult(
        meis=meis.to("cpu"),
        scores=scores.to("cpu"),
        row_items=batch.row_items.to("cpu"),
        n_iterations=batch.n_iterations,
        stop_reasons=batch.stop_reasons,
        traces=method.trackers,
        runtime_s=time.perf_counter() - started,
        device=str(batch.x.device),
        n_meis=batch.n_meis,
    )


def step_for(step: Step, batch: "_Batch") -> Step:
    """The Step describing the rows the optimiser step left active (fewer after items stopped)."""
    if batch.full or batch.rows is step.rows:
        return step
    return Step(step.i_iter, batch.rows, step.row_items, step.generators, batch.items)


def _reason_of(reason: Any, item: int, stopper: Any) -> str:
    if isinstance(reason, str):
        return reason
    if isinstance(reason, (list, tuple)) and len(reason) > item and isinstance(reason[item], str):
        return reason[item]
    return type(stopper).__name__
