"""The optimisation loop: many (unit, seed) items in one batch, each stopped, scored and traced alone.

Before the first step the initial guess is projected (``project_initial``: e.g. onto the norm and
clip of the postprocessing). Per step: decode (``method.parameterisation``: the optimised variable →
the stimulus; returned MEIs are decoded stimuli) → transform → objective (one forward, in chunks of at most ``max_batch`` rows) →
regularisation → gradient → precondition → stopper → optimiser step → postprocess (outside
autograd) → trackers. An item that stops is frozen: its rows keep their values (restored after every
update) and its records keep the values of exactly the input that is returned; its score is the
objective of that input. The State that the stopper, the trackers and a step callback read is built
only on steps where one of them reads it: a stopper that declares its ``earliest_stop``
(``NumIterations``) is not called before that step unless trackers or a callback are there.

The loop makes no host sync of its own except at *checks*: every ``stop_check_every`` steps (default:
every step on the CPU, where a sync waits for nothing; every 10 on a GPU), and on steps where a tracker records (it copies to the host anyway). A check reads the stop mask, drops
stopped items' rows from the forward pass and ends the loop once every item has stopped; between
checks stopped items ride along, frozen. A plain-bool stop (``NumIterations``) ends the loop at once.
"""

from __future__ import annotations

import contextlib
import copy
import contextvars
import math
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .components import Reasons, Step, Tracker, Transform
from .items import Chunk, ItemLayout, chunked, item_rows
from .method import DEFAULT_STOP_CHECK_EVERY, Method, project_initial
from .objectives import Objective
from .precision import forward_precision
from .parameterisations import Pixels
from .transforms import Identity

log = logging.getLogger(__name__)

