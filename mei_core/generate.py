"""The jobs of one shard: optimise its items in a single batch (``generate_shard``), and score the
result with the held-out ensemble (``score_heldout``, its own rule, so a change of held-out members
never reruns generation)."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import import_object
from .engine import BatchResult, step_callback
from .ensembles import load_ensemble
from .files import read_json
from .objectives.kinds import as_table, build_objective
from .shards import read_shard, write_heldout, write_shard

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config device is 'cuda' but this job sees no CUDA device (check the GPU request of generate_meis)")
    return torch.device(device)


def with_max_batch(config: dict, max_batch: int | None) -> dict:
    """The method config with the ensemble's ``max_batch`` (the smaller one when both set it): rows per
    forward pass are a property of the model and the GPU, not of the method, and change no result."""
    if max_batch is None:
        return config
    return {**config, "max_batch": min(int(max_batch), config.get("max_batch") or int(max_batch))}


def generate_shard(
    manifest_path: str,
    method_path: str,
    shard_spec_path: str,
    seed: int,
    out_path: str,
    device: str = "auto",
    threads: int = 1,
    command_started: float | None = None,
) -> Path:
    """Optimise the shard's items and write its shard file atomically. ``command_started``: when the
    job's command started (``time.time()``), to log the start-up it paid before the first step."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    manifest, method, shard = read_json(manifest_path), read_json(method_path), read_json(shard_spec_path)
    # the shard's spec holds its slice of the objective table: its content alone decides reruns
    rows = as_table(shard["rows"])
    target = resolve_device(device)
    model = load_ensemble(manifest).to(target)
    objective = build_objective(model, rows)
    method_fn = import_object(method["method_fn"], f"methods.{method['name']}.method_fn")
    config = with_max_batch(method["config"], manifest.get("max_batch"))

    bar = tqdm(desc=f"{manifest['name']}/{method['name']}/seed{seed}/shard{shard['index']}", unit="step", mininterval=2.0)
    def progress(state) -> None:
        if state.i_iter:
            bar.update(1)
        elif command_started is not None:
            log.info("start-up %.2f s (from the command start until its first optimisation step is done)", time.time() - command_started)

    token = step_callback.set(progress)
    try:
        result: BatchResult = method_fn(objective, config, [seed] * len(rows), tuple(manifest["input_shape"]), target)
    finally:
        step_callback.reset(token)
        bar.close()

    runtime = time.perf_counter() - started
    write_shard(out_path, rows, result, {
        "ensemble": manifest["name"], "method": method["name"], "method_hash": method["method_hash"],
        "seed": int(seed), "shard": int(shard["index"]), "host": platform.node(), "runtime_s": runtime,
        "torch": torch.__version__, "ensemble_hash": manifest["ensemble_hash"],
    })
    log.info("wrote %s: %d items in %.1f s", out_path, len(rows), runtime)
    return Path(out_path)


def score_heldout(manifest_path: str, shard_spec_path: str, shard_path: str, out_path: str, device: str = "auto", threads: int = 1) -> np.ndarray:
    """The same objective evaluated by the held-out (validation) ensemble on each MEI of a shard, as
    the members' ensemble scored it (``scored_inputs``: e.g. a transparency MEI blended onto its
    evaluation background); NaN without held-out members."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    manifest, spec, shard = read_json(manifest_path), read_json(shard_spec_path), read_shard(shard_path)
    validation = load_ensemble(manifest)
    if validation is None:
        scores = np.full(len(shard), np.nan, dtype=np.float32)
    else:
        target = resolve_device(device)
        rows = as_table(spec["rows"])
        objective = build_objective(validation.to(target), rows).to(target)
        items = torch.arange(len(rows), device=target).repeat_interleave(shard.n_meis)
        meis = torch.from_numpy(shard.scored_inputs).to(target)  # what the members' objective scored
        size = int(manifest.get("max_batch") or len(meis)) // shard.n_meis * shard.n_meis or shard.n_meis
        with torch.no_grad():
            scores = torch.cat([objective(meis[i : i + size], items[i : i + size]) for i in range(0, len(meis), size)]).cpu().numpy()
    write_heldout(out_path, scores, {"ensemble_hash": manifest["ensemble_hash"]})
    log.info("wrote %s: %d MEIs scored in %.1f s", out_path, len(scores), time.perf_counter() - started)
    return scores
