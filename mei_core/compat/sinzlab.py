"""Import a sinzlab/mei method config: :func:`translate` gives the equivalent config of ours, or refuses
the part it cannot translate with a :class:`~mei_core.errors.MEIConfigError` naming its key.

sinzlab/mei (``mei.methods.gradient_ascent``) builds one component per slot from ``{path, kwargs}``;
its components live in ``mei.legacy.ops`` (transforms, regularizers, preconditioners, postprocessing,
backgrounds), ``mei.initial``, ``mei.stoppers``, ``mei.objectives`` (trackers) and
``mei.postprocessing``. A path of any ``mei.`` module is recognised by its class name; ``torch.optim``
and other optimizer paths pass through unchanged.

Units: sinzlab's numbers (``RandomNormal`` start, SGD lr on raw gradients, ``PNormConstraintAndClip``
defaults ±1) are written for models of z-scored inputs (mean 0, std 1). The translation keeps them as
they are; the ``sinzlab_default`` preset refuses ``input_stats`` that are not z-scores
(:func:`mei_core.presets.check_z_scores`; config/README.md, "Presets in the stimulus's units").

What the translation keeps (checked against sinzlab/mei's code; the formula is the same):

- ``decay_factor`` of ``GaussianBlur`` / ``MultiplyBy`` is *additive* there: ``sigma + decay_factor ·
  (i − 1)`` at step ``i`` (from 0); ours is multiplicative unless ``decay: additive``, which the
  translation sets. ``decay_factor: None`` is a constant. ``GaussianBlur``'s kernel radius is
  ``round(truncate·sigma)`` there (``kernel_radius: round``), ``pad_mode`` and ``mei_only`` (→
  ``exclude_last_channel``) carry over; as a postprocessing it blurs the input (``GaussianBlurInput``).
- ``NumIterations(n)`` stops there after ``n + 1`` optimiser steps (it checks ``i == n`` after step ``i``):
  ours gets ``n + 1``.
- Regularizers see the *transformed* input there: ``regularize: transformed`` when there is a transform.
- ``FourierSmoothing(freq_exp)`` multiplies the spectrum by ``(1 − √2·f)**freq_exp``
  (``mask: linear_falloff``); ``ChangeStd(zero_mean=True)``, its default, only multiplies
  (``keep_mean: false``); ``LpNorm`` defaults to ``p = 6``; ``PNormConstraintAndClip``'s
  ``min/max_pixel_value`` are our ``x_min/x_max`` (defaults ``norm_value`` 30, ``p`` 1, ±1);
  ``TotalVariation(isotropic)``; ``inhibitory: true`` is ``direction: minimize``;
  ``model_forward_kwargs`` is our method option of that name (the objective passes it to the model).
- ``BoxContrast`` and ``BoxContrastPixelL2``: the same formulas per row (``BoxContrastPixelL2``'s lower
  bound term ``relu(−(x − lower)**p)`` is 0 for even ``p``: translated to ``lower: null`` then).
- Ring / centre / surround MEIs (``GaussianBlurforRing`` / ``Center`` / ``Surround``, which fetch the
  earlier MEIs from a DataJoint table by ``key``): a ``GaussianBlurInput`` then ``FixRegion`` with the
  earlier MEIs given to :func:`translate` as ``meis={"inner": ..., "outer": ...}`` (``.npy`` or arrays).

Where ours differs on purpose (a :class:`SinzlabTranslationWarning` says so when it applies):

- Every regularizer, preconditioner and postprocessor acts per row; sinzlab's reduce over the batch
  (``torch.mean`` of per-image values, ``DivideByMeanOfAbsolute`` broadcasts a per-image vector
  against the last dimension): identical for one MEI per call (``n_meis: 1``), which is sinzlab's use.
- Random transforms and backgrounds draw from each MEI's own counter-based stream
  (:mod:`mei_core.streams`), not from torch's / numpy's global state: the same distributions, other
  draws.
- ``TotalVariation``: sinzlab's vertical term is ``|x[:, :, 1:] − x[:, :, -1:]|`` (each row against the
  *last* row); ours takes neighbouring rows, the definition its docstring cites.
- ``transparency``: translated to ``WithAlphaChannel`` (alpha 0.5 appended), ``AlphaBlend(alpha:
  linear)`` on the translated background (``NatImgBackground`` → ``NaturalImageBackground`` of the
  images given as ``background_images``; ``WhiteNoiseBackground`` → ours with ``peak = 2.12·strength``;
  scaled by ``transparency_weight``) and ``OpacityPenalty(alpha: linear)`` for ``RegTransparency`` /
  ``Transparency``. sinzlab's own loss ``(−f + R(ᾱ))·(1 − w·ᾱ)`` (a product), its blend of image
  channel 0 with the first row of the background image (``bg[[0], ...]`` of an ``H×W`` image) and its
  skipping of the transform are not reproduced: the MEI is of the same kind, not formula-identical.
  Like sinzlab's, the returned MEI is ``[image channels, alpha]``; in a pipeline run the Zarr store
  keeps the image channels in ``mei`` and the alpha in ``opacity``.
- The score we report is the objective of the returned MEI; sinzlab returns the evaluation of the input
  before its last step.

Refused (by key): ``Similarity`` (a batch-wide max over pairs), ``BatchedCrops`` (changes the batch),
components outside ``mei.`` other than the optimizer (sinzlab's ``(x, iteration)`` callables do not fit
our ABCs), unknown slots and unknown arguments.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MEIConfigError

__all__ = ["SinzlabTranslationWarning", "translate", "translate_with_notes"]

Spec = dict[str, Any]
_REQUIRED = object()


class SinzlabTranslationWarning(UserWarning):
    """A sinzlab/mei config part was translated to something close but not formula-identical."""


#: sinzlab/mei's constructor arguments and defaults, by class name (from its source)
SIGNATURES: dict[str, dict[str, Any]] = {
    # mei.initial
    "RandomNormal": {},
    "RandomNormalNullChannel": {"null_channel": _REQUIRED, "null_value": 0},
    # mei.stoppers
    "NumIterations": {"num_iterations": _REQUIRED},
    # mei.objectives (trackers)
    "EvaluationObjective": {"interval": _REQUIRED},
    "PostProcessedInputObjective": {"interval": _REQUIRED},
    # mei.legacy.ops: transforms
    "Identity": {},
    "Jitter": {"max_jitter": _REQUIRED},
    "RandomCrop": {"height": _REQUIRED, "width": _REQUIRED},
    "ChangeRange": {"x_min": _REQUIRED, "x_max": _REQUIRED},
    "Resize": {"scale_factor": _REQUIRED, "resize_method": "bilinear"},
    "GrayscaleToRGB": {},
    "BatchedCrops": {"height": _REQUIRED, "width": _REQUIRED, "step_size": _REQUIRED, "sigma": None},
    # regularizers
    "TotalVariation": {"weight": 1, "isotropic": False},
    "LpNorm": {"weight": 1, "p": 6},
    "Similarity": {"weight": 1, "metric": "correlation", "combine_op": None, "mask": None},
    "BoxContrast": {"weight": 0.1, "filter_size": 7, "box_constraint": 10, "p": 2, "padding": 0, "l1_weight": 1e-3},
    "BoxContrastPixelL2": {"weight": 0.1, "upper": 2.0, "lower": -1.5, "p": 2, "l2_weight": 1, "l1_weight": 0, "filter_size": 3},
    "Transparency": {"weight": 0.5},
    "RegTransparency": {"weight": 0},
    # preconditioners / postprocessing
    "GaussianBlur": {"sigma": _REQUIRED, "decay_factor": None, "truncate": 4, "pad_mode": "reflect", "mei_only": False},
    "FourierSmoothing": {"freq_exp": _REQUIRED},
    "DivideByMeanOfAbsolute": {},
    "MultiplyBy": {"const": _REQUIRED, "decay_factor": None},
    "ChangeNorm": {"norm": _REQUIRED},
    "ClipRange": {"x_min": _REQUIRED, "x_max": _REQUIRED},
    "ChangeStd": {"std": _REQUIRED, "zero_mean": True},
    "PNormConstraint": {"norm_value": _REQUIRED, "p": 1},
    "PNormConstraintAndClip": {"norm_value": 30.0, "p": 1, "max_pixel_value": 1.0, "min_pixel_value": -1.0},
    "GaussianBlurforRing": {"sigma": _REQUIRED, "key": _REQUIRED, "decay_factor": None, "truncate": 4,
                            "mask_thres_for_ring": 0.3, "pad_mode": "reflect"},
    "GaussianBlurforCenter": {"sigma": _REQUIRED, "key": _REQUIRED, "decay_factor": None, "truncate": 4,
                              "mask_thres": 0.3, "pad_mode": "reflect"},
    "GaussianBlurforSurround": {"sigma": _REQUIRED, "key": _REQUIRED, "decay_factor": None, "truncate": 4,
                                "mask_thres": 0.3, "pad_mode": "reflect"},
    # backgrounds (transparency MEIs)
    "NatImgBackground": {"dataset_fn": _REQUIRED, "dataset_path": _REQUIRED, "norm": None, "dataset_name": "22564-3-12"},
    "NatImgBackgroundHighNorm": {"dataset_fn": _REQUIRED, "dataset_path": _REQUIRED, "start_norm": None, "end_norm": None,
                                 "dataset_name": None},
    "WhiteNoiseBackground": {"mean": _REQUIRED, "std": _REQUIRED, "shape": (72, 128), "strength": 1},
}

#: sinzlab/mei's method-config keys beside the component slots
OPTION_KEYS = ("device", "n_meis", "mei_shape", "model_forward_kwargs", "transparency", "transparency_weight", "inhibitory")
COMPONENT_KEYS = ("initial", "optimizer", "stopper", "transform", "regularization", "precondition", "postprocessing",
                  "background", "objectives")


@dataclass
class _Context:
    """What one translation knows beyond a component's own kwargs."""

    transparency: bool = False
    transparency_weight: float = 1.0
    background_images: Any = None
    meis: Mapping[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, key: str, text: str) -> None:
        self.notes.append(f"{key}: {text}")


