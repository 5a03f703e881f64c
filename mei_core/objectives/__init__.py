"""Objectives (what is optimised for every item) and the objective kinds of the pipeline config.

``base``: the :class:`Objective` interface (``objective(x, items) -> B``) and generic objectives;
``kinds``: the kind registry, objective tables and :func:`build_objective`; one module per kind
family: ``units``, ``video`` (openretina's objectives), ``targets`` (connectomes), ``custom``.
"""

from .base import ByDataKey, ModelObjective, Objective, PerItemObjective, UnitObjective, as_objective, reduce_to_rows
from .kinds import COLUMNS, ObjectiveKind, build_objective, get_kind, kind_names
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
    "ContrastiveNeuronObjective",
    "DecreaseObjective",
    "IncreaseObjective",
    "InnerNeuronObjective",
    "MeanReducer",
    "ModelObjective",
    "Objective",
    "ObjectiveKind",
    "PerItemObjective",
    "ResponseReducer",
    "SliceMeanReducer",
    "TargetActivationObjective",
    "UnitObjective",
    "as_objective",
    "build_objective",
    "get_kind",
    "kind_names",
    "reduce_to_rows",
]
