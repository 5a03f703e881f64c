"""Gradient-free MEIs with CMA-ES: ``method_fn: mei_core.cmaes.cma_es``.

For models whose output has no useful gradient (spike counts, hard thresholds, a closed-loop rig that
only returns responses): the objective is only ever evaluated, under ``torch.no_grad``. Each item
(one seed, one objective target) runs its own CMA-ES over a parameterisation (``Pixels`` for small
inputs, ``Gabor``/``DoG`` parameters, a truncated ``Spectral`` or ``LinearBasis`` (PCA) basis, or any
``Decoder`` by import path, see :mod:`mei_core.parameterisations`); candidates are decoded, put
through the contrast budget (``postprocessing``, e.g. ``ChangeNorm`` + ``ClipRange`` as in the default
preset) and scored.

Per generation: every active item asks its search for ``population_size`` candidates; all
candidates of all items are decoded, budgeted and evaluated in ONE objective call; every item's
search is told its own values and decides, alone, whether it stops. The only Python loop over items
is cma's own ask/tell bookkeeping (one ``CMAEvolutionStrategy`` object per search, which cma needs).

Why the ``cma`` package (Hansen's reference implementation, numpy only): its sampler takes an
injected ``randn``, so every search draws from a ``numpy.random.Generator`` seeded from its item's
torch generator and never from numpy's global state: an item alone equals the item in a batch, and
identical runs are bitwise identical on CPU. EvoTorch vectorises the population of one search on
torch, but a batch of independent searches would still be one searcher object per item; the model
call, the expensive part, is batched here anyway, so the lighter dependency wins.

Config keys (all optional; every error names its key, e.g. ``config.sigma0``):

- ``parameterisation``: one spec or a list (default ``Pixels``); the search vector is one row of its
  variable, flattened (``initial_shape`` gives the shape).
- ``initial``: an ``InitialGuess`` spec drawn in parameter space from the item's generator: the
  search's start (default ``{path: RandomNormal, kwargs: {std: 1.0}}``).
- ``sigma0`` (0.5): CMA-ES's initial step size in parameter space.
- ``population_size`` (cma's default ``4 + ⌊3 ln D⌋``): candidates per item and generation.
- ``max_generations`` (200): per item; stop reason ``max_generations``.
- ``threshold``: stop an item once its best objective reaches it (``≥``; ``≤`` when minimising);
  stop reason ``threshold``.
- ``postprocessing``: ``Postprocessor`` specs applied, in order, to every decoded candidate and to the
  returned MEI: the contrast budget.
- ``direction`` (``maximize``): or ``minimize``.
- ``returned`` (``mean``): the MEI is the decoded search mean (robust to noisy objectives) or ``best``
  (the best candidate evaluated).
- ``cma_options`` ({}): further ``cma.CMAOptions`` (``tolfun``, ``tolx``, ``CMA_diagonal`` for large
  ``D``, …); cma's own stop criteria give their cma names as stop reasons (``tolfun``, ``tolx``, …).
  Changed default: ``tolflatfitness: 50`` (cma's 1 stops a spiking model's search before it spikes).
- ``trace_interval``: record ``best`` (best objective so far) and ``mean`` (mean candidate
  objective) per item every that many generations.
- ``device``: ignored (the caller decides), as for gradient methods.

Model evaluations per item: ``n_iterations × population_size``, plus one for the score.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .components import InitialGuess, Parameterisation, Postprocessor, Step, Tracker
from .config import build_component, build_components, check_numbers_are_numbers
from .engine import BatchResult, step_callback
from .errors import MEIConfigError
from .objectives.base import Objective, as_objective
from .parameterisations import build_parameterisation

__all__ = ["cma_es", "cma_es_preset", "build_settings", "validate_config", "CMAESSettings"]

KEYS = ("parameterisation", "initial", "sigma0", "population_size", "max_generations", "threshold",
        "postprocessing", "direction", "returned", "cma_options", "trace_interval", "device")
#: cma options this module sets itself: the key to use instead, or why not
RESERVED_OPTIONS = {
    "popsize": "use population_size", "maxiter": "use max_generations", "randn": "every item samples from its own generator",
    "seed": "every item samples from its own generator", "verbose": "cma stays quiet", "verb_disp": "cma stays quiet",
    "verb_log": "cma writes no files",
}
DEFAULT_INITIAL = {"path": "RandomNormal", "kwargs": {"std": 1.0}}
#: cma defaults changed here (``cma_options`` overrides them): spike counts are often flat at first (no
#: candidate spikes), and cma's default stops after one such generation
DEFAULT_CMA_OPTIONS = {"tolflatfitness": 50}


@dataclass
class CMAESSettings:
    parameterisation: Parameterisation
    initial: InitialGuess
    postprocessors: list[Postprocessor] = field(default_factory=list)
    sigma0: float = 0.5
    population_size: int | None = None
    max_generations: int = 200
    threshold: float | None = None
    sign: float = 1.0
    returned: str = "mean"
    cma_options: dict[str, Any] = field(default_factory=dict)
    trace_interval: int | None = None


def _number(config: Mapping[str, Any], name: str, key: str, default: Any, *, integer: bool = False,
            minimum: float | None = None, exclusive: bool = False, optional: bool = False) -> Any:
    value = config.get(name, default)
    if value is None and optional:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)) or not math.isfinite(value):
        raise MEIConfigError(f"{key}.{name}: must be {kind}{' or null' if optional else ''}, got {value!r}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise MEIConfigError(f"{key}.{name}: must be {'>' if exclusive else '>='} {minimum}, got {value!r}")
    return int(value) if integer else float(value)


def build_settings(config: Mapping[str, Any], key: str = "config") -> CMAESSettings:
    """Validate a ``cma_es`` config and build fresh components; every error names its key."""
    if not isinstance(config, Mapping):
        raise MEIConfigError(f"{key}: a method config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise MEIConfigError(f"{key}.{unknown[0]}: unknown key for mei_core.cmaes.cma_es; known keys: {', '.join(KEYS)}")
    check_numbers_are_numbers(dict(config), key)
    initial = build_component(config.get("initial") or DEFAULT_INITIAL, f"{key}.initial")
    if not isinstance(initial, InitialGuess):
        raise MEIConfigError(f"{key}.initial: {type(initial).__name__} must subclass mei_core.components.InitialGuess")
    postprocessors = build_components(config.get("postprocessing"), f"{key}.postprocessing")
    for i, p in enumerate(postprocessors):
        if not isinstance(p, Postprocessor):
            where = f"{key}.postprocessing[{i}]" if isinstance(config.get("postprocessing"), (list, tuple)) else f"{key}.postprocessing"
            raise MEIConfigError(f"{where}: {type(p).__name__} must subclass mei_core.components.Postprocessor")
    direction = config.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise MEIConfigError(f"{key}.direction: must be 'maximize' or 'minimize', got {direction!r}")
    returned = config.get("returned", "mean")
    if returned not in ("mean", "best"):
        raise MEIConfigError(f"{key}.returned: must be 'mean' (the search mean) or 'best' (the best candidate), got {returned!r}")
    options = config.get("cma_options") or {}
    if not isinstance(options, Mapping):
        raise MEIConfigError(f"{key}.cma_options: expected a mapping of cma options, got {options!r}")
    if options:
        import cma

        known = cma.CMAOptions()
        for name in options:
            if name in RESERVED_OPTIONS:
                raise MEIConfigError(f"{key}.cma_options.{name}: set by mei_core.cmaes ({RESERVED_OPTIONS[name]})")
            if name not in known:
                raise MEIConfigError(f"{key}.cma_options.{name}: unknown cma option (see cma.CMAOptions())")
    population_size = _number(config, "population_size", key, None, integer=True, minimum=2, optional=True)
    return CMAESSettings(
        parameterisation=build_parameterisation(config.get("parameterisation"), f"{key}.parameterisation"),
        initial=initial,
        postprocessors=postprocessors,
        sigma0=_number(config, "sigma0", key, 0.5, minimum=0, exclusive=True),
        population_size=population_size,
        max_generations=_number(config, "max_generations", key, 200, integer=True, minimum=1),
        threshold=_number(config, "threshold", key, None, optional=True),
        sign=1.0 if direction == "maximize" else -1.0,
        returned=returned,
        cma_options=dict(options),
        trace_interval=_number(config, "trace_interval", key, None, integer=True, minimum=1, optional=True),
    )


def validate_config(config: Mapping[str, Any], key: str = "config") -> None:
    """Build once and throw away: every error a run would hit at start-up (the pipeline's plan calls it)."""
    build_settings(config, key)


class GenerationRecord(Tracker):
    """One per-item value per recorded generation (rows of stopped items keep their last value)."""

    def read(self, state: Any) -> Tensor:  # filled by cma_es directly, never from a State
        raise NotImplementedError


@dataclass
class Generation:
    """What ``mei_core.engine.step_callback`` receives once per generation (e.g. a progress bar)."""

    i_iter: int
    evaluation_per_item: Tensor
    active_items: Tensor


def _search(cma: Any, settings: CMAESSettings, generator: torch.Generator, variable_shape: tuple[int, ...]) -> Any:
    """One item's CMA-ES: started from its initial guess, sampling from a generator seeded by its own."""
    start = settings.initial((1, *variable_shape), generator).double().flatten().numpy()
    sampler = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    options = {
        "randn": lambda *shape: sampler.standard_normal(shape), "seed": float("nan"),
        "verbose": -9, "verb_disp": 0, "verb_log": 0, "maxiter": math.inf, **DEFAULT_CMA_OPTIONS, **settings.cma_options,
    }
    if settings.population_size is not None:
        options["popsize"] = settings.population_size
    return cma.CMAEvolutionStrategy(start, settings.sigma0, options)


def _decode(settings: CMAESSettings, z: Tensor, step: Step) -> Tensor:
    """Candidates (rows of the parameter space) → budgeted stimuli, every row on its own."""
    stimuli = settings.parameterisation(z)
    for postprocessor in settings.postprocessors:
        stimuli = postprocessor(stimuli, step)
    return stimuli


def cma_es(
    objective: Objective,
    config: Mapping[str, Any],
    seeds: Sequence[int],
    shape: Sequence[int],
    device: str | torch.device = "cpu",
) -> BatchResult:
    """One CMA-ES per seed (item ``k`` targets what ``objective`` gives item ``k``), all candidates of
    a generation in one objective call. Returns the decoded, budgeted MEIs (items × C×H×W on the CPU),
    their objective values (``scores``), per item the generations run and why each stopped."""
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
    variable_shape = tuple(settings.parameterisation.initial_shape(tuple(int(s) for s in shape)))
    dimension = math.prod(variable_shape)
    if dimension < 2:
        raise MEIConfigError(f"config.parameterisation: CMA-ES needs at least 2 parameters, {type(settings.parameterisation).__name__} has {dimension}")
    n_items = len(seeds)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    searches = [_search(cma, settings, g, variable_shape) for g in generators]
    population = searches[0].popsize if searches else 0

    best = np.full(n_items, -np.inf)  # best sign·objective so far
    best_x: list[np.ndarray] = [search.mean for search in searches]
    n_iterations, stop_reasons = [0] * n_items, [""] * n_items
    records = {"best": GenerationRecord(), "mean": GenerationRecord()} if settings.trace_interval else {}
    last_mean = np.full(n_items, np.nan)
    active = list(range(n_items))
    callback = step_callback.get()
    items: Tensor | None = None
    for generation in itertools.count():
        if not active:
            break
        with one_thread.limit(limits=1, user_api="blas"):
            asked = [searches[k].ask() for k in active]
        if items is None:  # rebuilt only when the active set changes (objectives cache lookups by it)
            items = torch.tensor(active, device=target).repeat_interleave(population)
        candidates = torch.from_numpy(np.stack([np.asarray(a) for a in asked]))  # A×λ×D float64
        z = candidates.reshape(-1, *variable_shape).to(device=target, dtype=torch.float32)
        step = Step(generation, torch.arange(len(items), device=target), items, generators, items)
        with torch.no_grad():
            values = objective(_decode(settings, z, step), items)
        progress = settings.sign * values.detach().double().cpu().numpy().reshape(len(active), population)
        still = []
        for j, k in enumerate(active):
            with one_thread.limit(limits=1, user_api="blas"):
                searches[k].tell(asked[j], (-progress[j]).tolist())  # cma minimises
            i_best = int(np.argmax(progress[j]))
            if progress[j, i_best] > best[k]:
                best[k], best_x[k] = progress[j, i_best], np.asarray(asked[j][i_best])
            last_mean[k] = settings.sign * progress[j].mean()
            reason = None
            if settings.threshold is not None and best[k] >= settings.sign * settings.threshold:
                reason = "threshold"
            elif generation + 1 >= settings.max_generations:
                reason = "max_generations"
            else:
                with one_thread.limit(limits=1, user_api="blas"):
                    stopped = searches[k].stop()
                reason = next(iter(stopped)) if stopped else None
            if reason is None:
                still.append(k)
            else:
                n_iterations[k], stop_reasons[k] = generation + 1, str(reason)
        if records and generation % settings.trace_interval == 0:
            records["best"].steps.append(generation)
            records["best"].values.append(torch.from_numpy(settings.sign * best).float())
            records["mean"].steps.append(generation)
            records["mean"].values.append(torch.from_numpy(last_mean.copy()).float())
        if callback is not None:
            mask = torch.zeros(n_items, dtype=torch.bool)
            mask[still] = True
            callback(Generation(generation, torch.from_numpy(settings.sign * best).float(), mask))
        if still != active:
            active, items = still, None

    returned = [search.mean if settings.returned == "mean" else best_x[k] for k, search in enumerate(searches)]
    z = torch.from_numpy(np.stack(returned)).reshape(n_items, *variable_shape).to(device=target, dtype=torch.float32)
    rows = torch.arange(n_items, device=target)
    with torch.no_grad():
        meis = _decode(settings, z, Step(max(n_iterations, default=0), rows, rows, generators, rows))
        scores = objective(meis, rows).detach()
    return BatchResult(
        meis=meis.to("cpu"),
        scores=scores.to("cpu"),
        row_items=rows.to("cpu"),
        n_iterations=n_iterations,
        stop_reasons=stop_reasons,
        traces=records,
        runtime_s=time.perf_counter() - started,
        device=str(target),
        n_meis=1,
    )


cma_es.validate_config = validate_config  # type: ignore[attr-defined]  # what the pipeline's plan checks


def cma_es_preset(parameterisation: Any = "Gabor", norm: float = 10.0, x_min: float = -3.0, x_max: float = 3.0,
                  max_generations: int = 150, sigma0: float = 0.5, population_size: int | None = None) -> dict[str, Any]:
    """A ``cma_es`` config with the default preset's contrast budget (``ChangeNorm`` then
    ``ClipRange``) on the decoded stimulus. Set ``norm`` and the clip to your training images'
    contrast, as for :func:`mei_core.methods.default_preset`."""
    config: dict[str, Any] = {
        "parameterisation": parameterisation,
        "sigma0": sigma0,
        "max_generations": max_generations,
        "postprocessing": [
            {"path": "ChangeNorm", "kwargs": {"norm": norm}},
            {"path": "ClipRange", "kwargs": {"x_min": x_min, "x_max": x_max}},
        ],
    }
    if population_size is not None:
        config["population_size"] = population_size
    return config