def _spec(path: str, **kwargs: Any) -> Spec:
    return {"path": path, "kwargs": kwargs}


def _component(spec: Any, key: str) -> tuple[str, dict[str, Any]]:
    """``(class name, kwargs with sinzlab's defaults filled in)`` of a ``mei.`` component spec."""
    if not isinstance(spec, Mapping) or "path" not in spec:
        raise MEIConfigError(f"{key}: expected {{'path': 'mei.legacy.ops.Name', 'kwargs': {{...}}}}, got {spec!r}")
    unexpected = sorted(set(spec) - {"path", "kwargs"})
    if unexpected:
        raise MEIConfigError(f"{key}.{unexpected[0]}: a sinzlab/mei component spec has only 'path' and 'kwargs'")
    path = spec["path"]
    if not isinstance(path, str) or not path.startswith("mei."):
        raise MEIConfigError(
            f"{key}.path: {path!r} is not a sinzlab/mei component; its (x, iteration) callables do not fit "
            f"mei_core's components: port it to a subclass of an ABC in mei_core.components"
        )
    name = path.rsplit(".", 1)[-1]
    if name not in SIGNATURES:
        raise MEIConfigError(f"{key}.path: {path!r} has no translation (known: {', '.join(sorted(SIGNATURES))})")
    kwargs = dict(spec.get("kwargs") or {})
    defaults = SIGNATURES[name]
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise MEIConfigError(f"{key}.kwargs.{unknown[0]}: not an argument of sinzlab/mei's {name} ({', '.join(defaults) or 'none'})")
    merged = {**defaults, **kwargs}
    missing = [k for k, v in merged.items() if v is _REQUIRED]
    if missing:
        raise MEIConfigError(f"{key}.kwargs.{missing[0]}: required by sinzlab/mei's {name}")
    return name, merged


