"""Gradient-free MEIs with CMA-ES: ``method_fn: mei_core.cmaes.cma_es``.

For models whose output has no useful gradient (spike counts, hard thresholds, a closed-loop rig that
only returns responses): the objective is only ever evaluated, under ``torch.no_grad``. Each row (one
MEI: an item, i.e. one seed and objective target, has ``n_meis`` rows) runs its own CMA-ES over a
parameterisation (``Pixels`` for small inputs, ``Gabor``/``DoG`` parameters, a truncated ``Spectral``
or ``LinearBasis`` (PCA) basis, or any ``Decoder`` by import path, see
:mod:`mei_core.parameterisations`); candidates are decoded, put through the contrast budget
(``postprocessing``, e.g. ``ChangeNorm`` + ``ClipRange`` as in the default preset), through the
``transform`` (what the model sees) and scored.

Per generation: every active row asks its search for ``population_size`` candidates; all
candidates of all rows are decoded, budgeted, transformed and evaluated in ONE objective call; every
search is told its own values and decides, alone, whether it stops. The only Python loop over rows
is cma's own ask/tell bookkeeping (one ``CMAEvolutionStrategy`` object per search, which cma needs).

Rows of an item are seeded as the gradient engine seeds them: the item's torch generator (seeded by
its seed) draws the ``n_meis`` starts in one ``initial`` draw, then one sampler seed per row; so an
item's MEIs are the same alone and in any batch, and with ``n_meis: 1`` the search is the one an item
had before ``n_meis`` existed. The rows of an item are independent searches (nothing pushes them
apart): they differ where the objective has several optima (a complex cell's phases, a start that
ends in another local optimum). Each row stops on its own; the item's ``n_iterations`` is that of its
longest-running row and its stop reason that row's.

Random transforms (``Jitter``, ``PadJitter``, ``RandomCrop``, ``RandomScale``, ``RandomRotation``, a
random ``AlphaBlend`` background): at generation ``g`` every row draws ``transform_draws`` (K)
transforms from its own counter-based streams at step ``g`` (:mod:`mei_core.streams`); a candidate's
fitness is its mean objective over those K draws, and all ``population_size`` candidates of the row's
search are evaluated through the same K draws: common random numbers, so the ranking compares
candidates, not draws, and new draws every generation keep the search from fitting a fixed few.
Why K > 1 by default: CMA-ES moves its mean to the weighted best candidates at once (learning rate
1), so with one draw per generation (lucent's one draw per step) the mean chases each generation's
shift instead of averaging over shifts. Measured on the demo population's first 8 simple cells
(Gabor, norm 10, ``Jitter(2)``, ``population_size: 20``, 150 generations, seeds 0–7;
``tests/test_cmaes.py`` checks the first 4): the MEI's correlation with the true filter, up to a
shift of at most 2 pixels (a jittered objective pins the position only loosely), median 0.84 (worst
0.68) with K = 1, 0.95 (worst 0.91) with K = 4, 0.96 (worst 0.82) with K = 8; its mean response over
the 25 shifts of ``Jitter(2)`` was 0.75× (worst 0.36×), 0.94× (worst 0.89×) and 0.96× (worst 0.84×)
that of the MEI searched without jitter, which for these linear-nonlinear cells is their filter, already the most
jitter-robust stimulus. Fixing the K draws for the whole search (one deterministic objective) fitted
them instead (K = 4, population 10: one of 4 cells' MEIs fell to r = −0.02). The ``best`` candidate
was scored under K lucky draws, so ``returned: mean`` (the default) is the robust MEI. The final
score is of the transform's deterministic counterpart (``at_evaluation``: uncropped, unshifted; the
evaluation background), as for gradient methods.

Why the ``cma`` package (Hansen's reference implementation, numpy only): its sampler takes an
injected ``randn``, so every search draws from a ``numpy.random.Generator`` seeded from its item's
torch generator and never from numpy's global state: an item alone equals the item in a batch, and
identical runs are bitwise identical on CPU. EvoTorch vectorises the population of one search on
torch, but a batch of independent searches would still be one searcher object per item; the model
call, the expensive part, is batched here anyway, so the lighter dependency wins.

Flat starts (``flat_generations``, default 5): on a thresholded or spiking model the first
generation often sees nothing (every candidate scores 0), and cma's ``tolfun`` ends such a search
after one generation, before its ``tolflatfitness``. A row instead keeps its search alive while all
its candidates score alike: after ``flat_generations`` such generations it restarts from its start
with twice the step (``FLAT_RESTART_STEP``: a flat search's mean random-walks away from a well-chosen
start; sampling around the start again, a little wider, finds more), until a candidate scores
differently; it then restarts from that candidate with a quarter of the step
(``FIRST_RESPONSE_STEP``: cma moves only part-way to a lone responder among tied zeros and loses it
again), and again from its best candidate whenever its search goes flat below that best for
``flat_generations``. A row still flat at its end stops with ``flat_restarts_exhausted``
(``flat_restarts`` caps the restarts; ``n_restarts`` counts them per item). Every restart draws from
the row's next sampler stream, so it is the same alone and in any batch. Measured on 12 simple cells
of the demo population made silent below 0.6× their best response under the budget
(``relu(f·x − θ)``; ``benchmarks/cmaes.py``, section 4; seeds 0–5): with the ``cma_es`` preset 71 of
72 searches found a response (MEI r with the filter ≥ 0.99), against 6 with cma's stops and 20 with
``tolfun: 0, tolfunhist: 0``; from ``RandomNormal(1)`` starts (``cma_es_preset``) 56, 0 and 3.
A model whose responses are never exactly equal (rates) never restarts.

Config keys: :data:`OPTIONS` (all optional; every error names its key, e.g. ``config.sigma0``), shown
in config/README.md ("Gradient-free MEIs"). ``cma_options`` are cma's own (``cma.CMAOptions``), except
those this module sets itself (:data:`RESERVED_OPTIONS`); ``tolflatfitness`` defaults to 50.

Model evaluations per row: ``n_iterations × population_size`` (× K with a random transform), plus
one for the score.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .components import InitialGuess, Parameterisation, Postprocessor, Step, Tracker, Transform
from .config import build_component, build_components, check_numbers_are_numbers
from .engine import BatchResult, step_callback
from .errors import MEIConfigError
from .method import build_transform, check_stimulus
from .objectives.base import Objective, as_objective
from .options import DEVICE, DIRECTION, Option, check_known
from .items import Chunk, ItemLayout, chunked, rows_per_chunk, score_chunks
from .parameterisations import build_parameterisation
from .streams import RowStreams
from .transforms import Identity

__all__ = ["cma_es", "cma_es_preset", "build_settings", "validate_config", "CMAESSettings", "CMAESResult"]

#: cma options this module sets itself: the key to use instead, or why not
RESERVED_OPTIONS = {
    "popsize": "use population_size", "maxiter": "use max_generations", "randn": "every search samples from its own generator",
    "seed": "every search samples from its own generator", "verbose": "cma stays quiet", "verb_disp": "cma stays quiet",
    "verb_log": "cma writes no files",
}
DEFAULT_INITIAL = {"path": "RandomNormal", "kwargs": {"std": 1.0}}
#: cma defaults changed here (``cma_options`` overrides them): on integer counts three quarters of a
#: generation often tie at the best while the search still climbs, and cma's default stops after one
#: such generation (flat generations below the best, and flat starts: ``flat_generations``)
DEFAULT_CMA_OPTIONS = {"tolflatfitness": 50}
#: Flat starts (``flat_generations``): a restart from the start samples with this multiple of
#: ``sigma0``, a restart from a candidate that stood out with this one. Measured on 12 thresholded
#: simple cells × seeds 0–2 (module docstring), searches that found a response from
#: ``RandomNormal(1)`` starts / from the ``cma_es`` preset's: restarts at 2× ``sigma0`` 30/36 and
#: 35/36, at 1× 25 and 36, at 4× 16 and 27; from a responder at ¼ 30 and 35, ½ 30 and 35, 1× 20 and 35.
FLAT_RESTART_STEP = 2.0
FIRST_RESPONSE_STEP = 0.25


@dataclass
class CMAESSettings:
    parameterisation: Parameterisation
    initial: InitialGuess
    n_meis: int = 1
    transform: Transform = field(default_factory=Identity)
    transform_draws: int = 4
    postprocessors: list[Postprocessor] = field(default_factory=list)
    sigma0: float = 0.5
    population_size: int | None = None
    max_generations: int = 200
    threshold: float | None = None
    sign: float = 1.0
    returned: str = "mean"
    cma_options: dict[str, Any] = field(default_factory=dict)
    trace_interval: int | None = None
    max_batch: int | None = None
    flat_generations: int | None = 5
    flat_restarts: int | None = None


#: ``cma_es``'s config, declared once: the checks in :func:`build_settings` and the table in
#: config/README.md ("Gradient-free MEIs") come from here
OPTIONS: tuple[Option, ...] = (
    Option("parameterisation", "slot", default_doc="`Pixels`",
           doc="what the search vector is (one row of the variable, flattened); same specs as the slot of gradient methods."),
    Option("initial", "slot", default_doc="`RandomNormal(std=1)`",
           doc="the search's start, drawn in parameter space from the item's generator (the `n_meis` starts of an item in one draw, as for gradient methods)."),
    Option("n_meis", "integer", default=1, minimum=1,
           doc="MEIs per neuron and seed: independent searches from different starts, stored along `mei_index` as for gradient methods. Nothing pushes them apart; they differ where the objective has several optima (a complex cell's MEIs come out at different phases). An item's `n_iterations` and `stop_reason` are those of its longest-running search."),
    Option("transform", "slot",
           doc="what the model sees of every candidate, as the slot of gradient methods (`Jitter`, `PadJitter`, `RandomCrop`, `RandomScale`, `RandomRotation`, `AlphaBlend`, …). A random transform is drawn `transform_draws` times per search and generation from the search's own stream; a candidate's fitness is its mean over those draws, and all candidates of a search share them (so they are ranked against each other, not against luck). The score is of the transform's deterministic counterpart (unshifted, centre crop)."),
    Option("transform_draws", "integer", default=4, minimum=1,
           doc="draws per search and generation (each costs one model evaluation per candidate). With 1, CMA-ES's mean chases each generation's draw: on the demo's simple cells with `Jitter(2)` the MEI's correlation with the filter (up to the shift) fell from a median 0.95 to 0.84, and its mean response under jitter from 0.94× to 0.75× that of the unjittered MEI (`mei_core/cmaes.py`)."),
    Option("sigma0", "number", default=0.5, minimum=0, exclusive=True, doc="initial step size in parameter space."),
    Option("population_size", "integer", minimum=2, nullable=True, default_doc="`4 + ⌊3 ln D⌋`",
           doc="candidates per search and generation (raise it for noisy, e.g. Poisson, responses, and with random transforms)."),
    Option("max_generations", "integer", default=200, minimum=1, doc="per search (stop reason `max_generations`)."),
    Option("threshold", "number", nullable=True, doc="stop a search once its best objective reaches it (stop reason `threshold`)."),
    Option("postprocessing", "slot", doc="`Postprocessor` specs: the contrast budget on the decoded stimulus."),
    DIRECTION,
    Option("returned", "string", default="mean", choices={"mean": "the search mean", "best": "the best candidate"},
           doc="the MEI is the decoded search mean (robust to noise) or the best candidate evaluated."),
    Option("cma_options", "mapping", default={},
           doc="further `cma.CMAOptions` (`tolfun`, `tolx`, `CMA_diagonal` for large D, …; `popsize`, `maxiter`, `seed`, `randn` and verbosity are set by the method). `tolflatfitness` defaults to 50 (cma's 1 stops a search after one flat generation; flat starts are `flat_generations`'s); cma's own stops give their names as stop reasons."),
    Option("trace_interval", "integer", minimum=1, nullable=True,
           doc="record `best` (best objective so far) and `mean` (mean candidate objective) per MEI every that many generations (`traces.parquet`)."),
    Option("flat_generations", "integer", default=5, minimum=1, nullable=True,
           doc="for thresholded and spiking models, where a first generation often sees nothing: a search whose candidates have all scored alike for that many generations (below its best, or while nothing has stood out; alike at its best is a plateau, left to cma) restarts, from its start with twice `sigma0` while nothing has ever stood out, else from its best candidate with a quarter of it (also at once, on its first candidate that stands out). A search still flat at its end stops with `flat_restarts_exhausted`. null: cma's own stops (its `tolfun` ends a flat start after one generation). On 12 thresholded simple cells × 6 seeds the `cma_es` preset found a response in 71 of 72 searches, 6 with null (`mei_core/cmaes.py`)."),
    Option("flat_restarts", "integer", minimum=0, nullable=True, default_doc="null (until `max_generations`)",
           doc="most restarts of a flat search (stop reason `flat_restarts_exhausted` after the last one's `flat_generations`); the result's `n_restarts` counts them per item."),
    Option("max_batch", "integer", minimum=1, nullable=True,
           doc="most rows per model call (as `ensembles.<name>.max_batch`, which the pipeline sets; the smaller wins); results do not change."),
    DEVICE,
)
KEYS = tuple(option.name for option in OPTIONS)


def build_settings(config: Mapping[str, Any], key: str = "config") -> CMAESSettings:
    """Validate a ``cma_es`` config (:data:`OPTIONS`) and build fresh components; every error names its key."""
    if not isinstance(config, Mapping):
        raise MEIConfigError(f"{key}: a method config must be a mapping, got {type(config).__name__}")
    check_known(config, KEYS, key, "unknown key for mei_core.cmaes.cma_es; known keys")
    check_numbers_are_numbers(dict(config), key)
    value = {option.name: option.read(config, key) for option in OPTIONS}
    initial = build_component(value["initial"] or DEFAULT_INITIAL, f"{key}.initial")
    if not isinstance(initial, InitialGuess):
        raise MEIConfigError(f"{key}.initial: {type(initial).__name__} must subclass mei_core.components.InitialGuess")
    postprocessors = build_components(value["postprocessing"], f"{key}.postprocessing")
    for i, p in enumerate(postprocessors):
        if not isinstance(p, Postprocessor):
            where = f"{key}.postprocessing[{i}]" if isinstance(value["postprocessing"], (list, tuple)) else f"{key}.postprocessing"
            raise MEIConfigError(f"{where}: {type(p).__name__} must subclass mei_core.components.Postprocessor")
    options = value["cma_options"]
    if options:
        import cma

        known = cma.CMAOptions()
        for name in options:
            if name in RESERVED_OPTIONS:
                raise MEIConfigError(f"{key}.cma_options.{name}: set by mei_core.cmaes ({RESERVED_OPTIONS[name]})")
            if name not in known:
                raise MEIConfigError(f"{key}.cma_options.{name}: unknown cma option (see cma.CMAOptions())")
    return CMAESSettings(
        parameterisation=build_parameterisation(value["parameterisation"], f"{key}.parameterisation"),
        initial=initial,
        n_meis=value["n_meis"],
        transform=build_transform(value["transform"], f"{key}.transform"),
        transform_draws=value["transform_draws"],
        postprocessors=postprocessors,
        sigma0=value["sigma0"],
        population_size=value["population_size"],
        max_generations=value["max_generations"],
        threshold=value["threshold"],
        sign=1.0 if value["direction"] == "maximize" else -1.0,
        returned=value["returned"],
        cma_options=options,
        trace_interval=value["trace_interval"],
        max_batch=value["max_batch"],
        flat_generations=value["flat_generations"],
        flat_restarts=value["flat_restarts"],
    )


def validate_config(config: Mapping[str, Any], key: str = "config", shape: Sequence[int] | None = None) -> None:
    """Build once and throw away: every error a run would hit at start-up (the pipeline's plan calls it).
    With the input ``shape``, one item's starts are drawn, decoded and put through the transform, as
    :func:`mei_core.method.validate_method` does for gradient methods."""
    settings = build_settings(config, key)
    if shape is not None:
        try:
            starts, _ = _starts(settings, [0], tuple(settings.parameterisation.initial_shape(tuple(shape))))
            with torch.no_grad():
                stimulus = _decode(settings, starts, Step.of_seeds([0], [0] * len(starts)))
        except MEIConfigError:
            raise
        except Exception as error:
            raise MEIConfigError(f"{key}.initial: {type(error).__name__}: {error} (inputs of this ensemble are {list(shape)})") from error
        check_stimulus(stimulus, settings.transform, shape, key)


class GenerationRecord(Tracker):
    """One value per row per recorded generation (rows whose search stopped keep their last value)."""

    def read(self, state: Any) -> Tensor:  # filled by cma_es directly, never from a State
        raise NotImplementedError


@dataclass
class CMAESResult(BatchResult):
    """A ``BatchResult`` with, per item, the restarts of its flat start (``flat_generations``; of its
    longest-running search, whose ``n_iterations`` and ``stop_reason`` the item reports)."""

    n_restarts: list[int] = field(default_factory=list)

    def items(self, start: int, stop: int) -> "CMAESResult":
        return replace(super().items(start, stop), n_restarts=self.n_restarts[start:stop])


@dataclass
class Generation:
    """What ``mei_core.engine.step_callback`` receives once per generation (e.g. a progress bar)."""

    i_iter: int
    evaluation_per_item: Tensor
    active_items: Tensor


def _search(cma: Any, settings: CMAESSettings, start: Tensor | np.ndarray, sampler_seed: int, stream: int = 0, step: float = 1.0) -> Any:
    """One row's CMA-ES from ``start`` with ``step`` × ``sigma0``, sampling from a numpy generator of
    its own: the row's ``stream``-th (0: its first search; every restart takes the next)."""
    sampler = np.random.default_rng(sampler_seed if stream == 0 else [sampler_seed, stream])
    options = {
        "randn": lambda *shape: sampler.standard_normal(shape), "seed": float("nan"),
        "verbose": -9, "verb_disp": 0, "verb_log": 0, "maxiter": math.inf, **DEFAULT_CMA_OPTIONS, **settings.cma_options,
    }
    if settings.population_size is not None:
        options["popsize"] = settings.population_size
    return cma.CMAEvolutionStrategy(np.asarray(start, dtype=np.float64).flatten(), settings.sigma0 * step, options)


def _starts(settings: CMAESSettings, seeds: Sequence[int], variable_shape: tuple[int, ...]) -> tuple[Tensor, list[int]]:
    """Every row's start (``rows × variable``, on the CPU) and sampler seed: the item's generator
    draws its ``n_meis`` starts as the gradient engine draws them (:meth:`ItemLayout.starts`), then
    one sampler seed per row (with ``n_meis: 1``, exactly the draws of one search per item)."""
    starts, generators = ItemLayout.of_seeds(seeds, settings.n_meis).starts(settings.initial, variable_shape)
    sampler_seeds = [seed for generator in generators for seed in torch.randint(0, 2**62, (settings.n_meis,), generator=generator).tolist()]
    return starts, sampler_seeds


def _decode(settings: CMAESSettings, z: Tensor, step: Step) -> Tensor:
    """Candidates (rows of the parameter space) → budgeted stimuli, every row on its own."""
    stimuli = settings.parameterisation(z)
    for postprocessor in settings.postprocessors:
        stimuli = postprocessor(stimuli, step)
    return stimuli


@dataclass
class _Candidates:
    """The rows of one generation's objective call while the active searches stay the same: each of
    the A active searches' λ candidates, evaluated ``draws`` times (rows ordered search, candidate,
    draw). Draw ``d`` of search row ``r`` uses stream row ``r·draws + d``: every candidate of a
    search sees the same draws."""

    decoded: tuple[Tensor, Tensor, RowStreams]  # rows, items, streams of the A·λ decoded candidates
    items: Tensor  # item of each of the A·λ·draws evaluated rows
    streams: RowStreams  # their streams
    chunks: list[Chunk]  # per objective call (one, or max_batch rows each): its rows and their items

    @classmethod
    def of(cls, active: Tensor, population: int, draws: int, row_items: Tensor, streams: RowStreams, max_batch: int | None) -> "_Candidates":
        decoded_rows = active.repeat_interleave(population)
        search_rows = decoded_rows.repeat_interleave(draws)
        draw_rows = search_rows * draws + torch.arange(draws, device=active.device).repeat(len(decoded_rows))
        items = row_items[search_rows]
        # every candidate is scored alone (nothing ties its rows together): chunks of any size
        size = rows_per_chunk(max_batch, len(items))
        return cls(
            decoded=(torch.arange(len(decoded_rows), device=active.device), row_items[decoded_rows], streams.repeated(decoded_rows * draws)),
            items=items,
            streams=streams.repeated(draw_rows),
            chunks=chunked(torch.arange(len(items), device=active.device), items, size),
        )

    def decoding(self, generation: int) -> Step:
        rows, items, streams = self.decoded
        return Step(generation, rows, items, streams, items)

    def evaluate(self, objective: Objective, transform: Transform, stimuli: Tensor, generation: int) -> Tensor:
        """The objective of every evaluated row (``stimuli``: one per row) through its transform draw."""
        return score_chunks(objective, stimuli, self.chunks,
                            lambda x, chunk: transform(x, Step(generation, chunk.rows, self.items, self.streams, chunk.items)))


def cma_es(
    objective: Objective,
    config: Mapping[str, Any],
    seeds: Sequence[int],
    shape: Sequence[int],
    device: str | torch.device = "cpu",
) -> CMAESResult:
    """``n_meis`` CMA-ES searches per seed (item ``k`` targets what ``objective`` gives item ``k``), all
    candidates of a generation in one objective call. Returns the decoded, budgeted MEIs (rows × C×H×W
    on the CPU, the rows of an item consecutive), their objective values (``scores``, of the
    transform's ``at_evaluation`` view), per item the generations run, why it stopped and the restarts
    of its flat start."""
    import cma  # here, not at module level: planning a pipeline validates configs without it
    from threadpoolctl import ThreadpoolController

    # cma's bookkeeping (an eigendecomposition of each D×D covariance) runs numpy's BLAS on small
    # matrices, where OpenBLAS's threads only cost: 64×64 eigh 0.8 ms on one thread, 23 ms on two
    # shared cores. Only that bookkeeping is limited; the model runs with the caller's threads.
    one_thread = ThreadpoolController()

    started = time.perf_counter()
    settings = build_settings(config)
    target = torch.device(device)
    objective = as_objective(objective).to(target)
    layout = ItemLayout.of_seeds(seeds, settings.n_meis, target)
    starts, sampler_seeds = _starts(settings, seeds, tuple(settings.parameterisation.initial_shape(tuple(int(s) for s in shape))))
    variable_shape = tuple(starts.shape[1:])  # the initial guess may widen it (an alpha channel)
    dimension = math.prod(variable_shape)
    if dimension < 2:
        raise MEIConfigError(f"config.parameterisation: CMA-ES needs at least 2 parameters, {type(settings.parameterisation).__name__} has {dimension}")
    n_rows, row_items = layout.n_rows, layout.row_items
    # every random draw of a row (its transforms) is a function of (its item's seed, row, generation)
    draws = settings.transform_draws if settings.transform.random else 1
    # row r's d-th transform draw of a generation comes from stream row r·draws + d (with one draw:
    # row r's own stream, as in the gradient engine)
    streams = layout.streams(draws)
    searches = [_search(cma, settings, starts[row], sampler_seeds[row]) for row in range(n_rows)]
    population = searches[0].popsize if searches else 0

    best = np.full(n_rows, -np.inf)  # best sign·objective so far
    worst = np.full(n_rows, np.inf)  # a row whose worst equals its best has seen one value only: a flat start
    # generations in a row in which all candidates of the row's current search scored the same
    flat_run = [0] * n_rows
    searches_begun, n_restarts = [1] * n_rows, [0] * n_rows
    best_x: list[np.ndarray] = [search.mean for search in searches]
    n_iterations, stop_reasons = [0] * n_rows, [""] * n_rows
    records = {"best": GenerationRecord(), "mean": GenerationRecord()} if settings.trace_interval else {}
    last_mean = np.full(n_rows, np.nan)
    active = list(range(n_rows))
    restarting = settings.flat_generations is not None
    callback = step_callback.get()
    candidates: _Candidates | None = None
    for generation in itertools.count():
        if not active:
            break
        with one_thread.limit(limits=1, user_api="blas"):
            asked = [searches[row].ask() for row in active]
        if candidates is None:  # rebuilt only when the active set changes (objectives cache lookups by items)
            candidates = _Candidates.of(torch.tensor(active, device=target), population, draws, row_items, streams, settings.max_batch)
        asked_z = torch.from_numpy(np.stack([np.asarray(a) for a in asked]))  # A×λ×D float64
        z = asked_z.reshape(-1, *variable_shape).to(device=target, dtype=torch.float32)
        with torch.no_grad():
            stimuli = _decode(settings, z, candidates.decoding(generation))
            if draws > 1:
                stimuli = stimuli.repeat_interleave(draws, dim=0)
            values = candidates.evaluate(objective, settings.transform, stimuli, generation)
        # a candidate's fitness: its mean objective over the row's draws of this generation
        progress = settings.sign * values.detach().double().cpu().numpy().reshape(len(active), population, draws).mean(2)
        still = []
        for j, row in enumerate(active):
            with one_thread.limit(limits=1, user_api="blas"):
                searches[row].tell(asked[j], (-progress[j]).tolist())  # cma minimises
            i_best = int(np.argmax(progress[j]))
            row_was_flat = best[row] == worst[row]
            if progress[j, i_best] > best[row]:
                best[row], best_x[row] = progress[j, i_best], np.asarray(asked[j][i_best])
            worst[row] = min(worst[row], float(progress[j].min()))
            flat = restarting and best[row] == worst[row]
            # all candidates alike: at the row's best (a plateau at the top: cma's tolflatfitness) or below it
            flat_generation = restarting and progress[j].min() == progress[j, i_best] and (flat or progress[j, i_best] < best[row])
            flat_run[row] = flat_run[row] + 1 if flat_generation else 0
            last_mean[row] = settings.sign * progress[j].mean()
            reason = None
            if settings.threshold is not None and best[row] >= settings.sign * settings.threshold:
                reason = "threshold"
            elif generation + 1 >= settings.max_generations:
                reason = "flat_restarts_exhausted" if flat else "max_generations"
            elif restarting and (flat_generation or row_was_flat):
                start = None
                if row_was_flat and not flat:  # its first candidate that stands out: search on from there, in small steps
                    start, step = best_x[row], FIRST_RESPONSE_STEP
                elif flat_run[row] < settings.flat_generations:
                    pass
                elif settings.flat_restarts is not None and n_restarts[row] >= settings.flat_restarts:
                    reason = "flat_restarts_exhausted"
                else:  # nothing ever stood out: from the start in larger steps; else (lost): from the best in small ones
                    start, step = (starts[row], FLAT_RESTART_STEP) if flat else (best_x[row], FIRST_RESPONSE_STEP)
                    n_restarts[row] += 1
                if start is not None:
                    searches[row] = _search(cma, settings, start, sampler_seeds[row], searches_begun[row], step)
                    searches_begun[row] += 1
                    flat_run[row] = 0
            else:
                with one_thread.limit(limits=1, user_api="blas"):
                    stopped = searches[row].stop()
                reason = next(iter(stopped)) if stopped else None
            if reason is None:
                still.append(row)
            else:
                n_iterations[row], stop_reasons[row] = generation + 1, str(reason)
        if records and generation % settings.trace_interval == 0:
            records["best"].steps.append(generation)
            records["best"].values.append(torch.from_numpy(settings.sign * best).float())
            records["mean"].steps.append(generation)
            records["mean"].values.append(torch.from_numpy(last_mean.copy()).float())
        if callback is not None:
            running = torch.zeros(n_rows, dtype=torch.bool)
            running[still] = True
            callback(Generation(generation, layout.per_item_mean(torch.from_numpy(settings.sign * best).float()), layout.per_item_any(running)))
        if still != active:
            active, candidates = still, None

    returned = [search.mean if settings.returned == "mean" else best_x[row] for row, search in enumerate(searches)]
    z = torch.from_numpy(np.stack(returned)).reshape(n_rows, *variable_shape).to(device=target, dtype=torch.float32)
    rows = torch.arange(n_rows, device=target)
    with torch.no_grad():
        meis = _decode(settings, z, Step(max(n_iterations, default=0), rows, row_items, layout.streams(), row_items))
    scores = layout.score(objective, meis, settings.max_batch, lambda x, chunk: settings.transform.at_evaluation(x))
    item_iterations, item_reasons = layout.longest_rows(n_iterations, stop_reasons)
    _, item_restarts = layout.longest_rows(n_iterations, [str(n) for n in n_restarts])  # the same row's
    return CMAESResult(
        meis=meis.to("cpu"),
        scores=scores.to("cpu"),
        row_items=row_items.to("cpu"),
        n_iterations=item_iterations,
        stop_reasons=item_reasons,
        traces=records,
        runtime_s=time.perf_counter() - started,
        device=str(target),
        n_meis=settings.n_meis,
        transform=settings.transform,
        n_restarts=[int(n) for n in item_restarts],
    )


cma_es.validate_config = validate_config  # type: ignore[attr-defined]  # what the pipeline's plan checks


def cma_es_preset(parameterisation: Any = "Gabor", norm: float = 10.0, x_min: float | None = None, x_max: float | None = None,
                  max_generations: int = 150, sigma0: float = 0.5, population_size: int | None = None,
                  input_stats: Mapping[str, Any] | None = None, input_shape: Sequence[int] | None = None,
                  clip_stds: float | None = None) -> dict[str, Any]:
    """A ``cma_es`` config with a contrast budget on the decoded stimulus: L2 ``norm`` (stimulus
    units) of the contrast and the clip ``[x_min, x_max]``; with ``input_stats`` decoded around the
    stimulus mean, without for z-scores (:func:`mei_core.presets.cma_es_config`, which builds it;
    ``preset("cma_es", ...)`` also derives the norm from ``input_stats``)."""
    from .presets import cma_es_config

    return cma_es_config(parameterisation, norm, x_min, x_max, max_generations=max_generations, sigma0=sigma0,
                         population_size=population_size, input_stats=input_stats, input_shape=input_shape, clip_stds=clip_stds)
