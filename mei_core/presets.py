"""Named method presets: the default, which derives its contrast budget from the stimulus
statistics, and the published ones (``hoefling2024``, ``walker2019``, ``mds``, ``sinzlab_default``),
each the settings its paper's code states (sources, number by number: ``config/README.md``,
"Published presets").

``preset(name, **params)`` returns a method config (the dict ``build_method`` takes, or for
``cma_es`` the config of ``mei_core.cmaes.cma_es``); ``PRESETS`` (a :class:`~mei_core.registry.Registry`)
holds every name with its parameters (from the signature) and a one-line description. Every preset
that shapes the contrast follows ``input_stats`` (centred on its mean; ``sinzlab_default`` refuses
stats that are not z-scores): ``config/README.md``, "Presets in the stimulus's units".  The default hard-codes no norm:
it takes ``input_stats`` of the training stimuli and ``contrast_budget`` turns them into the L2 norm
and the pixel clip.

``input_stats`` = ``{"mean": [per channel], "std": [per channel], "range": [min, max]}`` (``range``
optional; one pair for all channels or one pair per channel).

The rule (evidence: ``config/README.md``, "The default preset and its contrast budget": five simulated populations, 24-48 px,
four readouts/cores, one population held out of all tuning)
------------------------------------------------------------------------------------------
* contrast: ``norm = NORM_FACTOR · sqrt(pixels per channel · Σ_c std_c²)`` with ``NORM_FACTOR`` 0.1,
  i.e. a tenth of the expected L2 norm of a training image's deviation from its mean, measured
  around the stimulus mean (an MEI is ``mean + contrast``).  Filter recovery is flat for factors
  0.075-0.15 on every population and falls above 0.25 on models fitted to fewer or noisier data:
  larger budgets push the MEI's drive beyond what the model saw in training, where it extrapolates.
* clip: ``range`` when given, else ``mean ± CLIP_STDS · std`` (``CLIP_STDS`` 3).  At the default
  budget no pixel reaches 3 std, so the clip only guards larger user budgets.
* step size: SGD ``lr = LR_FACTOR · norm / sqrt(numel)`` (2× the MEI's per-pixel rms contrast), so
  the recipe is unchanged by an affine change of the stimulus units (0.5× gave simple/complex r
  within 0.015).
* blur: the gradient is blurred from 1.5 px to ``FINAL_BLUR_SIGMA`` 0.7 px over the first
  ``WARM_STEPS`` steps and held there, never switched off; unblurred late steps cost up to 0.05 r
  (complex cells) on models fitted to few data.
* stopping: per item, once its score and its MEI have settled (``Converged``: relative score change
  and 1 − r to the step before (or two before) both ≤ ``CONVERGENCE_TOLERANCE`` for ``CONVERGENCE_PATIENCE`` steps,
  not before ``WARM_STEPS``), at most ``MAX_ITERATIONS``.  It reaches the 200-step filter r and
  score in a mean of 9-13 steps per MEI on six populations (benchmarks/README.md, "Time to
  quality").  ``iterations=N`` runs exactly N steps instead (the blur decays over all of them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import MEIConfigError
from .modality import Modality
from .registry import Registry

__all__ = ["contrast_budget", "default", "fixed_budget", "cma_es", "hoefling2024", "walker2019", "mds", "sinzlab_default", "preset",
           "PRESETS", "describe_presets", "preset_method_fn", "cma_es_config", "check_input_stats", "check_z_scores", "NORM_FACTOR", "CLIP_STDS", "LR_FACTOR", "ITERATIONS",
           "WARM_STEPS", "CONVERGENCE_TOLERANCE", "CONVERGENCE_PATIENCE", "MAX_ITERATIONS"]

#: MEI contrast as a fraction of a training image's (see the module docstring for the evidence).
NORM_FACTOR = 0.1
#: Pixel clip in stimulus standard deviations around the mean, when no value range is given.
CLIP_STDS = 3.0
#: SGD step per pixel as a fraction of the MEI's per-pixel contrast (rms).
LR_FACTOR = 2.0
#: Optimiser steps of a fixed-length run (``iterations``; before converged stopping, the default's).
ITERATIONS = 200
#: Gradient blur (pixels) at the first step and from the end of the warm phase on (geometric decay in between).
BLUR_SIGMA = 1.5
FINAL_BLUR_SIGMA = 0.7
#: Converged stopping (``stoppers.Converged``): the blur's decay takes ``WARM_STEPS`` and no item stops
#: before; then an item stops once its score's relative change and 1 − r of its MEI to the step
#: before (or two before: a period-2 swing) stay ≤ ``CONVERGENCE_TOLERANCE`` for
#: ``CONVERGENCE_PATIENCE`` steps; none runs past ``MAX_ITERATIONS`` (no item of six populations came
#: near it: benchmarks/README.md, "Time to quality").
WARM_STEPS = 8
CONVERGENCE_TOLERANCE = 1e-3
CONVERGENCE_PATIENCE = 2
MAX_ITERATIONS = 100

#: Every named preset (``@PRESETS.register``; parameters from each function's signature):
#: ``preset(name, **params)`` builds one, ``describe_presets()`` lists them, ``PRESETS.markdown_table()``
#: is config/README.md's table (``tests/test_presets_units.py`` checks that they agree).
PRESETS: Registry[Callable[..., dict[str, Any]]] = Registry("preset")


# --------------------------------------------------------------------------- input_stats


def _numbers(value: Any, key: str) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MEIConfigError(f"{key}[{i}]: expected a finite number, got {v!r}")
    return [float(v) for v in values]


def check_input_stats(input_stats: Any, n_channels: int, key: str = "input_stats") -> dict[str, list]:
    """Validate ``input_stats`` for ``n_channels`` channels and return it per channel:
    ``{"mean": [C], "std": [C], "range": [[min, max]] * C or None}``.  Every error names its key."""
    if not isinstance(input_stats, Mapping):
        raise MEIConfigError(f"{key}: expected a mapping with 'mean' and 'std' (and optional 'range'), got {input_stats!r}")
    unknown = sorted(set(input_stats) - {"mean", "std", "range"})
    if unknown:
        raise MEIConfigError(f"{key}.{unknown[0]}: unknown key; input_stats has 'mean', 'std' and optional 'range'")
    checked: dict[str, list] = {}
    for name in ("mean", "std"):
        if name not in input_stats:
            raise MEIConfigError(f"{key}.{name}: missing (one value per channel of the training stimuli)")
        values = _numbers(input_stats[name], f"{key}.{name}")
        if len(values) == 1 and n_channels > 1:
            values = values * n_channels
        if len(values) != n_channels:
            raise MEIConfigError(f"{key}.{name}: {len(values)} values for {n_channels} input channels")
        checked[name] = values
    if any(s <= 0 for s in checked["std"]):
        raise MEIConfigError(f"{key}.std: every channel's std must be > 0, got {checked['std']}")
    checked["range"] = None
    if input_stats.get("range") is not None:
        value_range = input_stats["range"]
        pairs = value_range if isinstance(value_range, (list, tuple)) and value_range and isinstance(value_range[0], (list, tuple)) else [value_range]
        if len(pairs) == 1:
            pairs = list(pairs) * n_channels
        if len(pairs) != n_channels or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in pairs):
            raise MEIConfigError(f"{key}.range: expected [min, max] or one [min, max] per channel ({n_channels}), got {value_range!r}")
        pairs = [_numbers(p, f"{key}.range") for p in pairs]
        for c, ((low, high), mean) in enumerate(zip(pairs, checked["mean"])):
            if not low < high:
                raise MEIConfigError(f"{key}.range: min must be < max, got {[low, high]}")
            if not low <= mean <= high:
                raise MEIConfigError(f"{key}.range: channel {c} mean {mean} lies outside its range {[low, high]}")
        checked["range"] = pairs
    return checked


def _check_shape(input_shape: Any, key: str = "input_shape") -> tuple[int, ...]:
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) not in (Modality.IMAGE.rank, Modality.VIDEO.rank):
        raise MEIConfigError(f"{key}: expected C×H×W or C×T×H×W (no batch dimension), got {input_shape!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in input_shape):
        raise MEIConfigError(f"{key}: every size must be a positive integer, got {input_shape!r}")
    return tuple(int(v) for v in input_shape)


def _check_iterations(iterations: Any, key: str = "iterations", minimum: int = 1) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise MEIConfigError(f"{key}: must be {what}, got {iterations!r}")
    return iterations


def _clip(stats: Mapping[str, Any], clip_stds: float) -> tuple[list[float], list[float]]:
    """Per channel ``(low, high)``: the stated ``range``, else ``mean ± clip_stds · std``."""
    if stats["range"] is not None:
        return [pair[0] for pair in stats["range"]], [pair[1] for pair in stats["range"]]
    return ([m - clip_stds * sd for m, sd in zip(stats["mean"], stats["std"])],
            [m + clip_stds * sd for m, sd in zip(stats["mean"], stats["std"])])


def _per_channel_or_scalar(values: Sequence[float]) -> float | list[float]:
    return values[0] if len(set(values)) == 1 else list(values)


# --------------------------------------------------------------------------- the rule (the default)


def contrast_budget(
    input_shape: Sequence[int],
    input_stats: Mapping[str, Any],
    norm_factor: float = NORM_FACTOR,
    clip_stds: float = CLIP_STDS,
) -> dict[str, Any]:
    """The MEI contrast budget for inputs ``input_shape`` (C×H×W or C×T×H×W) of ``input_stats``.

    ``norm = norm_factor · sqrt(numel / C · Σ_c std_c²)``: ``norm_factor`` times the expected L2
    norm of a training image minus its mean.  ``x_min``/``x_max``: the value range when given, else
    ``mean ± clip_stds · std``; a float when all channels agree, else one value per channel.
    Also returns ``mean`` (per channel) around which the norm is measured.
    """
    shape = _check_shape(input_shape)
    stats = check_input_stats(input_stats, shape[0])
    if not norm_factor > 0:
        raise MEIConfigError(f"norm_factor: must be > 0, got {norm_factor!r}")
    if not clip_stds > 0:
        raise MEIConfigError(f"clip_stds: must be > 0, got {clip_stds!r}")
    pixels_per_channel = math.prod(shape[1:])
    norm = norm_factor * math.sqrt(pixels_per_channel * sum(s * s for s in stats["std"]))
    low, high = _clip(stats, clip_stds)
    return {"norm": norm, "x_min": _per_channel_or_scalar(low), "x_max": _per_channel_or_scalar(high),
            "mean": stats["mean"]}


@PRESETS.register("default", description=(
    f"normalised-gradient SGD stopping per MEI once converged (at most {MAX_ITERATIONS} steps), contrast "
    f"{NORM_FACTOR:g}× a training image's, clip mean ± {CLIP_STDS:g} std (or the value range), blur "
    f"{BLUR_SIGMA:g}→{FINAL_BLUR_SIGMA:g} px over {WARM_STEPS} steps; needs input_shape and input_stats"))
def default(
    input_shape: Sequence[int],
    input_stats: Mapping[str, Any],
    *,
    norm_factor: float = NORM_FACTOR,
    clip_stds: float = CLIP_STDS,
    lr_factor: float = LR_FACTOR,
    iterations: int | None = None,
    sigma: float = BLUR_SIGMA,
    final_sigma: float = FINAL_BLUR_SIGMA,
    norm: float | None = None,
    warm_steps: int = WARM_STEPS,
    tolerance: float = CONVERGENCE_TOLERANCE,
    patience: int = CONVERGENCE_PATIENCE,
    max_iterations: int = MAX_ITERATIONS,
) -> dict[str, Any]:
    """SGD on the blurred, per-row normalised gradient with a contrast budget from ``input_stats``.

    Start: ``mean`` per channel plus normal noise of the stimulus std.  After every step the
    deviation from the mean is rescaled to ``contrast_budget(...)["norm"]`` (or ``norm`` when given)
    and pixels are clipped to the budget's range.  ``lr = lr_factor · norm / sqrt(numel)``.  Each
    MEI stops once converged (``Converged(tolerance, patience)`` after ``warm_steps``, at most
    ``max_iterations``); ``iterations=N`` runs exactly N steps instead.
    """
    shape = _check_shape(input_shape)
    budget = contrast_budget(shape, input_stats, norm_factor, clip_stds)
    stats = check_input_stats(input_stats, shape[0])
    if norm is not None:
        if not norm > 0:
            raise MEIConfigError(f"norm: must be > 0, got {norm!r}")
        budget["norm"] = float(norm)
    if not 0 < final_sigma <= sigma:
        raise MEIConfigError(f"final_sigma: must be in (0, sigma={sigma}], got {final_sigma!r}")
    if iterations is None:
        stopper = _converged(warm_steps, tolerance, patience, max_iterations)
        decay_steps = warm_steps
    else:
        stopper = {"path": "NumIterations", "kwargs": {"num_iterations": _check_iterations(iterations)}}
        decay_steps = iterations
    # geometric decay that reaches final_sigma after decay_steps and holds it (an item that stops
    # early has run the whole schedule); the blur never switches off (min_sigma below final_sigma):
    # unblurred late steps let noisy models write pixel-scale detail into the MEI
    sigma_decay = (final_sigma / sigma) ** (1.0 / max(decay_steps, 1))
    per_pixel_contrast = budget["norm"] / math.sqrt(math.prod(shape))
    start_std = math.sqrt(sum(s * s for s in stats["std"]) / shape[0])
    return {
        "initial": {"path": "FromArray", "kwargs": {"array": _per_channel_image(stats["mean"], shape, "input_stats.mean"), "noise_std": start_std}},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": lr_factor * per_pixel_contrast}},
        "stopper": stopper,
        "precondition": [
            {"path": "GaussianBlur", "kwargs": {"sigma": sigma, "decay_factor": sigma_decay, "min_sigma": 0.5 * final_sigma,
                                                "hold_at": final_sigma}},
            {"path": "DivideByMeanOfAbsolute", "kwargs": {}},
        ],
        "postprocessing": [
            _around_mean(budget["norm"], stats, clip_stds=clip_stds),
        ],
    }


def _converged(warm_steps: Any, tolerance: Any, patience: Any, max_iterations: Any) -> dict[str, Any]:
    """The ``Converged`` stopper spec of the default, its numbers checked (errors name the parameter)."""
    _check_iterations(warm_steps, "warm_steps", minimum=0)
    _check_iterations(patience, "patience")
    _check_iterations(max_iterations, "max_iterations")
    if warm_steps > max_iterations:
        raise MEIConfigError(f"warm_steps: must be <= max_iterations ({max_iterations}), got {warm_steps}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise MEIConfigError(f"tolerance: must be a number in [0, 1), got {tolerance!r}")
    return {"path": "Converged", "kwargs": {"score_tolerance": float(tolerance), "input_tolerance": float(tolerance),
                                            "patience": patience, "min_iterations": warm_steps, "max_iterations": max_iterations}}


def _per_channel_image(values: Sequence[float], input_shape: Sequence[int] | None, key: str) -> Any:
    """A per-channel constant that broadcasts over ``C×H×W`` or ``C×T×H×W`` rows (``FromArray``'s
    array): ``C×1×1(×1)`` given ``input_shape``, else a scalar (channels that agree)."""
    if input_shape is None:
        if len(set(values)) == 1:
            return values[0]
        raise MEIConfigError(f"input_shape: needed (C×H×W or C×T×H×W) to place the {len(values)} channels of different {key}")
    shape = _check_shape(input_shape)
    return [[[v]] if Modality.of(shape) is Modality.IMAGE else [[[v]]] for v in values]


def _n_channels(input_stats: Any, input_shape: Sequence[int] | None) -> int:
    """The channels: ``input_shape``'s when given, else as many as ``input_stats`` lists."""
    if input_shape is not None:
        return _check_shape(input_shape)[0]
    if not isinstance(input_stats, Mapping):
        return 1  # check_input_stats refuses it, naming the key
    return max(len(v) if isinstance(v, (list, tuple)) else 1 for v in (input_stats.get("mean"), input_stats.get("std")))


