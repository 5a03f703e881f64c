"""Objectives (what is optimised for every item) and the objective kinds of the pipeline config.

``base``: the :class:`Objective` interface (``objective(x, items) -> B``), generic objectives and
lucent's algebra (``WeightedSum``, ``Product``); ``layers``: lucent's layer objectives on any layer;
``kinds``: the kind registry, objective tables and :func:`build_objective`; one module per kind
family: ``units``, ``layer_kinds`` (``layer``, ``combination``), ``video`` (openretina's objectives),
``targets`` (connectomes), ``custom``.
"""

from .base import ByDataKey, ModelObjective, Objective, PerItemObjective, Product, UnitObjective, WeightedSum, as_objective, reduce_to_rows
from .kinds import COLUMNS, ObjectiveKind, build_objective, get_kind, kind_names
from .layers import ChannelObjective, DirectionNeuronObjective, DirectionObjective, NeuronObjective
from .targets import TargetActivationObjective
from .video import (
    ContrastiveNeuronObjective,
    DecreaseObjective,
    IncreaseObjective,
    InnerNeuronObjective,
    MeanReducer,
    ResponseReducer,
    SliceMeanReducer,
)

__all__ = [
    "COLUMNS",
    "ByDataKey",
    "ChannelObjective",
    "ContrastiveNeuronObjective",
    "DecreaseObjective",
    "DirectionNeuronObjective",
    "DirectionObjective",
    "IncreaseObjective",
    "InnerNeuronObjective",
    "MeanReducer",
    "ModelObjective",
    "NeuronObjective",
    "Objective",
    "ObjectiveKind",
    "PerItemObjective",
    "Product",
    "ResponseReducer",
    "SliceMeanReducer",
    "TargetActivationObjective",
    "UnitObjective",
    "WeightedSum",
    "as_objective",
    "build_objective",
    "get_kind",
    "kind_names",
    "reduce_to_rows",
]
