"""Method options declared once: an :class:`Option` (name, type, bounds, default, doc) gives the
check a method runs on its config, the JSON-schema fragment the pipeline's config schema uses, and
the row of the doc table in config/README.md (``python -m mei_core docs``).

The gradient method's options (:data:`METHOD_OPTIONS`) are declared here rather than in
:mod:`mei_core.method` because the Snakefile parse reads their schema, and that must not import torch
(``tests/test_plan_and_jobs.py`` checks the parse-time imports); CMA-ES declares its own beside its
code (:data:`mei_core.cmaes.OPTIONS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MEIConfigError

#: value types an option may have; ``slot`` is a component slot (one spec, a list, or trackers by
#: name: built by the method, the schema only checks the spec's shape)
TYPES = ("integer", "number", "string", "boolean", "mapping", "slot", "any")
_SLOT_SCHEMA = {"$ref": "#/$defs/component_slot"}


@dataclass(frozen=True)
class Option:
    name: str
    type: str
    default: Any = None
    doc: str = ""
    #: lowest value of a number (``exclusive``: the value must be greater)
    minimum: float | None = None
    exclusive: bool = False
    #: the allowed strings; a mapping gives each one's meaning (shown in the error and the docs)
    choices: Sequence[str] | Mapping[str, str] | None = None
    #: the method cannot run without it (there is no default)
    required: bool = False
    #: null is a valid value in the schema too (options without a default accept it in the checks:
    #: it means "none", no threshold, no limit)
    nullable: bool = False
    #: the default as the doc table shows it, where it is not a plain value (e.g. computed)
    default_doc: str | None = None
    #: the schema of a value the types above do not describe (e.g. a flag or component specs)
    schema_override: Mapping[str, Any] | None = None
    #: component base classes (names in :mod:`mei_core.components`) whose built-ins the doc table lists
    families: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"option {self.name!r}: type {self.type!r} is not one of {TYPES}")

    def read(self, config: Mapping[str, Any], key: str) -> Any:
        """The option's value in ``config`` (its default when absent), checked; errors name
        ``key.<name>``."""
        absent = self.name not in config or (config[self.name] is None and self.type == "mapping")
        value = self.default if absent else config[self.name]
        if value is None and (self.default is None or self.nullable):  # "none": no limit, no threshold
            return None
        if self.type in ("slot", "any") or self.schema_override is not None:
            return value
        where = f"{key}.{self.name}"
        if self.choices is not None:
            if value not in self.choices:
                raise MEIConfigError(f"{where}: must be {self._choices_text()}, got {value!r}")
            return value
        if self.type in ("integer", "number"):
            return self._number(value, where)
        expected = {"string": str, "boolean": bool, "mapping": Mapping}[self.type]
        if not isinstance(value, expected):
            raise MEIConfigError(f"{where}: must be a {self.type}, got {value!r}")
        return dict(value) if self.type == "mapping" else value

    def _number(self, value: Any, where: str) -> int | float:
        integer = self.type == "integer"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not math.isfinite(value):
            kind = "an integer" if integer else "a number"
            raise MEIConfigError(f"{where}: must be {kind}{' or null' if self.nullable else ''}, got {value!r}")
        if self.minimum is not None and (value <= self.minimum if self.exclusive else value < self.minimum):
            raise MEIConfigError(f"{where}: must be {'>' if self.exclusive else '>='} {self.minimum}, got {value!r}")
        return int(value) if integer else float(value)

    def _choices_text(self) -> str:
        if isinstance(self.choices, Mapping):
            named = [f"{c!r} ({meaning})" if meaning else repr(c) for c, meaning in self.choices.items()]
            return ", ".join(named[:-1]) + " or " + named[-1]
        return "one of " + ", ".join(map(str, self.choices or ()))

    def schema(self) -> dict[str, Any]:
        """The JSON-schema fragment of the option's value."""
        if self.schema_override is not None:
            schema = dict(self.schema_override)
        elif self.type == "slot":
            schema = dict(_SLOT_SCHEMA)
        elif self.choices is not None:
            schema = {"type": "string", "enum": list(self.choices)}
        else:
            schema = {"integer": {"type": "integer"}, "number": {"type": "number"}, "string": {"type": "string"},
                      "boolean": {"type": "boolean"}, "mapping": {"type": "object"}, "any": {}}[self.type]
            if self.minimum is not None:
                schema["exclusiveMinimum" if self.exclusive else "minimum"] = self.minimum
        if self.nullable and "type" in schema:
            schema["type"] = [schema["type"], "null"]
        if self.nullable and "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        if self.doc:
            schema["description"] = self.doc
        return schema

    def default_text(self) -> str:
        if self.default_doc is not None:
            return self.default_doc
        if self.required:
            return "required"
        if self.default is None:
            return "none"
        return f"`{str(self.default).lower() if isinstance(self.default, bool) else self.default}`"