@PRESETS.register("fixed_budget", description=(
    "the default recipe with the L2 norm and pixel clip given by hand (mei_core.default_preset), centred on "
    "input_stats.mean (without input_stats: z-scores)"))
def fixed_budget(norm: float = 10.0, x_min: float | Sequence[float] | None = None, x_max: float | Sequence[float] | None = None,
                 iterations: int = 200, lr: float = 0.5, sigma: float = 1.5, sigma_decay: float = 0.99,
                 input_stats: Mapping[str, Any] | None = None, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """The ``default`` recipe with its contrast budget given by hand, centred on ``input_stats.mean``.

    Start: the mean plus normal noise of the stimulus std; after every step the contrast (the
    deviation from the mean) is rescaled to L2 ``norm`` (stimulus units) and pixels are clipped to
    ``[x_min, x_max]`` (default: ``input_stats.range``, else mean ± 3 std). ``lr`` is the step per
    pixel in stimulus stds (the gradient is normalised to mean |g| 1). Without ``input_stats`` the
    stimuli are taken as z-scores (mean 0, std 1), the units of the default numbers; a hand-given
    clip without 0 strictly inside is then refused (pixel units need ``input_stats``).
    ``input_shape`` is needed only for channels of different means (to place them)."""
    if not norm > 0:
        raise MEIConfigError(f"norm: must be > 0, got {norm!r}")
    _check_iterations(iterations, minimum=0)  # 0: the start itself (no step)
    blur = {"path": "GaussianBlur", "kwargs": {"sigma": sigma, "decay_factor": sigma_decay, "min_sigma": 0.25}}
    if input_stats is None:
        low, high = (-CLIP_STDS if x_min is None else x_min), (CLIP_STDS if x_max is None else x_max)
        # a clip with 0 at or beyond a bound is in pixel units (0…255, 0…1): centred on 0 every MEI is black
        if not all(lo < 0.0 < hi for lo, hi in zip(_numbers(low, "x_min"), _numbers(high, "x_max"))):
            raise MEIConfigError(f"input_stats: fixed_budget without input_stats centres on 0 (z-scored stimuli), "
                                 f"but 0 is not inside the clip [{low}, {high}]; give input_stats (the stimulus mean and std)")
        # z-scores: the recipe as it always was (mean 0: ChangeNorm then ClipRange), bitwise
        return {
            "initial": {"path": "RandomNormal", "kwargs": {"std": 1.0}},
            "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": lr}},
            "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
            "precondition": [blur, {"path": "DivideByMeanOfAbsolute", "kwargs": {}}],
            "postprocessing": [
                {"path": "ChangeNorm", "kwargs": {"norm": norm}},
                {"path": "ClipRange", "kwargs": {"x_min": low, "x_max": high}},
            ],
        }
    stats = check_input_stats(input_stats, _n_channels(input_stats, input_shape))
    budget = _around_mean(float(norm), stats, x_min, x_max)
    z_unit = math.sqrt(sum(s * s for s in stats["std"]) / len(stats["std"]))
    return {
        "initial": {"path": "FromArray", "kwargs": {"array": _per_channel_image(stats["mean"], input_shape, "input_stats.mean"),
                                                    "noise_std": z_unit}},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": lr * z_unit}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
        "precondition": [blur, {"path": "DivideByMeanOfAbsolute", "kwargs": {}}],
        "postprocessing": [budget],
    }


