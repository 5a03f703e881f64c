"""A method config, validated and built into fresh components for one optimisation run.

Slots (sinzlab/mei names): ``initial``, ``optimizer``, ``stopper`` (required); ``transform``,
``regularization``, ``precondition``, ``postprocessing`` (one spec or a list, applied in order);
``parameterisation`` (one spec or a list, default ``Pixels``: the optimised variable decoded into the
stimulus that transforms, the objective and regularizers see; preconditioners and postprocessors act
on the variable);
``trackers`` (a list, or a mapping name → spec; ``objectives`` is sinzlab's name for the same slot);
``project_initial`` (``false``, the default: the optimisation starts from the raw initial guess; ``true``:
the ``postprocessing`` chain is applied to the initial guess before the first step; or postprocessor
specs of its own, e.g. only the norm and clip of a chain that also low-passes: openretina's CLI and
the MDS code project their random start onto the constraint set before step 0).
Plain options: ``n_meis`` (diverse MEIs per item, default 1), ``direction`` (``maximize`` |
``minimize``; minimise gives inhibitory MEIs), ``regularize`` (``input``, the default: regularizers see
the optimised input; ``transformed``: they see what the model sees, as in sinzlab/mei),
``model_forward_kwargs`` (a mapping the objective passes to every model call, e.g. ``{data_key: ...}``), ``precision`` (``float32`` | ``tf32`` | ``bf16``: the
model forward's arithmetic, see :mod:`mei_core.precision`), ``stop_check_every`` (steps between the
host syncs that drop stopped items from the batch), ``max_batch`` (most rows in one forward pass:
larger batches are evaluated in chunks; results do not change), ``device`` (ignored here: the caller
decides where to run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .components import InitialGuess, Postprocessor, Preconditioner, Regularizer, Step, Stopper, Tracker, Transform
from .config import build_component, build_components, check_arguments, import_object, require
from .errors import MEIConfigError
from .modality import Modality
from .parameterisations import Parameterisation, Pixels, build_parameterisation
from .precision import PRECISIONS
from .transforms import Compose, Identity, alpha_blend_of

COMPONENT_SLOTS = ("initial", "optimizer", "stopper", "transform", "regularization", "precondition", "postprocessing", "trackers", "parameterisation")
#: sinzlab/mei's name for a slot → ours
SLOT_ALIASES = {"objectives": "trackers"}
OPTION_SLOTS = ("project_initial", "n_meis", "direction", "regularize", "model_forward_kwargs", "device", "precision", "stop_check_every", "max_batch")
REGULARIZE = ("input", "transformed")
#: steps between stop checks, by device type (others: "gpu"). A check copies the stop mask to the
#: host and drops stopped items from the forward pass; between checks stopped items stay in the
#: batch, frozen, and the loop runs on after the last item stopped until the next check. On the CPU a
#: check waits for nothing, so every step is cheapest (measured in benchmarks/README.md, "stop
#: checks"); on a GPU it drains the queue of kernels, so there it is every 10 steps.
DEFAULT_STOP_CHECK_EVERY = {"cpu": 1, "gpu": 10}
KNOWN_SLOTS = COMPONENT_SLOTS + OPTION_SLOTS + tuple(SLOT_ALIASES)


@dataclass
class Method:
    initial: InitialGuess
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer]
    stopper: Stopper
    transform: Transform
    regularizers: list[Regularizer] = field(default_factory=list)
    preconditioners: list[Preconditioner] = field(default_factory=list)
    postprocessors: list[Postprocessor] = field(default_factory=list)
    #: applied to the initial guess before the first step (``project_initial``)
    initial_projection: list[Postprocessor] = field(default_factory=list)
    trackers: dict[str, Tracker] = field(default_factory=dict)
    n_meis: int = 1
    sign: float = 1.0
    #: regularizers see the transformed input (what the model sees) instead of the optimised one
    regularize_transformed: bool = False
    model_forward_kwargs: dict[str, Any] = field(default_factory=dict)
    parameterisation: Parameterisation = field(default_factory=Pixels)
    precision: str = "float32"
    stop_check_every: int | None = None  # None: DEFAULT_STOP_CHECK_EVERY for the device
    max_batch: int | None = None


def _expect(component: Any, base: type, key: str) -> None:
    # user components with sinzlab's (x, i_iteration) signature would fail deep in the loop; say it here
    if not isinstance(component, base) and not callable(component):
        raise MEIConfigError(f"{key}: {component!r} is not callable")
    if not isinstance(component, base):
        raise MEIConfigError(
            f"{key}: {type(component).__name__} must subclass mei_core.components.{base.__name__} "
            f"(its __call__ receives a per-row batch and a Step)"
        )


def _build_optimizer(spec: Any, key: str) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping) or "path" not in spec:
        raise MEIConfigError(f"{key}: expected {{'path': 'torch.optim.SGD', 'kwargs': {{...}}}}, got {spec!r}")
    path = spec["path"]
    if isinstance(path, str) and "." not in path and hasattr(torch.optim, path):
        path = f"torch.optim.{path}"
    optimizer_class = import_object(path, f"{key}.path")
    kwargs = dict(spec.get("kwargs") or {})
    check_arguments(optimizer_class, kwargs, f"{key}.kwargs", args=([torch.zeros(1, requires_grad=True)],))
    _check_optimizer_values(kwargs, f"{key}.kwargs")
    # not constructed here: torch.optim imports torch._dynamo on first use (2–5 s), which would slow
    # every Snakemake parse (and every SLURM job re-parses); the ranges torch.optim checks are checked
    # above instead, so a bad value still fails before any job
    return lambda params: optimizer_class(params, **kwargs)


#: argument ranges that torch.optim's constructors refuse outside of (checked without constructing)
_NON_NEGATIVE = ("lr", "momentum", "weight_decay", "eps", "dampening", "lr_decay", "initial_accumulator_value", "alpha", "lambd")


def _check_optimizer_values(kwargs: Mapping[str, Any], key: str) -> None:
    for name in _NON_NEGATIVE:
        value = kwargs.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise MEIConfigError(f"{key}.{name}: must be >= 0, got {value!r}")
    betas = kwargs.get("betas")
    if betas is not None:
        if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise MEIConfigError(f"{key}.betas: must be two numbers in [0, 1), got {betas!r}")


def build_transform(spec: Any, key: str) -> Transform:
    """The ``transform`` slot (one spec or a list, applied in order) as one transform: ``Identity``
    when absent, a ``Compose`` (every member its own random stream) for several."""
    transforms = build_components(spec, key)
    for transform in transforms:
        _expect(transform, Transform, key)
    return Identity() if not transforms else transforms[0] if len(transforms) == 1 else Compose(transforms)


def build_method(config: Mapping[str, Any], key: str = "config") -> Method:
    """Build fresh components (stoppers and trackers keep per-run state) from ``config``."""
    if not isinstance(config, Mapping):
        raise MEIConfigError(f"{key}: a method config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(KNOWN_SLOTS))
    if unknown:
        raise MEIConfigError(f"{key}.{unknown[0]}: unknown slot; known slots: {', '.join(KNOWN_SLOTS)}")
    initial = build_component(require(config, "initial", key), f"{key}.initial")
    _expect(initial, InitialGuess, f"{key}.initial")
    stopper = build_component(require(config, "stopper", key), f"{key}.stopper")
    if not callable(stopper):
        raise MEIConfigError(f"{key}.stopper: {stopper!r} is not callable")
    make_optimizer = _build_optimizer(require(config, "optimizer", key), f"{key}.optimizer")

    transform = build_transform(config.get("transform"), f"{key}.transform")

    def family(slot: str, base: type) -> list:
        built = build_components(config.get(slot), f"{key}.{slot}")
        for component in built:
            _expect(component, base, f"{key}.{slot}")
        return built

    for alias, slot in SLOT_ALIASES.items():
        if alias in config and slot in config:
            raise MEIConfigError(f"{key}.{alias}: give either '{slot}' or its sinzlab name '{alias}', not both")
    slot = next((alias for alias in SLOT_ALIASES if alias in config), "trackers")
    trackers_spec = config.get(slot)
    trackers: dict[str, Tracker] = {}
    if isinstance(trackers_spec, Mapping):
        for name, spec in trackers_spec.items():
            trackers[str(name)] = build_component(spec, f"{key}.{slot}.{name}")
    elif trackers_spec is not None:
        for i, tracker in enumerate(build_components(trackers_spec, f"{key}.{slot}")):
            trackers[type(tracker).__name__ if type(tracker).__name__ not in trackers else f"{type(tracker).__name__}_{i}"] = tracker
    for name, tracker in trackers.items():
        _expect(tracker, Tracker, f"{key}.{slot}.{name}")

    n_meis = config.get("n_meis", 1)
    if isinstance(n_meis, bool) or not isinstance(n_meis, int) or n_meis < 1:
        raise MEIConfigError(f"{key}.n_meis: must be a positive integer, got {n_meis!r}")
    direction = config.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise MEIConfigError(f"{key}.direction: must be 'maximize' or 'minimize', got {direction!r}")
    precision = config.get("precision", "float32")
    if precision not in PRECISIONS:
        raise MEIConfigError(f"{key}.precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    stop_check_every = _positive(config, "stop_check_every", None, key)
    max_batch = _positive(config, "max_batch", None, key)

    regularize = config.get("regularize", "input")
    if regularize not in REGULARIZE:
        raise MEIConfigError(f"{key}.regularize: must be one of {', '.join(REGULARIZE)}, got {regularize!r}")
    forward_kwargs = config.get("model_forward_kwargs") or {}
    if not isinstance(forward_kwargs, Mapping) or not all(isinstance(k, str) for k in forward_kwargs):
        raise MEIConfigError(f"{key}.model_forward_kwargs: must be a mapping of keyword names to values, got {forward_kwargs!r}")

    postprocessors = family("postprocessing", Postprocessor)
    project_initial = config.get("project_initial", False)
    if isinstance(project_initial, bool):
        initial_projection = postprocessors if project_initial else []
    elif project_initial is None:
        raise MEIConfigError(f"{key}.project_initial: must be true, false or postprocessor specs, got null")
    else:
        # own instances: a postprocessor may keep state between calls
        initial_projection = family("project_initial", Postprocessor)

    return Method(
        initial=initial,
        make_optimizer=make_optimizer,
        stopper=stopper,
        transform=transform,
        regularizers=family("regularization", Regularizer),
        preconditioners=family("precondition", Preconditioner),
        postprocessors=postprocessors,
        initial_projection=initial_projection,
        trackers=trackers,
        n_meis=n_meis,
        sign=1.0 if direction == "maximize" else -1.0,
        regularize_transformed=regularize == "transformed",
        model_forward_kwargs=dict(forward_kwargs),
        parameterisation=build_parameterisation(config.get("parameterisation"), f"{key}.parameterisation"),
        precision=precision,
        stop_check_every=stop_check_every,
        max_batch=max_batch,
    )


def _positive(config: Mapping[str, Any], option: str, default: int | None, key: str) -> int | None:
    value = config.get(option, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise MEIConfigError(f"{key}.{option}: must be a positive integer, got {value!r}")
    return value


def validate_method(config: Mapping[str, Any], key: str = "config", shape: Sequence[int] | None = None) -> None:
    """Build once and throw away: every error a run would hit at start-up, without running. With the
    input ``shape`` (C×H×W, …), the initial guess is drawn once too (e.g. a ``FromArray`` of the wrong
    shape fails here, not in a job), decoded and put through the transform (:func:`check_stimulus`)."""
    method = build_method(config, key)
    if shape is not None:
        try:
            start = method.initial((method.n_meis, *method.parameterisation.initial_shape(tuple(shape))), torch.Generator().manual_seed(0))
        except Exception as error:
            raise MEIConfigError(f"{key}.initial: {type(error).__name__}: {error} (inputs of this ensemble are {list(shape)})") from error
        try:
            start = project_initial(method, start, Step.of_seeds([0], [0] * method.n_meis))
        except Exception as error:
            raise MEIConfigError(f"{key}.project_initial: {type(error).__name__}: {error} (inputs of this ensemble are {list(shape)})") from error
        with torch.no_grad():
            check_stimulus(method.parameterisation(start), method.transform, shape, key)


def project_initial(method: Method, start: torch.Tensor, step: Step) -> torch.Tensor:
    """The initial guess ``start`` after ``method.initial_projection`` (``project_initial``). ``step``
    is iteration 0's: a scheduled postprocessor projects with its first value."""
    with torch.no_grad():
        for postprocessor in method.initial_projection:
            start = postprocessor(start, step)
    return start