#: Called with every State (e.g. a progress bar in pipeline jobs); set by the caller, off by default.
step_callback: contextvars.ContextVar = contextvars.ContextVar("step_callback", default=None)
#: Test hook: a forward pass over more rows than this raises ``torch.OutOfMemoryError``, as a GPU
#: that is too small would (``None``: off).
simulated_memory_rows: contextvars.ContextVar[int | None] = contextvars.ContextVar("simulated_memory_rows", default=None)


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
    - ``active_items``: items not stopped before this step's stopper ran (a device tensor).
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
    ``scores``: objective of each returned row, of ``transform.at_evaluation(meis)`` (what the model
    saw of it at scoring: unshifted, centre-cropped, a transparency MEI blended onto its evaluation
    background); per item: iterations taken and why it stopped."""

    meis: Tensor
    scores: Tensor
    row_items: Tensor
    n_iterations: list[int]
    stop_reasons: list[str]
    traces: dict[str, Tracker] = field(default_factory=dict)
    runtime_s: float = 0.0
    device: str = "cpu"
    n_meis: int = 1
    transform: Transform = field(default_factory=Identity)

    def items(self, start: int, stop: int) -> BatchResult:
        """The result of items ``start``–``stop - 1`` alone, as if they had been the whole batch
        (items never interact, so this is what a batch of just them returns)."""
        rows = item_rows(start, stop, self.n_meis)
        traces = {}
        for name, tracker in self.traces.items():
            traces[name] = copy.copy(tracker)
            traces[name].values = [value[rows] for value in tracker.values]
        return replace(self, meis=self.meis[rows], scores=self.scores[rows], row_items=self.row_items[rows] - start,
                       n_iterations=self.n_iterations[start:stop], stop_reasons=self.stop_reasons[start:stop], traces=traces)


@dataclass
class _Evaluated:
    """One step's forward and backward over the processed rows (the values may keep their autograd
    history: the State and the records detach what they keep)."""

    transformed: Tensor
    evaluation: Tensor
    penalty: Tensor | None
    progress: Tensor
    grad: Tensor  # whole batch (zeros on rows not processed)
    terms: dict[str, Tensor]


class _Batch:
    """The optimised rows and who is still active; stopped items are frozen where they stopped."""

    def __init__(self, method: Method, seeds: Sequence[int], shape: tuple[int, ...], device: torch.device):
        self.method = method
        self.layout = layout = ItemLayout.of_seeds(seeds, method.n_meis, device)
        self.n_items, self.n_meis = layout.n_items, layout.n_meis
        # the optimised variable lives in parameter space (the identity for pixels)
        initial, _ = layout.starts(method.initial, method.parameterisation.initial_shape(tuple(shape)))
        self.row_items = layout.row_items
        # every later random draw of a row is a function of (its item's seed, row, step, stream) alone
        self.streams = layout.streams()
        self.per_item, self.per_item_all = layout.per_item_mean, layout.per_item_all
        self.rows, self.full = torch.arange(len(self.row_items), device=device), True
        self.items = self.row_items  # item of every processed row: what objectives index by
        self.x = project_initial(method, initial.to(device), self.step(0)).requires_grad_(True)
        self.active = torch.ones(self.n_items, dtype=torch.bool, device=device)
        self.row_active = self.active[self.row_items]
        self.stopped_at = torch.full((self.n_items,), -1, dtype=torch.long, device=device)
        self.reason_codes = torch.zeros(self.n_items, dtype=torch.long, device=device)
        self.reason_names: list[str] = []
        self._reason_tables: dict[tuple[str, ...], Tensor] = {}
        # set once a stopper returns a mask: from then on frozen rows are restored after each update
        self.may_have_stopped = False
        self.evaluation = self.penalty = self.progress = torch.zeros(len(self.row_items), device=device)
        self.terms: dict[str, Tensor] = {}
        self.chunk = method.max_batch  # rows per forward pass (None: all); halved on out-of-memory
        self._chunks: tuple[Tensor, int, list[Chunk]] | None = None
        # None: float32 on the CPU, where the forward needs no context at all (one fewer enter/exit per step)
        context = forward_precision(method.precision, self.x.device)
        self._forward_context = None if isinstance(context, contextlib.nullcontext) else context
        # the identity parameterisation and transform are skipped, not called, in the per-step path
        self._pixels = type(method.parameterisation) is Pixels
        self._no_transform = type(method.transform) is Identity
        self._no_penalty = torch.zeros(len(self.row_items), device=device)
        self._kept: Tensor | None = None
        self._memory_rows = simulated_memory_rows.get()  # read once: a test sets it around the whole call

    # ---------------------------------------------------------------- forward and backward

    def step(self, i_iter: int) -> Step:
        return Step(i_iter, self.rows, self.row_items, self.streams, self.items)

    def evaluate(self, objective: Objective, step: Step) -> _Evaluated:
        """Forward and input gradient of the processed rows. Out of memory: halve the chunk of rows
        evaluated at once (whole items) and redo the step; every row's result stays the same."""
        while True:
            try:
                if self.chunk is None or len(self.rows) <= self.chunk:
                    return self._evaluate_all(objective, step)
                return self._evaluate_chunks(objective, step)
            except torch.OutOfMemoryError:
                current = min(self.chunk or len(self.rows), len(self.rows))
                halved = self.layout.halved(current)
                if halved is None:
                    raise
                self.chunk = halved
                log.warning("out of memory with %d rows per forward pass: continuing with %d", current, self.chunk)
                if self.x.is_cuda:
                    torch.cuda.empty_cache()

    def _forward(self, objective: Objective, x: Tensor, step: Step) -> tuple[Tensor, Tensor, Tensor | None, Tensor, dict]:
        limit = self._memory_rows
        if limit is not None and len(x) > limit:
            raise torch.OutOfMemoryError(f"simulated: {len(x)} rows in one forward pass, at most {limit} fit")
        method = self.method
        stimulus = x if self._pixels else method.parameterisation(x)
        transformed = stimulus if self._no_transform else method.transform(stimulus, step)
        if self._forward_context is None:
            evaluation = objective(transformed, step.items)
        else:
            with self._forward_context:  # the model forward alone runs in the method's precision
                evaluation = objective(transformed, step.items)
        if evaluation.dtype != torch.float32:
            evaluation = evaluation.float()  # bf16 outputs are widened
        regularized = transformed if method.regularize_transformed else stimulus
        penalty = sum(r(regularized, step) for r in method.regularizers) if method.regularizers else None
        progress = evaluation if method.sign > 0 else -evaluation
        progress = progress if penalty is None else progress - penalty
        return transformed, evaluation, penalty, progress, dict(getattr(objective, "last_terms", {}))

    def _evaluate_all(self, objective: Objective, step: Step) -> _Evaluated:
        x_in = self.x if self.full else self.x[self.rows]
        transformed, evaluation, penalty, progress, terms = self._forward(objective, x_in, step)
        # gradients of the input only: a user's model keeps no .grad and pays for no weight gradients
        (grad,) = torch.autograd.grad(-progress.sum(), self.x)
        return _Evaluated(transformed, evaluation, penalty, progress, grad, terms)

    def _evaluate_chunks(self, objective: Objective, step: Step) -> _Evaluated:
        grad = torch.zeros_like(self.x)
        parts = []
        for chunk in self._chunk_rows():
            # a leaf per chunk: the chunk's graph is freed before the next chunk runs
            leaf = self.x.detach()[chunk.rows].requires_grad_(True)
            part = self._forward(objective, leaf, Step(step.i_iter, chunk.rows, self.row_items, self.streams, chunk.items))
            (grad_rows,) = torch.autograd.grad(-part[3].sum(), leaf)
            grad[chunk.rows] = grad_rows
            parts.append([part[0].detach(), part[1].detach(), part[2], part[3].detach(), part[4]])
        transformed, evaluation, penalty, progress, terms = zip(*parts)
        penalty = None if penalty[0] is None else torch.cat([p.detach() for p in penalty])
        terms = {name: torch.cat([t[name] for t in terms]) for name in terms[0]}
        return _Evaluated(torch.cat(transformed), torch.cat(evaluation), penalty, torch.cat(progress), grad, terms)

    def _chunk_rows(self) -> list[Chunk]:
        """Chunks of the processed rows (whole items: an item's rows are consecutive), and their
        items; the same tensors until the rows change, so that objectives' per-item lookups stay cached."""
        if self._chunks is None or self._chunks[0] is not self.rows or self._chunks[1] != self.chunk:
            self._chunks = (self.rows, self.chunk, chunked(self.rows, self.row_items, self.layout.chunk_size(self.chunk)))
        return self._chunks[2]

    # ---------------------------------------------------------------- records and stopping

    def keep(self, evaluated: _Evaluated) -> None:
        """Whole-batch records, detached; rows of items that stopped before this step keep the values
        of their returned input."""
        evaluation = evaluated.evaluation.detach()
        # maximised without a penalty, the progress is the evaluation itself: one detached tensor for both
        progress = evaluation if evaluated.progress is evaluated.evaluation else evaluated.progress.detach()
        penalty = evaluated.penalty
        if penalty is None:
            penalty = self._no_penalty if self.full else torch.zeros_like(evaluation)
        else:
            penalty = penalty.detach()
        if self.full and not self.may_have_stopped:  # nothing frozen: the records are this step's values
            self.evaluation, self.penalty, self.progress = evaluation, penalty, progress
            for name, value in evaluated.terms.items():
                self.terms[name] = value.detach()
            return
        self.evaluation = self._record(self.evaluation, evaluation)
        self.penalty = self._record(self.penalty, penalty)
        self.progress = self._record(self.progress, progress)
        for name, value in evaluated.terms.items():
            self.terms[name] = self._record(self.terms.get(name), value.detach())

    def _record(self, old: Tensor | None, new: Tensor) -> Tensor:
        if old is None:
            return new
        if self.may_have_stopped:  # no sync: a select by the device-side mask
            mask = self.row_active if self.full else self.row_active[self.rows]
            current = old if self.full else old[self.rows]
            new = torch.where(mask.view(-1, *[1] * (new.dim() - 1)), new, current)
        if self.full:
            return new
        old[self.rows] = new
        return old

    def stop(self, stop: Any, reason: Any, i_iter: int, stopper: Any) -> bool:
        """Freeze the items ``stop`` names, on the device. True when every item has stopped (known
        without a sync only for a plain-bool stop)."""
        if not isinstance(stop, Tensor):
            if not stop:
                return False
            stopping, everything = self.active, True
        else:
            stopping = stop.to(device=self.active.device, dtype=torch.bool)
            stopping = (stopping.reshape(1).expand(self.n_items) if stopping.numel() == 1 else stopping.reshape(self.n_items)) & self.active
            everything = False
        self.stopped_at = torch.where(stopping, i_iter, self.stopped_at)
        codes = self._codes(reason, stopper)
        if not (isinstance(reason, str) and reason == "non_finite"):  # a stopper that ends an item whose objective is already NaN/inf
            # (e.g. before the first finite check) does not hide it: its reason is non_finite
            codes = torch.where(torch.isfinite(self.per_item(self.progress)), codes, self._code("non_finite"))
        self.reason_codes = torch.where(stopping, codes, self.reason_codes)
        self.active = self.active & ~stopping
        self.row_active = self.active[self.row_items]
        self.may_have_stopped = True
        return everything

    def _code(self, name: str) -> int:
        if name not in self.reason_names:
            self.reason_names.append(name)
        return self.reason_names.index(name)

    def _codes(self, reason: Any, stopper: Any) -> Tensor | int:
        """The stop reason as codes into ``reason_names``: one code, or one per item."""
        if isinstance(reason, str):
            return self._code(reason)
        if isinstance(reason, Reasons):
            table = self._reason_tables.get(reason.names)
            if table is None:
                table = torch.tensor([self._code(n) for n in reason.names], device=self.active.device)
                self._reason_tables[reason.names] = table
            return table[reason.codes.to(table.device)]
        if isinstance(reason, (list, tuple)) and len(reason) == self.n_items and all(isinstance(r, str) for r in reason):
            return torch.tensor([self._code(r) for r in reason], device=self.active.device)  # host → device only
        return self._code(type(stopper).__name__)

    def check(self, i_iter: int, broken: Tensor | None = None) -> tuple[bool, bool]:
        """The host sync: stop the ``broken`` items (non-finite, reason ``non_finite``) and drop stopped
        items' rows from the forward pass. One read of the host, two when an item broke. Returns (every
        item has stopped, some item stopped at this very step)."""
        reads = [self.row_active.sum(), (self.stopped_at == i_iter).any().long()]
        if broken is not None:
            reads.append(broken.any().long())
        values = torch.stack(reads).tolist()
        if broken is not None and values[2]:
            self.stop(broken, "non_finite", i_iter, None)
            return self.check(i_iter)
        active_rows, stopped_now = values[:2]
        if 0 < active_rows < len(self.rows):
            self.rows, self.full = self.row_active.nonzero().flatten(), False
            self.items = self.row_items[self.rows]
        return active_rows == 0, bool(stopped_now)

    # ---------------------------------------------------------------- the update

    def whole_batch(self, rows_values: Tensor) -> Tensor:
        """Values of the processed rows spread over the whole batch (zeros elsewhere)."""
        if self.full:
            return rows_values
        return torch.zeros_like(self.x).index_copy_(0, self.rows, rows_values)

    def update(self, optimizer: torch.optim.Optimizer, step: Step) -> None:
        """The optimiser step, then the postprocessors on the processed rows (``step``'s, or fewer
        after a check). Rows of stopped items get their frozen values back afterwards (the
        optimiser's state, e.g. Adam's moments, and the postprocessors would otherwise move them)."""
        x, frozen = self.x, self.may_have_stopped
        if frozen:
            if self._kept is None:
                self._kept = torch.empty_like(x)
            self._kept.copy_(x.detach())
        optimizer.step()
        if self.method.postprocessors:
            if not self.full and self.rows is not step.rows:
                step = Step(step.i_iter, self.rows, step.row_items, step.streams, self.items)
            updated = x if self.full else x[self.rows]
            for postprocessor in self.method.postprocessors:
                updated = postprocessor(updated, step)
            if self.full:
                x.data = updated  # the postprocessors' new tensor becomes x: no copy (x stays the optimiser's parameter)
            else:
                x[self.rows] = updated
        if frozen:
            mask = self.row_active.view(-1, *[1] * (x.dim() - 1))
            x.copy_(torch.where(mask, x, self._kept))

    def scores(self, objective: Objective) -> Tensor:
        """The objective of exactly the returned rows, in float32 (random transforms centred)."""
        transform = self.method.transform
        if not transform.random and self.method.precision == "float32":
            return self.evaluation  # already the objective of the frozen (or last) inputs
        return self.layout.score(objective, self.meis(), self.chunk, lambda x, chunk: transform.at_evaluation(x)).float()

    def meis(self) -> Tensor:
        """The returned MEIs: the optimised variables decoded into stimuli."""
        with torch.no_grad():
            return self.method.parameterisation(self.x.detach())

    def stop_records(self) -> tuple[list[int], list[str]]:
        return self.stopped_at.tolist(), [self.reason_names[c] for c in self.reason_codes.tolist()]