def _around_mean(norm: float, stats: Mapping[str, Any], x_min: Any = None, x_max: Any = None, clip_stds: float = CLIP_STDS) -> dict[str, Any]:
    """The contrast budget as a component spec: ``ChangeNormAroundMean`` with L2 ``norm`` around the
    stimulus mean and the clip (given, else ``range``, else mean ± ``clip_stds`` · std)."""
    low, high = _clip(stats, clip_stds)
    low = _per_channel_or_scalar(low) if x_min is None else x_min
    high = _per_channel_or_scalar(high) if x_max is None else x_max
    for c, mean in enumerate(stats["mean"]):
        lo = low[c] if isinstance(low, (list, tuple)) else low
        hi = high[c] if isinstance(high, (list, tuple)) else high
        if not lo <= mean <= hi:
            raise MEIConfigError(f"x_min: the clip [{lo}, {hi}] of channel {c} excludes its mean {mean} (input_stats.mean): "
                                 f"every MEI would sit at the clip bound")
    return {"path": "ChangeNormAroundMean",
            "kwargs": {"norm": norm, "mean": _per_channel_or_scalar(stats["mean"]), "x_min": low, "x_max": high}}


# --------------------------------------------------------------------------- published presets


#: Höfling et al. 2024's stimulus constraints (openretina ``data_io/hoefling_2024/constants.py``,
#: ``STIMULUS_RANGE_CONSTRAINTS``): joint L2 norm and per-channel (green, UV) value ranges
HOEFLING2024_NORM = 30.0
HOEFLING2024_RANGES = ((-0.654, 6.269), (-0.913, 6.269))