def _sigma(sigma: Any) -> Any:
    return list(sigma) if isinstance(sigma, (list, tuple)) else sigma


def _blur(path: str, args: Mapping[str, Any], mei_only: bool = False) -> Spec:
    """sinzlab's Gaussian blur as ours: additive decay, Python-rounded kernel radius, its pad mode."""
    kwargs: dict[str, Any] = {"sigma": _sigma(args["sigma"]), "truncate": float(args["truncate"]), "pad_mode": args["pad_mode"],
                              "kernel_radius": "round", "exclude_last_channel": bool(mei_only)}
    if args["decay_factor"] is not None:
        kwargs.update(decay_factor=float(args["decay_factor"]), decay="additive")
    else:
        kwargs.update(decay_factor=None)
    return _spec(path, **kwargs)


# ------------------------------------------------------------------------------- per slot


def _initial(spec: Any, key: str, ctx: _Context) -> Spec:
    name, args = _component(spec, key)
    if name == "RandomNormal":
        ours = _spec("RandomNormal")
    elif name == "RandomNormalNullChannel":
        ours = _spec("RandomNormalNullChannel", null_channel=int(args["null_channel"]), null_value=float(args["null_value"]))
    else:
        raise MEIConfigError(f"{key}.path: {name} is not an initial guess")
    return _spec("WithAlphaChannel", initial=ours, alpha=0.5) if ctx.transparency else ours


