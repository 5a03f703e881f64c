"""One pipeline job: optimise every (neuron, seed) item of one shard in a single batch."""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .config import import_object
from .engine import BatchResult, step_callback
from .ensembles import load_ensemble
from .files import atomic_path, read_json
from .objective_table import COLUMNS, build_objective
from .trackers import PostProcessedInputObjective

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device is 'cuda' but this job sees no CUDA device (check the GPU request of generate_meis)")
    return torch.device(device)


def generate_shard(
    manifest_path: str,
    method_path: str,
    shard_spec_path: str,
    seed: int,
    out_path: str,
    device: str = "auto",
    threads: int = 1,
) -> Path:
    """Optimise the shard's items and write one ``.npz`` atomically (see :func:`write_shard`)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    manifest, method, shard = read_json(manifest_path), read_json(method_path), read_json(shard_spec_path)
    # the shard's spec holds its slice of the objective table: its content alone decides reruns
    rows = pd.DataFrame(shard["rows"], columns=COLUMNS)
    target = resolve_device(device)
    model = load_ensemble(manifest, "members").to(target)
    n_meis = int(method["config"].get("n_meis", 1))
    objective = build_objective(model, rows, n_meis)
    method_fn = import_object(method["method_fn"], f"methods.{method['name']}.method_fn")
    shape = tuple(manifest["input_shape"])

    bar = tqdm(desc=f"{manifest['name']}/{method['name']}/seed{seed}/shard{shard['index']}", unit="step", mininterval=2.0)
    token = step_callback.set(lambda state: bar.update(1) if state.i_iter else None)
    try:
        result: BatchResult = method_fn(objective, method["config"], [seed] * len(rows), shape, target)
    finally:
        step_callback.reset(token)
        bar.close()

    heldout = heldout_scores(manifest, rows, result, target)
    runtime = time.perf_counter() - started
    write_shard(out_path, manifest, method, shard, seed, rows, result, heldout, runtime)
    log.info("wrote %s: %d items in %.1f s", out_path, len(rows), runtime)
    return Path(out_path)


def heldout_scores(manifest: dict, rows: pd.DataFrame, result: BatchResult, device: torch.device) -> np.ndarray:
    """The same objective evaluated with the held-out (validation) ensemble on each MEI; NaN without one."""
    validation = load_ensemble(manifest, "validation_members")
    if validation is None:
        return np.full(len(result.meis), np.nan, dtype=np.float32)
    n_meis = len(result.meis) // max(len(rows), 1)
    objective = build_objective(validation.to(device), rows, n_meis).to(device)
    with torch.no_grad():
        values = objective(result.meis.to(device), torch.arange(len(result.meis), device=device))
    return values.cpu().numpy().astype(np.float32)


def write_shard(out_path, manifest, method, shard, seed, rows, result: BatchResult, heldout, runtime) -> None:
    n_rows = len(result.meis)
    n_meis = n_rows // max(len(rows), 1)
    item = result.row_items.numpy()
    trace_steps, trace_rows, trace_names, trace_values = [], [], [], []
    for name, tracker in result.traces.items():
        if isinstance(tracker, PostProcessedInputObjective):
            continue  # snapshots of whole inputs do not belong in a long table
        for step, values in zip(tracker.steps, tracker.values):
            flat = values.reshape(len(values), -1)
            if flat.shape[1] != 1:
                continue
            trace_steps.append(np.full(len(values), step, dtype=np.int32))
            trace_rows.append(np.arange(len(values), dtype=np.int32))
            trace_names.append(np.full(len(values), name, dtype=object))
            trace_values.append(flat[:, 0].numpy().astype(np.float32))
    metadata = {
        "ensemble": manifest["name"],
        "method": method["name"],
        "method_hash": method["method_hash"],
        "seed": int(seed),
        "shard": int(shard["index"]),
        "n_meis": n_meis,
        "device": str(result.device),
        "host": platform.node(),
        "runtime_s": runtime,
        "torch": torch.__version__,
        "ensemble_sha256": [m["sha256"] for m in manifest["members"]],
    }
    with atomic_path(out_path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                meis=result.meis.numpy().astype(np.float32),
                scores=result.scores.numpy().astype(np.float32),
                heldout_scores=np.asarray(heldout, dtype=np.float32),
                neuron_id=rows["neuron_id"].to_numpy(np.int64)[item],
                output_unit=rows["output_unit"].to_numpy(np.int64)[item],
                mei_index=np.tile(np.arange(n_meis), len(rows)),
                n_iterations=np.asarray(result.n_iterations, dtype=np.int32)[item],
                stop_reason=np.asarray(result.stop_reasons, dtype=str)[item],
                trace_step=np.concatenate(trace_steps) if trace_steps else np.zeros(0, np.int32),
                trace_row=np.concatenate(trace_rows) if trace_rows else np.zeros(0, np.int32),
                trace_name=np.concatenate(trace_names).astype(str) if trace_names else np.zeros(0, str),
                trace_value=np.concatenate(trace_values) if trace_values else np.zeros(0, np.float32),
                metadata=np.asarray(json.dumps(metadata)),
            )