@PRESETS.register("hoefling2024", description=(
    "openretina's published mouse-retina video settings (SGD lr 100, 10 steps, norm 30, per-channel clip, "
    "start projected onto them)"))
def hoefling2024(iterations: int = 10) -> dict[str, Any]:
    """openretina's CLI preset for mouse-retina video MEIs (Höfling et al. 2024): SGD lr 100 for 10
    steps on 2-channel (green, UV) videos, joint L2 norm 30 with per-channel clipping
    (green [−0.654, 6.269], UV [−0.913, 6.269]) and a range penalty of factor 0.1.  The start is
    ``0.1·randn`` projected onto that norm and clip before the first step, as the CLI does.  Use it
    with an ``increase`` objective and ``reducer: {slice_mean: {start: 10, length: 10}}`` (frames
    10–20).  The norm and ranges are the published values for that dataset's normalised stimuli;
    sources line by line in ``config/README.md`` ("Published presets")."""
    iterations = _check_iterations(iterations)
    ranges = [list(pair) for pair in HOEFLING2024_RANGES]
    return {
        "initial": {"path": "RandomNormal", "kwargs": {"std": 0.1}},
        "project_initial": True,
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 100.0}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
        "regularization": {"path": "RangeRegularizationLoss",
                           "kwargs": {"min_max_values": ranges, "max_norm": HOEFLING2024_NORM, "factor": 0.1}},
        "postprocessing": {"path": "ChangeNormJointlyClipRangeSeparately",
                           "kwargs": {"min_max_values": ranges, "norm": HOEFLING2024_NORM}},
    }