#: without per-item stoppers (which check every ``stop_check_every`` steps anyway), the steps between
#: reads of "are all objectives finite?": a read every step cost 4 % of a small model's step on the
#: CPU (benchmarks/engine.py); a broken item is then stopped within this many steps
NON_FINITE_CHECK_EVERY = 10


@dataclass(frozen=True)
class _Loop:
    """What every step of one ``optimize`` call needs to know, fixed before the first step."""

    check_every: int  # steps between stop checks
    finite_every: int  # steps between reads of "are all objectives finite?" without per-item stops
    intervals: tuple[int, ...]  # the trackers' intervals: a check on a tracker's step costs no extra sync
    callback: Any
    #: only trackers and callbacks read ``input_`` after the in-place optimiser step: copied for them alone
    copy_input: bool
    #: the first step that builds a State and calls the stopper: 0, or, when no tracker or callback
    #: reads the State, the stopper's ``earliest_stop`` (``NumIterations``: its last step alone)
    state_from: int

    @classmethod
    def of(cls, method: Method, device: torch.device) -> "_Loop":
        callback = step_callback.get()
        readers = bool(method.trackers) or callback is not None
        check_every = method.stop_check_every or DEFAULT_STOP_CHECK_EVERY["cpu" if device.type == "cpu" else "gpu"]
        earliest_stop = getattr(method.stopper, "earliest_stop", None)  # a stopper may be any callable
        return cls(
            check_every=check_every, finite_every=max(check_every, NON_FINITE_CHECK_EVERY),
            intervals=tuple(tracker.interval for tracker in method.trackers.values()), callback=callback,
            copy_input=readers, state_from=0 if readers or earliest_stop is None else earliest_stop,
        )


