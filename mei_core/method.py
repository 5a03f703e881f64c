"""A method config, validated and built into fresh components for one optimisation run.

Its slots (sinzlab/mei names: ``initial``, ``optimizer``, ``stopper``, ``transform``, …) and plain
options (``n_meis``, ``direction``, ``precision``, …) are declared once, with their types, bounds,
defaults and meaning, in :data:`mei_core.options.METHOD_OPTIONS`: the checks here, the pipeline's
config schema and the table in config/README.md ("methods.<name>") come from there.
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
from .parameterisations import Chain, FixedChannels, Parameterisation, Pixels, build_parameterisation
from .postprocessors import budget_centre
from .options import METHOD_OPTIONS, SLOT_ALIASES, check_known
from .transforms import Compose, Identity, alpha_blend_of

OPTIONS = {option.name: option for option in METHOD_OPTIONS}
#: steps between stop checks, by device type (others: "gpu"). A check copies the stop mask to the
#: host and drops stopped items from the forward pass; between checks stopped items stay in the
#: batch, frozen, and the loop runs on after the last item stopped until the next check. On the CPU a
#: check waits for nothing, so every step is cheapest (measured in benchmarks/README.md, "stop
#: checks"); on a GPU it drains the queue of kernels, so there it is every 10 steps.
DEFAULT_STOP_CHECK_EVERY = {"cpu": 1, "gpu": 10}
KNOWN_SLOTS = tuple(OPTIONS) + tuple(SLOT_ALIASES)


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
    #: ``fixed_channels``: the channels held at given values (already inside ``parameterisation``)
    fixed_channels: FixedChannels | None = None


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
    check_known(config, KNOWN_SLOTS, key, "unknown slot; known slots")
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

    n_meis, direction, precision, regularize, stop_check_every, max_batch, forward_kwargs = (
        OPTIONS[name].read(config, key)
        for name in ("n_meis", "direction", "precision", "regularize", "stop_check_every", "max_batch", "model_forward_kwargs")
    )
    if not all(isinstance(k, str) for k in forward_kwargs):
        raise MEIConfigError(f"{key}.model_forward_kwargs: must be a mapping of keyword names to values, got {forward_kwargs!r}")

    postprocessors = family("postprocessing", Postprocessor)
    parameterisation = build_parameterisation(config.get("parameterisation"), f"{key}.parameterisation")
    fixed_channels, held = None, []
    fixed_spec = OPTIONS["fixed_channels"].read(config, key)
    if fixed_spec is not None:
        if alpha_blend_of(transform) is not None:
            raise MEIConfigError(f"{key}.fixed_channels: fixed channels do not combine with an alpha channel (AlphaBlend in {key}.transform)")
        fixed_channels = _fixed_channels(fixed_spec, budget_centre(postprocessors), f"{key}.fixed_channels")
        if isinstance(parameterisation, Pixels):
            # the variable is the stimulus: its fixed channels sit at the budget's centre before any
            # postprocessor runs, so the budget is spent on the optimised channels alone
            held = [fixed_channels.hold()]
            parameterisation = fixed_channels
        else:
            parameterisation = Chain([parameterisation, fixed_channels])
        postprocessors = held + postprocessors
    project_initial = OPTIONS["project_initial"].read(config, key)
    if isinstance(project_initial, bool):
        initial_projection = postprocessors if project_initial else held
    elif project_initial is None:
        raise MEIConfigError(f"{key}.project_initial: must be true, false or postprocessor specs, got null")
    else:
        # own instances: a postprocessor may keep state between calls
        initial_projection = held + family("project_initial", Postprocessor)

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
        parameterisation=parameterisation,
        precision=precision,
        stop_check_every=stop_check_every,
        max_batch=max_batch,
        fixed_channels=fixed_channels,
    )


def _fixed_channels(spec: Any, centre: Tensor | None, key: str) -> FixedChannels:
    """The ``fixed_channels`` option as its component (the channel indices and the values' shape
    are checked against the stimuli when the shape is known: ``FixedChannels.initial_shape``)."""
    if not isinstance(spec, Mapping):
        raise MEIConfigError(f"{key}: expected {{channels: [indices], values: mean | number | [numbers] | array | path.npy}}, got {spec!r}")
    check_known(spec, ("channels", "values"), key, "unknown key; fixed_channels has")
    if "channels" not in spec:
        raise MEIConfigError(f"{key}.channels: missing (the indices of the channels to hold)")
    return FixedChannels(spec["channels"], spec.get("values", "mean"), centre, key)


def validate_method(config: Mapping[str, Any], key: str = "config", shape: Sequence[int] | None = None) -> None:
    """Build once and throw away: every error a run would hit at start-up, without running. With the
    input ``shape`` (C×H×W, …), the initial guess is drawn once too (e.g. a ``FromArray`` of the wrong
    shape fails here, not in a job), decoded and put through the transform (:func:`check_stimulus`)."""
    method = build_method(config, key)
    if shape is not None and method.fixed_channels is not None:
        method.fixed_channels.initial_shape(tuple(shape))  # errors name fixed_channels, not the initial guess
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