#: Walker et al. 2019's MEI settings (cajal/inception_loop2019, ``staticnet_analyses/multi_mei.py``,
#: ``MEIParameter.contents``, first row: iter_n, start/end sigma, start/end step size, precond,
#: step_gain; jitter 0 and norm −1 (off) there; ``utils.py`` ``deepdraw``/``make_step`` for the rest)
WALKER2019 = {"iterations": 1000, "start_sigma": 1.5, "end_sigma": 0.01, "start_step_size": 3.0, "end_step_size": 0.125,
              "precond": 0.1, "step_gain": 0.1, "grey_level": 128.0, "noise_level": 8.0, "levels": 255.0}


@PRESETS.register("walker2019", description=(
    "Walker et al. 2019 (inception loops): 1000 steps of the 1/f^0.2-smoothed, mean-|g|-normalised gradient "
    "(step 3→0.125 ·0.1/255 z), clip to the display range, image blur 1.5→0.01 px; start grey 128 ± 8 of 255; "
    "needs input_shape and input_stats (range = display 0…255)"))
def walker2019(input_shape: Sequence[int], input_stats: Mapping[str, Any], *, iterations: int = WALKER2019["iterations"]) -> dict[str, Any]:
    """Walker et al. 2019 ("Inception loops", Nat Neurosci): ``deepdraw`` of their code, per row.

    Display levels 0…255 are the stimulus ``range`` of ``input_stats`` (their model saw
    ``(level − mean)/std``; without ``range``: ``mean ± 3·std``, the default preset's clip). Start:
    grey level 128 plus normal noise of 8 levels, clipped to the range. Each step ``i``: the gradient
    scaled by ``1/max(1, f)**0.2`` in frequency (``precond`` 0.1 of the squared frequency), divided
    by its mean absolute value, times ``step_size_i · step_gain/255`` stimulus stds (their z-units;
    step size ramped linearly 3 → 0.125); then the image is clipped to the range and blurred with
    sigma ramped linearly 1.5 → 0.01 px (scipy's ``gaussian_filter``: edges mirrored with the edge
    pixel, each axis in float64 rounded back). 1000 steps; no jitter, no norm constraint (their first parameter row).
    """
    shape = _check_shape(input_shape)
    stats = check_input_stats(input_stats, shape[0])
    iterations = _check_iterations(iterations)
    settings = WALKER2019
    low, high = _clip(stats, CLIP_STDS)
    per_level = [(hi - lo) / settings["levels"] for lo, hi in zip(low, high)]
    grey = [lo + settings["grey_level"] * unit for lo, unit in zip(low, per_level)]
    # one noise std for all channels (FromArray's): exact for their grey-scale images
    noise = settings["noise_level"] * sum(per_level) / len(per_level)
    z_unit = math.sqrt(sum(sd * sd for sd in stats["std"]) / shape[0])
    clip = {"path": "ClipRange", "kwargs": {"x_min": _per_channel_or_scalar(low), "x_max": _per_channel_or_scalar(high)}}
    return {
        "initial": {"path": "FromArray", "kwargs": {"array": _per_channel_image(grey, shape, "input_stats.range"), "noise_std": noise}},
        "project_initial": clip,
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": settings["step_gain"] / settings["levels"] * z_unit}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
        "precondition": [
            # their fft_smooth: 1/max(1, (kx² + ky²)**precond) with their frequency indices
            {"path": "FourierSmoothing", "kwargs": {"exponent": 2 * settings["precond"], "mask": "index_power"}},
            {"path": "DivideByMeanOfAbsolute", "kwargs": {}},
            {"path": "MultiplyBy", "kwargs": {"const": settings["start_step_size"], "decay": "linear",
                                              "decay_factor": (settings["end_step_size"] - settings["start_step_size"]) / iterations}},
        ],
        "postprocessing": [
            clip,
            {"path": "GaussianBlurInput", "kwargs": {"sigma": settings["start_sigma"], "decay": "linear",
                                                     "decay_factor": (settings["end_sigma"] - settings["start_sigma"]) / iterations,
                                                     "truncate": 4.0, "pad_mode": "symmetric", "kernel_radius": "round",
                                                     "precision": "float64"}},
        ],
    }