def optimize(
    objective: Objective,
    method: Method,
    seeds: list[int],
    shape: tuple[int, ...],
    device: str | torch.device = "cpu",
) -> BatchResult:
    """Optimise one item per seed (each with ``method.n_meis`` rows of ``shape`` = C×H×W or C×T×H×W).

    The objective is called with the item index of every row it evaluates (item ``k`` owns rows
    ``k·n_meis … (k+1)·n_meis − 1``: :mod:`mei_core.items`, the one home of that layout).
    """
    started = time.perf_counter()
    batch = _Batch(method, seeds, shape, torch.device(device))
    optimizer = method.make_optimizer([batch.x])
    loop = _Loop.of(method, batch.x.device)
    no_grad = torch.no_grad()  # one instance, entered once per step: everything after the gradient
    for i_iter in itertools.count():
        step = batch.step(i_iter)
        evaluated = batch.evaluate(objective, step)
        with no_grad:
            finished = _after_gradient(batch, method, optimizer, evaluated, step, i_iter, loop)
        if finished:
            break

    n_iterations, stop_reasons = batch.stop_records()
    return BatchResult(
        meis=batch.meis().to("cpu"),
        scores=batch.scores(objective).detach().to("cpu"),
        row_items=batch.row_items.to("cpu"),
        n_iterations=n_iterations,
        stop_reasons=stop_reasons,
        traces=method.trackers,
        runtime_s=time.perf_counter() - started,
        device=str(batch.x.device),
        n_meis=batch.n_meis,
        transform=method.transform,
    )