def _stopper(spec: Any, key: str, ctx: _Context) -> Spec:
    name, args = _component(spec, key)
    if name != "NumIterations":
        raise MEIConfigError(f"{key}.path: {name} is not a stopper")
    # sinzlab steps, then stops once i == n: n + 1 steps; ours stops before stepping at i == n
    return _spec("NumIterations", num_iterations=int(args["num_iterations"]) + 1)


def _transform(spec: Any, key: str, ctx: _Context) -> list[Spec]:
    name, args = _component(spec, key)
    if name == "Identity":
        return []
    if name == "Jitter":
        ctx.note(key, "Jitter draws its shifts from each item's generator (sinzlab: torch's global generator)")
        jitter = args["max_jitter"]
        return [_spec("Jitter", max_jitter=list(jitter) if isinstance(jitter, (list, tuple)) else int(jitter), pad_mode="reflect")]
    if name == "RandomCrop":
        ctx.note(key, "RandomCrop draws its offsets from each item's generator (sinzlab: torch's global generator)")
        return [_spec("RandomCrop", height=int(args["height"]), width=int(args["width"]))]
    if name == "ChangeRange":
        return [_spec("ChangeRange", x_min=float(args["x_min"]), x_max=float(args["x_max"]))]
    if name == "Resize":
        ctx.note(key, "sinzlab's Resize never sets self.resize_method and fails when called; translated to Resize(scale_factor, mode)")
        return [_spec("Resize", scale_factor=float(args["scale_factor"]), mode=args["resize_method"])]
    if name == "GrayscaleToRGB":
        return [_spec("GrayscaleToRGB")]
    if name == "BatchedCrops":
        raise MEIConfigError(f"{key}.path: BatchedCrops turns one MEI into a batch of crops; mei_core keeps one row per MEI (not supported)")
    raise MEIConfigError(f"{key}.path: {name} is not a transform")