#: Burg et al. 2024's mouse-retina MDS as openretina's notebook runs them
#: (``notebooks/most_discriminative_stimulus.ipynb``, ``optimize_and_plot_stimulus``): the clip
#: rounds Höfling et al.'s ranges; low-pass sigma and kernel in frames
MDS_NORM = 30.0
MDS_RANGES = ((-0.6, 6.2), (-0.9, 6.2))
MDS_LOW_PASS = {"sigma": 0.5, "kernel_size": 5}


@PRESETS.register("mds", description=(
    "most discriminative stimuli (Burg et al. 2024) for mouse-retina videos as openretina's MDS notebook: SGD lr 100, "
    "10 steps, norm 30, per-channel clip, temporal low-pass; use with the contrastive objective kind"))
def mds(iterations: int = 10) -> dict[str, Any]:
    """Most discriminative stimuli (Burg et al., ICLR 2024) for mouse-retina videos (green, UV), as
    openretina's MDS notebook makes them: SGD lr 100 for 10 steps, after each step the joint L2 norm
    30 with per-channel clipping (green [−0.6, 6.2], UV [−0.9, 6.2]) and a temporal Gaussian
    low-pass (sigma 0.5 frames, 5 taps, zero-padded); the start ``0.1·randn`` gets the norm and clip
    (not the low-pass) before the first step.  The objective is the ``contrastive`` kind (its
    temperature 1.6 is the paper code's); use ``reducer: {slice_mean: {start: 10, length: 10}}``.
    Sources in ``config/README.md`` ("Published presets")."""
    iterations = _check_iterations(iterations)
    clip = {"path": "ChangeNormJointlyClipRangeSeparately",
            "kwargs": {"min_max_values": [list(pair) for pair in MDS_RANGES], "norm": MDS_NORM}}
    return {
        "initial": {"path": "RandomNormal", "kwargs": {"std": 0.1}},
        "project_initial": clip,
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 100.0}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": iterations}},
        "postprocessing": [
            clip,
            {"path": "TemporalGaussianLowPass", "kwargs": {**MDS_LOW_PASS, "padding": "zeros"}},
        ],
    }