def _after_gradient(
    batch: _Batch, method: Method, optimizer: torch.optim.Optimizer, evaluated: _Evaluated, step: Step, i_iter: int, loop: _Loop,
) -> bool:
    """One step after its gradient, outside autograd: records, preconditioning, the stopper, the
    checks, the optimiser step and postprocessing, trackers. True when every item has stopped."""
    x = batch.x
    batch.keep(evaluated)
    rows_grad = evaluated.grad if batch.full else evaluated.grad[batch.rows]
    for preconditioner in method.preconditioners:
        rows_grad = preconditioner(rows_grad, step)
    grad = batch.whole_batch(rows_grad)
    state, finished, stopped_now = None, False, False
    if i_iter >= loop.state_from:  # before it nothing reads a State: no stopper call, no State
        state = State(
            i_iter=i_iter, sign=method.sign, evaluation=batch.evaluation, reg_term=batch.penalty,
            progress_per_row=batch.progress, evaluation_per_item=batch.per_item(batch.evaluation),
            progress=batch.per_item(batch.progress), input_=x.detach().clone() if loop.copy_input else x.detach(),
            transformed_input=evaluated.transformed.detach(), active_items=batch.active, grad=evaluated.grad,
            preconditioned_grad=grad, objective_terms=batch.terms,
        )
        stop, state.stopper_output = method.stopper(state)
        finished = stopped_now = batch.stop(stop, state.stopper_output, i_iter, method.stopper)
    if not finished:
        x.grad = grad
        # a check on a tracker's step costs nothing extra: the tracker syncs anyway. It also stops
        # items whose objective or gradient is not finite, where their input still is; without
        # per-item stops, a check reads one number (all objectives finite?) and nothing more
        if (i_iter + 1) % loop.check_every == 0 or any(i_iter % n == 0 for n in loop.intervals):
            if batch.may_have_stopped:
                broken = batch.active & ~(torch.isfinite(batch.per_item(batch.progress)) & batch.per_item_all(torch.isfinite(evaluated.grad.flatten(1)).all(1)))
                finished, stopped_now = batch.check(i_iter, broken)
            elif (i_iter + 1) % loop.finite_every == 0:
                progress = batch.per_item(batch.progress)
                if not math.isfinite(float(progress.sum())):
                    finished, stopped_now = batch.check(i_iter, batch.active & ~torch.isfinite(progress))
    if not finished:
        batch.update(optimizer, step)
    if state is not None:
        state.post_processed_input = x.detach()
        if not finished or stopped_now:  # steps after the last item stopped are not recorded
            for tracker in method.trackers.values():
                tracker(state)
        if loop.callback is not None:
            loop.callback(state)
    return finished