def _regularization(spec: Any, key: str, ctx: _Context) -> list[Spec]:
    name, args = _component(spec, key)
    if ctx.transparency:
        # sinzlab hands the regularization the mean alpha value (a number) of a transparency MEI
        if name in ("RegTransparency", "Transparency"):
            return [_spec("OpacityPenalty", weight=float(args["weight"]), alpha="linear")]
        raise MEIConfigError(f"{key}.path: with transparency, sinzlab/mei regularizes the mean alpha only (RegTransparency); {name} is not supported there")
    if name == "TotalVariation":
        ctx.note(key, "sinzlab's TotalVariation differences every row with the last row (x[:, :, 1:] − x[:, :, -1:]); ours with the neighbouring row")
        return [_spec("TotalVariation", weight=float(args["weight"]), isotropic=bool(args["isotropic"]))]
    if name == "LpNorm":
        return [_spec("LpNorm", p=float(args["p"]), weight=float(args["weight"]))]
    if name == "BoxContrast":
        return [_spec("BoxContrast", weight=float(args["weight"]), filter_size=int(args["filter_size"]),
                      box_constraint=float(args["box_constraint"]), p=float(args["p"]), padding=int(args["padding"]),
                      l1_weight=float(args["l1_weight"]))]
    if name == "BoxContrastPixelL2":
        p = float(args["p"])
        lower = None if p.is_integer() and int(p) % 2 == 0 else float(args["lower"])
        if lower is None:
            ctx.note(key, f"sinzlab's lower-bound term relu(−(x − lower)**{int(p)}) is always 0 for even p: translated without a lower bound")
        return [_spec("BoxContrastPixelL2", weight=float(args["weight"]), upper=float(args["upper"]), lower=lower, p=p,
                      l2_weight=float(args["l2_weight"]), l1_weight=float(args["l1_weight"]), filter_size=int(args["filter_size"]))]
    if name == "Transparency":
        return [_spec("OpacityPenalty", weight=float(args["weight"]), alpha="linear")]
    if name == "Similarity":
        raise MEIConfigError(
            f"{key}.path: sinzlab's Similarity penalises the batch-wide {('max' if args['combine_op'] is None else 'combined')} "
            f"similarity of all rows; mei_core's Similarity (mean similarity to the item's other rows) is a different penalty: not translated"
        )
    if name == "RegTransparency":
        raise MEIConfigError(f"{key}.path: RegTransparency regularizes the mean alpha of transparency MEIs; set transparency: true")
    raise MEIConfigError(f"{key}.path: {name} is not a regularizer")


def _precondition(spec: Any, key: str, ctx: _Context) -> list[Spec]:
    name, args = _component(spec, key)
    if name == "GaussianBlur":
        return [_blur("GaussianBlur", args, args["mei_only"])]
    if name == "FourierSmoothing":
        return [_spec("FourierSmoothing", exponent=float(args["freq_exp"]), mask="linear_falloff")]
    if name == "DivideByMeanOfAbsolute":
        return [_spec("DivideByMeanOfAbsolute")]
    if name == "MultiplyBy":
        if args["decay_factor"] is None:
            return [_spec("MultiplyBy", const=float(args["const"]), decay_factor=None)]
        return [_spec("MultiplyBy", const=float(args["const"]), decay_factor=float(args["decay_factor"]), decay="additive")]
    raise MEIConfigError(f"{key}.path: {name} is not a preconditioner mei_core translates")


def _region_mei(ctx: _Context, which: str, key: str) -> Any:
    if which not in ctx.meis:
        raise MEIConfigError(
            f"{key}.kwargs.key: sinzlab/mei fetches the {which} MEI from its DataJoint table; give it to "
            f"translate(..., meis={{'{which}': 'mei.npy' or an array}})"
        )
    return ctx.meis[which]


def _postprocessing(spec: Any, key: str, ctx: _Context) -> list[Spec]:
    name, args = _component(spec, key)
    if name == "ChangeNorm":
        return [_spec("ChangeNorm", norm=float(args["norm"]))]
    if name == "ClipRange":
        return [_spec("ClipRange", x_min=float(args["x_min"]), x_max=float(args["x_max"]))]
    if name == "ChangeStd":
        return [_spec("ChangeStd", std=float(args["std"]), keep_mean=not bool(args["zero_mean"]))]
    if name == "GaussianBlur":
        return [_blur("GaussianBlurInput", args, args["mei_only"])]
    if name == "PNormConstraintAndClip":
        return [_spec("PNormConstraintAndClip", norm_value=float(args["norm_value"]), p=float(args["p"]),
                      x_min=float(args["min_pixel_value"]), x_max=float(args["max_pixel_value"]))]
    if name == "PNormConstraint":
        return [_spec("PNormConstraintAndClip", norm_value=float(args["norm_value"]), p=float(args["p"]))]
    if name in ("GaussianBlurforRing", "GaussianBlurforCenter", "GaussianBlurforSurround"):
        blur = _blur("GaussianBlurInput", args)
        # sinzlab reads channel 1 (the alpha of a [image, alpha] transparency MEI) of mei[0]
        if name == "GaussianBlurforRing":
            region = _spec("FixRegion", mei=_region_mei(ctx, "inner", key), outer_mei=_region_mei(ctx, "outer", key), region="ring",
                           threshold=float(args["mask_thres_for_ring"]), channel=1)
        else:
            region = _spec("FixRegion", mei=_region_mei(ctx, "inner", key), region="centre" if name == "GaussianBlurforCenter" else "surround",
                           threshold=float(args["mask_thres"]), channel=1)
        return [blur, region]
    raise MEIConfigError(f"{key}.path: {name} is not a postprocessing mei_core translates")