#: sinzlab/mei's documented method config (its README.md "Quickstart" and docs/README.md, the
#: ``MEIMethod().add_method`` example), less ``"device"``: where to run is the caller's choice here
SINZLAB_DOCUMENTED = {"lr": 0.1, "num_iterations": 1000, "interval": 10}


#: What ``sinzlab_default`` accepts as z-scored stimuli: every channel's mean within this many of
#: its stds of 0, and its std within this factor of 1 (sinzlab's lr 0.1 acts on raw gradients of a
#: ``randn`` start: numbers for a model of z-scored inputs).
SINZLAB_Z_SCORE_TOLERANCE = {"mean_in_stds": 0.5, "std_factor": 2.0}


def check_z_scores(input_stats: Mapping[str, Any], preset_name: str, n_channels: int | None = None) -> None:
    """Refuse ``input_stats`` that are not z-scores for a preset whose numbers assume them."""
    stats = check_input_stats(input_stats, n_channels or _n_channels(input_stats, None))
    tolerance = SINZLAB_Z_SCORE_TOLERANCE
    for c, (mean, std) in enumerate(zip(stats["mean"], stats["std"])):
        if abs(mean) > tolerance["mean_in_stds"] * std or not 1 / tolerance["std_factor"] <= std <= tolerance["std_factor"]:
            raise MEIConfigError(
                f"input_stats: preset {preset_name!r} assumes z-scored stimuli (mean 0, std 1: its lr acts on raw gradients "
                f"of a randn start around 0), but channel {c} has mean {mean:g} and std {std:g}; use preset 'default' or "
                f"'walker2019' (they follow input_stats), or give the model z-scored inputs ((x - mean) / std, "
                f"config/README.md, \"Presets in the stimulus's units\")")


@PRESETS.register("sinzlab_default", description=(
    "sinzlab/mei's documented config through mei_core.compat.sinzlab.translate: RandomNormal start, SGD lr 0.1, "
    "NumIterations(1000) (1001 steps), evaluation tracked every 10 steps; no contrast constraint; z-scored inputs "
    "only (refuses other input_stats)"))
def sinzlab_default(lr: float = SINZLAB_DOCUMENTED["lr"], num_iterations: int = SINZLAB_DOCUMENTED["num_iterations"],
                    interval: int = SINZLAB_DOCUMENTED["interval"], input_stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """sinzlab/mei's documented config (``RandomNormal`` start, SGD lr 0.1, ``NumIterations(1000)``,
    the evaluation tracked every 10 steps), through :func:`mei_core.compat.sinzlab.translate`, which
    holds sinzlab's component defaults and semantics (so 1000 there is 1001 optimiser steps here).
    Unconstrained, as documented: add a ``postprocessing`` (e.g. ``PNormConstraintAndClip``) to bound it.
    Its numbers are for z-scored inputs: given ``input_stats`` that are not z-scores it refuses
    (``check_z_scores``); the config itself never depends on them."""
    from .compat.sinzlab import translate

    _check_iterations(num_iterations, "num_iterations")
    if input_stats is not None:
        check_z_scores(input_stats, "sinzlab_default")
    return translate({
        "initial": {"path": "mei.initial.RandomNormal"},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": lr}},
        "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": num_iterations}},
        "objectives": [{"path": "mei.objectives.EvaluationObjective", "kwargs": {"interval": interval}}],
    })


def cma_es_config(parameterisation: Any = "Gabor", norm: float = 10.0, x_min: Any = None, x_max: Any = None, *,
                  max_generations: int = 150, sigma0: float = 0.5, population_size: int | None = None,
                  input_stats: Mapping[str, Any] | None = None, input_shape: Sequence[int] | None = None,
                  clip_stds: float | None = None) -> dict[str, Any]:
    """A ``mei_core.cmaes.cma_es`` config with a contrast budget on the decoded stimulus: L2 ``norm``
    (stimulus units) of the contrast and the clip ``[x_min, x_max]``.

    With ``input_stats`` the decoded contrast is added to the stimulus mean (``AddMean``) and the
    budget is measured around it (``ChangeNormAroundMean``; clip default: the stated range, else
    mean ± 3 std), as the default preset does, so it is right in any units. Without, the stimuli
    are z-scores: ``ChangeNorm`` then ``ClipRange`` (default ±3)."""
    config: dict[str, Any] = {"parameterisation": parameterisation, "sigma0": sigma0, "max_generations": max_generations}
    if input_stats is None:
        config["postprocessing"] = [
            {"path": "ChangeNorm", "kwargs": {"norm": norm}},
            {"path": "ClipRange", "kwargs": {"x_min": -CLIP_STDS if x_min is None else x_min, "x_max": CLIP_STDS if x_max is None else x_max}},
        ]
    else:
        stats = check_input_stats(input_stats, _n_channels(input_stats, input_shape))
        decoders = list(parameterisation) if isinstance(parameterisation, (list, tuple)) else [parameterisation]
        config["parameterisation"] = [*decoders, {"path": "AddMean", "kwargs": {"mean": _per_channel_or_scalar(stats["mean"])}}]
        config["postprocessing"] = [_around_mean(float(norm), stats, x_min, x_max, CLIP_STDS if clip_stds is None else clip_stds)]
    if population_size is not None:
        config["population_size"] = population_size
    return config