def check_stimulus(stimulus: Tensor, transform: Transform, shape: Sequence[int], key: str) -> None:
    """Plan-time check that a method's decoded start (``n_meis`` rows) fits an ensemble whose inputs are
    ``shape``: a transparency MEI (an ``AlphaBlend`` in ``transform``) has the inputs' channels plus one
    alpha channel, any other MEI the inputs' shape; and the transform runs on it, random draws and
    evaluation view (e.g. a background of the wrong size fails here, not in a job)."""
    shape, blend = list(shape), alpha_blend_of(transform)
    got = list(stimulus.shape[1:])
    if blend is not None:
        if not Modality.of(shape, key).has_channels:
            raise MEIConfigError(f"{key}.transform: AlphaBlend makes transparency MEIs of images or videos (channel × …); this ensemble's inputs are {shape}")
        wanted = [shape[0] + 1, *shape[1:]]
        if got != wanted:
            raise MEIConfigError(f"{key}.initial: a transparency MEI (AlphaBlend in {key}.transform) has the inputs' {shape[0]} channel(s) and then "
                                 f"one alpha channel, {wanted}, but the initial guess gives {got}: start from "
                                 "{path: WithAlphaChannel, kwargs: {initial: <your initial guess>}}")
    elif got != shape:
        hint = f"; an alpha channel needs AlphaBlend in {key}.transform" if got == [shape[0] + 1, *shape[1:]] else ""
        raise MEIConfigError(f"{key}.initial: the initial guess gives MEIs of shape {got}, but this ensemble's inputs are {shape}{hint}")
    if isinstance(transform, Identity):
        return
    rows = torch.zeros(len(stimulus), dtype=torch.long)
    try:
        transform(stimulus, Step.of_seeds([0], rows))
        transform.at_evaluation(stimulus)
    except Exception as error:
        raise MEIConfigError(f"{key}.transform: {type(error).__name__}: {error} (on MEIs of shape {got})") from error