def _background(spec: Any, key: str, ctx: _Context) -> Spec:
    name, args = _component(spec, key)
    weight = ctx.transparency_weight
    if name in ("NatImgBackground", "NatImgBackgroundHighNorm"):
        if ctx.background_images is None:
            raise MEIConfigError(
                f"{key}.kwargs.dataset_fn: sinzlab/mei loads the background images with nnfabrik; give them to "
                f"translate(..., background_images='images.npy' or an N×H×W array)"
            )
        images = ctx.background_images
        if name == "NatImgBackgroundHighNorm":
            ctx.note(key, "sinzlab's NatImgBackgroundHighNorm computes a rescaled image but returns the original: translated without a norm")
            return _spec("NaturalImageBackground", images=images, scale=weight)
        norm = args["norm"]
        if norm is None:
            return _spec("NaturalImageBackground", images=images, scale=weight)
        return _spec("NaturalImageBackground", images=images, norm=float(norm), x_min=-1.96, x_max=2.12, scale=weight)
    if name == "WhiteNoiseBackground":
        ctx.note(key, "the white-noise background has the MEI's size (sinzlab: kwargs.shape) and comes from each item's generator")
        return _spec("WhiteNoiseBackground", mean=float(args["mean"]), std=float(args["std"]), peak=2.12 * float(args["strength"]), scale=weight)
    raise MEIConfigError(f"{key}.path: {name} is not a background")


def _trackers(spec: Any, key: str, ctx: _Context) -> dict[str, Spec]:
    if not isinstance(spec, (list, tuple)):
        raise MEIConfigError(f"{key}: expected a list of {{'path', 'kwargs'}} objectives, got {spec!r}")
    trackers: dict[str, Spec] = {}
    for i, entry in enumerate(spec):
        name, args = _component(entry, f"{key}[{i}]")
        if name not in ("EvaluationObjective", "PostProcessedInputObjective"):
            raise MEIConfigError(f"{key}[{i}].path: {name} is not a tracked objective")
        trackers[name] = _spec(name, interval=int(args["interval"]))
    return trackers


def _list(specs: list[Spec]) -> Any:
    return specs[0] if len(specs) == 1 else specs


# ------------------------------------------------------------------------------- entry points