#: The ``cma_es`` preset's search (evidence: ``config/README.md``, "Presets in the stimulus's units"):
#: generations, candidates per generation, and the std of the start in parameter space. From a
#: ``RandomNormal(1)`` start a Gabor's centre and size are drawn anywhere, a small patch far from the
#: receptive field sees a flat response and the search stalls there (2 of 30 simple-cell MEIs at
#: r 0.59-0.70 on tests/unit_systems.py's population); a start near 0 is a Gabor centred in the
#: image with mid-range wavelength and envelope, which overlaps any receptive field (0 of 42 below
#: r 0.96). 20 candidates instead of cma's 10 for 8 parameters: 0.97 vs 0.96 worst.
CMA_ES_SEARCH = {"max_generations": 150, "population_size": 20, "start_std": 0.1}


@PRESETS.register("cma_es", description=(
    f"gradient-free CMA-ES (mei_core.cmaes.cma_es) over a Gabor (or DoG, Pixels, …) decoded around input_stats.mean, "
    f"the default's contrast budget, {CMA_ES_SEARCH['population_size']} candidates × {CMA_ES_SEARCH['max_generations']} generations "
    "from a centred start; needs input_shape and input_stats"))
def cma_es(input_shape: Sequence[int], input_stats: Mapping[str, Any], *, parameterisation: Any = "Gabor",
           norm_factor: float = NORM_FACTOR, clip_stds: float = CLIP_STDS, norm: float | None = None,
           max_generations: int = CMA_ES_SEARCH["max_generations"], sigma0: float = 0.5,
           population_size: int = CMA_ES_SEARCH["population_size"], start_std: float = CMA_ES_SEARCH["start_std"]) -> dict[str, Any]:
    """Gradient-free MEIs (``mei_core.cmaes.cma_es``) with the default preset's contrast budget.

    The ``parameterisation`` (``Gabor``, ``DoG``, ``Pixels``, …) decodes contrast around 0; the
    stimulus mean is added (``AddMean``), and every decoded candidate's contrast is rescaled to the
    default's norm and clipped to its range (``ChangeNormAroundMean``), so the search is the same in
    any stimulus units. The search starts near 0 in parameter space (``start_std``): for ``Gabor`` a
    patch centred in the image, mid-sized (why: ``CMA_ES_SEARCH``)."""
    shape = _check_shape(input_shape)
    budget = contrast_budget(shape, input_stats, norm_factor, clip_stds)
    if not start_std > 0:
        raise MEIConfigError(f"start_std: must be > 0, got {start_std!r}")
    config = cma_es_config(parameterisation, norm=float(norm) if norm is not None else budget["norm"],
                           max_generations=max_generations, sigma0=sigma0, population_size=population_size,
                           input_stats=input_stats, input_shape=shape, clip_stds=clip_stds)
    return {**config, "initial": {"path": "RandomNormal", "kwargs": {"std": start_std}}}


cma_es.method_fn = "mei_core.cmaes.cma_es"  # type: ignore[attr-defined]  # what runs its config

# --------------------------------------------------------------------------- the registry


def preset_method_fn(name: str, key: str = "preset") -> str | None:
    """The ``method_fn`` that runs preset ``name``'s config, when it is not gradient ascent."""
    return getattr(PRESETS.get(name, key), "method_fn", None)


def preset(name: str, **params: Any) -> dict[str, Any]:
    """The method config of preset ``name`` with ``params`` (see ``PRESETS.entry(name, ...).parameters``)."""
    if name not in PRESETS:
        raise MEIConfigError(f"preset: unknown preset {name!r}; known presets: {', '.join(PRESETS.names())}")
    entry = PRESETS.entry(name, "preset")
    unknown = sorted(set(params) - set(entry.parameters))
    if unknown:
        raise MEIConfigError(f"preset.{unknown[0]}: preset {name!r} takes no parameter {unknown[0]!r}; "
                             f"its parameters: {', '.join(entry.parameters)}")
    return entry.value(**params)


def describe_presets() -> str:
    """Every preset with its parameters and what it is (``python -m mei_core presets``)."""
    lines = []
    for entry in PRESETS:
        lines.append(f"{entry.name}({', '.join(entry.parameters)})")
        lines.append(f"    {entry.description}")
    return "\n".join(lines)
