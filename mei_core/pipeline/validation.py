"""Validation of MEIs: held-out ensemble responses, the objective kind's own checks (e.g. achieved
vs target activations), and ground-truth metrics where the truth is known (``ground_truth``)."""

from __future__ import annotations


import pandas as pd
import xarray as xr

from .ground_truth import ground_truth_kind
from .ensembles import load_ensemble
from ..files import atomic_path, read_json
from ..objectives.kinds import ValidationContext, options_of, validate_items

ACTIVATION_COLUMNS = {"ensemble": "string", "method": "string", "seed": "int64", "item": "int64", "mei_index": "int64", "neuron": "int64", "layer": "int64", "group": "string", "activation": "float32"}
SCORE_COLUMNS = ["ensemble", "method", "seed", "neuron_id", "output_unit", "mei_index", "score", "heldout_score", "status", "quality_flags"]


def validate_ensemble(members_manifest_path: str, validation_manifest_path: str, zarr_path: str, scores_path: str,
                      table_path: str, out_path: str, activations_path: str, truth: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per MEI: its score and held-out score, the objective kind's columns and, with ground
    truth (``{kind, file}``: the ensemble's ``ground_truth``), how close the MEI is to the truth.
    Reads one (method, seed) slab of MEIs at a time."""
    manifests = {"members": read_json(members_manifest_path), "validation_members": read_json(validation_manifest_path)}
    table = pd.read_parquet(scores_path, columns=SCORE_COLUMNS)
    objectives = pd.read_parquet(table_path)
    meis = xr.open_zarr(zarr_path)
    if truth:
        table = ground_truth_kind(truth["kind"]).validate(truth["file"], meis, table, options_of(objectives))
    context = ValidationContext(manifest=manifests["members"], meis=meis, objectives=objectives, table=table,
                                load_ensemble=lambda group: load_ensemble(manifests[group]))
    table = validate_items(context)
    activations = context.extra_tables.get("activations", pd.DataFrame()).reindex(columns=list(ACTIVATION_COLUMNS))
    with atomic_path(out_path, suffix=".parquet") as temporary:
        table.to_parquet(temporary, index=False)
    with atomic_path(activations_path, suffix=".parquet") as temporary:
        activations.astype(ACTIVATION_COLUMNS).to_parquet(temporary, index=False)
    return table