def check_known(config: Mapping[str, Any], known: Sequence[str], key: str, what: str) -> None:
    """An unknown key of a method config is an error naming it and the known ones."""
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise MEIConfigError(f"{key}.{unknown[0]}: {what}: {', '.join(known)}")


def object_schema(options: Sequence[Option], additional: Mapping[str, Any] | bool) -> dict[str, Any]:
    """The JSON schema of a method config with these options."""
    return {"type": "object", "properties": {o.name: o.schema() for o in options}, "additionalProperties": additional}


def markdown_table(options: Sequence[Option], built_ins: Mapping[str, str] | None = None) -> str:
    """The options as a Markdown table; ``built_ins`` (family → text) adds each slot's built-ins."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for option in options:
        meaning = option.doc
        if isinstance(option.choices, Mapping) and any(option.choices.values()):
            meaning += " " + "; ".join(f"`{c}`: {m}" if m else f"`{c}`" for c, m in option.choices.items())
        elif option.choices is not None:
            meaning += " (" + " \\| ".join(f"`{c}`" for c in option.choices) + ")"
        listed = [f"{family}: {built_ins[family]}" for family in option.families if built_ins and built_ins.get(family)]
        if listed:
            meaning += " Built-ins: " + "; ".join(listed)
        lines.append(f"| `{option.name}` | {option.default_text()} | {meaning.strip()} |")
    return "\n".join(lines)


#: options whose meaning is the same for every method (gradient ascent and CMA-ES)
DIRECTION = Option("direction", "string", default="maximize", choices={"maximize": "", "minimize": "inhibitory MEIs"},
                   doc="what the method does to the objective.")
DEVICE = Option("device", "any", schema_override={"type": ["string", "null"]}, doc="ignored: the caller decides where to run.")

#: the gradient method's config (``mei_core.method.build_method``), sinzlab/mei's slot names
METHOD_OPTIONS: tuple[Option, ...] = (
    Option("initial", "slot", required=True, families=("InitialGuess",),
           doc="the initial guess, drawn in parameter space from the item's generator (the `n_meis` starts of an item in one draw). `FromArray`'s `array` is values or a `.npy` path; `WithAlphaChannel` appends a constant alpha channel (transparency MEIs)."),
    Option("optimizer", "slot", required=True,
           doc="any `torch.optim` class: `{path: torch.optim.SGD, kwargs: {lr: 0.5}}` (or `SGD`)."),
    Option("stopper", "slot", required=True, families=("Stopper",), doc="when an item stops."),
    Option("transform", "slot", families=("Transform", "Background"),
           doc="what the model sees: one spec or a list, applied in order. `AlphaBlend`'s `background` is a number, an array or `.npy` (constant) or a background component, drawn per row from the row's own random stream. `Jitter`'s `pad_mode`: `circular` \\| `reflect`; `AlphaBlend`'s `alpha`: `sigmoid` \\| `linear`."),
    Option("regularization", "slot", families=("Regularizer",), doc="penalties subtracted from the objective: one spec or a list."),
    Option("precondition", "slot", families=("Preconditioner",),
           doc="gradient preconditioners: one spec or a list. `decay: multiplicative` (default) is `value·decay_factor^i`; `decay: additive` is sinzlab/mei's `value + decay_factor·(i − 1)`; `decay: linear` is `value + decay_factor·i` (Walker et al.'s ramp); `decay_factor: null` keeps the value. `pad_mode`: `reflect` (torch's, about the edge pixel), `symmetric` (the edge pixel repeated: scipy.ndimage's `reflect`), `replicate`, `constant`, `circular`. `FourierSmoothing`'s `mask`: `inverse_power` \\| `linear_falloff` \\| `index_power` (Walker et al.'s frequency indices); `GaussianBlur`'s `precision`: `input` \\| `float64` (each axis pass in float64, scipy's arithmetic)."),
    Option("postprocessing", "slot", families=("Postprocessor",),
           doc="projections after every step (the contrast budget): one spec or a list. `ClipRange` takes numbers or one per channel; `GaussianBlurInput` the options of `GaussianBlur`; `TemporalGaussianLowPass`'s `padding`: `replicate` \\| `zeros` (openretina's); `FixRegion` optimises only the region (`centre` \\| `surround` \\| `ring`) of an earlier MEI's mask (ring and centre/surround MEIs); `ZeroOutsideMask` holds every row at zero outside a mask (openretina's; put it before the norm)."),
    Option("parameterisation", "slot", default_doc="`Pixels`", families=("Parameterisation",),
           doc="the optimised variable ≠ the stimulus: one spec or a list applied in order, e.g. `[Spectral, ColourDecorrelated, Sigmoid]`. The initial guess is drawn in parameter space; transforms, the objective and regularizers see the decoded stimulus, and the MEIs are decoded stimuli; preconditioners and postprocessors act on the variable (so with `Spectral`, bound the stimulus with a regularizer such as `LpNorm` or a `Sigmoid`/`Tanh` instead of `ChangeNorm`). `Spectral`: lucent's rFFT coefficients scaled by 1/f^decay_power (`max_frequency` truncates); `ColourDecorrelated`: lucent's ImageNet colour matrix by default; `LinearBasis`: e.g. from `mei_core.parameterisations.pca_basis`; `Decoder`: any callable by import path."),
    Option("trackers", "slot", families=("Tracker",),
           doc="trackers by name (sinzlab's name for the slot: `objectives`); scalar ones land in `traces.parquet`, `PenaltyObjective` tracks the regularisation, `ObjectiveTerm` a named term (e.g. `target_loss`, `activation_penalty`); `InputObjective` and `PostProcessedInputObjective` (input snapshots before / after each step) are for the Python API."),
    Option("project_initial", "any", default=False,
           schema_override={"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/component"}, {"type": "array", "items": {"$ref": "#/$defs/component"}}]},
           doc="project the initial guess before the first step: `true` applies the `postprocessing` chain to it (openretina's CLI starts from `norm/clip(0.1·randn)`, the MDS code from its postprocessed draw); a postprocessor spec or list applies those instead (e.g. only the norm and clip of a chain that also low-passes). They see the step of iteration 0. `false`: start from the raw draw."),
    Option("fixed_channels", "any", default_doc="none",
           schema_override={"type": ["object", "null"], "required": ["channels"], "additionalProperties": False, "properties": {
               "channels": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
               "values": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "array"}]}}},
           doc="optimise only some channels of images or videos (e.g. UV with green held): `{channels: [0], values: mean}` holds channel 0 at `values` in every MEI, bitwise, and optimises the others. `values`: `mean` (the default: the mean of the `ChangeNormAroundMean` budget, i.e. `input_stats.mean` in the presets), a number, one number per fixed channel, or an array or `.npy` path (an earlier stimulus `C×…` or `1×C×…`, or the fixed channels alone). The contrast budget spends its `norm` on the optimised channels alone: in the optimised variable the fixed channels sit at the budget's mean with zero gradient, so postprocessors see no contrast there and preconditioners a zero gradient (`DivideByMeanOfAbsolute`'s mean counts it: steps C/C_optimised times larger); the model, the regularizers and the stored MEI see `values`. With a `parameterisation`, the fixed channels are written over its decoded stimulus; not with `AlphaBlend`."),
    Option("n_meis", "integer", default=1, minimum=1,
           doc="diverse MEIs per neuron and seed (add `Similarity` to push them apart); adds a `mei_index` dim to the Zarr store (named like the `mei_index` column of `scores.parquet`; a dim cannot share the name of the `mei` array)."),
    DIRECTION,
    Option("regularize", "string", default="input", choices=("input", "transformed"),
           doc="what regularizers see: the optimised input, or (`transformed`) what the model sees (sinzlab/mei's convention)."),
    Option("model_forward_kwargs", "mapping", default={},
           doc="keyword arguments the objective passes to every model call, beside a row's `data_key` (unit, video and sinzlab-style model objectives; a `data_key` here that contradicts the row's is an error); held-out members are called with them too."),
    Option("precision", "string", default="float32", choices=("float32", "tf32", "bf16"),
           doc="the model forward's arithmetic: `float32` (TF32 off), `tf32` (TF32 matmuls and convolutions on CUDA; as `float32` on the CPU), `bf16` (`torch.autocast` to bfloat16, CUDA and CPU). The input, its update and the final scores stay float32. On the ground-truth population, bf16 changes the median filter correlation by < 0.001 (benchmarks/README.md)."),
    Option("stop_check_every", "integer", minimum=1, default_doc="1 on the CPU, 10 on a GPU",
           doc="steps between the host syncs that drop stopped items from the batch and end the loop when all have stopped; between checks stopped items stay in the batch, frozen, so results do not depend on it. Trackers' steps are checks too."),
    Option("max_batch", "integer", minimum=1,
           doc="most rows per forward pass (as `ensembles.<name>.max_batch`, which the pipeline sets; the smaller wins); results do not change."),
    DEVICE,
)

#: sinzlab/mei's name for a slot → ours
SLOT_ALIASES = {"objectives": "trackers"}


def method_schema() -> dict[str, Any]:
    """The JSON schema of a gradient method's config (``$defs.gradient_method_config`` of the
    pipeline's config schema). Other keys fall to the component-slot schema: the method's own check
    names them as unknown slots."""
    return object_schema(METHOD_OPTIONS, _SLOT_SCHEMA)