def translate_with_notes(
    sinzlab_method_config: Mapping[str, Any],
    *,
    background_images: str | np.ndarray | None = None,
    meis: Mapping[str, str | np.ndarray] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Like :func:`translate`, and also return the notes on parts that are not formula-identical."""
    config = sinzlab_method_config
    if not isinstance(config, Mapping):
        raise MEIConfigError(f"config: a sinzlab/mei method config is a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(OPTION_KEYS) - set(COMPONENT_KEYS))
    if unknown:
        raise MEIConfigError(f"config.{unknown[0]}: not a sinzlab/mei method config key (known: {', '.join(COMPONENT_KEYS + OPTION_KEYS)})")
    for slot in ("initial", "optimizer", "stopper"):
        if slot not in config:
            raise MEIConfigError(f"config.{slot}: required by sinzlab/mei's gradient_ascent")
    ctx = _Context(
        transparency=bool(config.get("transparency")),
        transparency_weight=float(config.get("transparency_weight", 1.0)),
        background_images=background_images,
        meis=dict(meis or {}),
    )
    ours: dict[str, Any] = {}
    ours["initial"] = _initial(config["initial"], "config.initial", ctx)

    optimizer = config["optimizer"]
    if not isinstance(optimizer, Mapping) or "path" not in optimizer:
        raise MEIConfigError(f"config.optimizer: expected {{'path': 'torch.optim.SGD', 'kwargs': {{...}}}}, got {optimizer!r}")
    ours["optimizer"] = {"path": optimizer["path"], "kwargs": copy.deepcopy(dict(optimizer.get("kwargs") or {}))}
    ours["stopper"] = _stopper(config["stopper"], "config.stopper", ctx)

    if ctx.transparency:
        if "transform" in config:
            ctx.note("config.transform", "sinzlab evaluates a transparency MEI without its transform: dropped")
        if "background" in config:
            background: Any = _background(config["background"], "config.background", ctx)
        else:
            ctx.note("config.background", "no background (sinzlab's default background is None, which fails): blending onto 0")
            background = 0.0
        ours["transform"] = _spec("AlphaBlend", background=background, alpha="linear")
        ctx.note("config.transparency", "sinzlab's loss (−f + R(ᾱ))·(1 − w·ᾱ), its channel-0 blend and its first-row background are not reproduced; ours is −f + R")
    else:
        if "background" in config:
            raise MEIConfigError("config.background: sinzlab/mei uses a background only with transparency: true")
        if "transform" in config:
            transforms = _transform(config["transform"], "config.transform", ctx)
            if transforms:
                ours["transform"] = _list(transforms)

    for slot, translate_slot in (("regularization", _regularization), ("precondition", _precondition), ("postprocessing", _postprocessing)):
        if slot in config:
            built = translate_slot(config[slot], f"config.{slot}", ctx)
            if built:
                ours[slot] = _list(built)
    if "regularization" in ours and "transform" in ours and not ctx.transparency:
        ours["regularize"] = "transformed"  # sinzlab regularizes what the model sees
    if "objectives" in config:
        ours["trackers"] = _trackers(config["objectives"], "config.objectives", ctx)

    n_meis = config.get("n_meis", 1)
    if n_meis != 1:
        ours["n_meis"] = n_meis
        ctx.note("config.n_meis", "sinzlab's components reduce over the whole batch of MEIs, ours act per MEI")
    if config.get("inhibitory"):
        ours["direction"] = "minimize"
    if config.get("model_forward_kwargs"):
        forward_kwargs = config["model_forward_kwargs"]
        if not isinstance(forward_kwargs, Mapping):
            raise MEIConfigError(f"config.model_forward_kwargs: must be a mapping, got {forward_kwargs!r}")
        ours["model_forward_kwargs"] = copy.deepcopy(dict(forward_kwargs))
    if "device" in config:
        ours["device"] = config["device"]
    if "mei_shape" in config:
        ctx.note("config.mei_shape", "dropped: the MEI shape is the ensemble's input_shape (or gradient_ascent's shape)")
    return ours, ctx.notes


def translate(
    sinzlab_method_config: Mapping[str, Any],
    *,
    background_images: str | np.ndarray | None = None,
    meis: Mapping[str, str | np.ndarray] | None = None,
) -> dict[str, Any]:
    """The mei_core method config equivalent to a sinzlab/mei method config (never mutated).

    ``background_images``: the images of ``NatImgBackground`` (``.npy`` path or ``N×H×W`` array;
    sinzlab loads them through nnfabrik). ``meis``: the earlier MEIs of ring / centre / surround
    postprocessing, ``{"inner": ..., "outer": ...}`` (``.npy`` paths or arrays ``1×2×H×W``).
    Parts that are close but not formula-identical raise a :class:`SinzlabTranslationWarning` each;
    parts that cannot be translated raise :class:`~mei_core.errors.MEIConfigError` naming their key.
    """
    ours, notes = translate_with_notes(sinzlab_method_config, background_images=background_images, meis=meis)
    for note in notes:
        warnings.warn(note, SinzlabTranslationWarning, stacklevel=2)
    return ours
