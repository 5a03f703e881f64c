"""The jobs of one shard: optimise its items for every seed in a single batch (``generate_shard``),
and score the result with the held-out ensemble (``score_heldout``, its own rule, so a change of
held-out members never reruns generation).

One job covers a shard's rows × all seeds, so a run pays a job's start-up (and on a cluster its
Snakemake and its queueing) once per shard instead of once per shard and seed. Each seed still has
its own file, and a rerun keeps every file that already holds its result (``shard_key``): adding a
seed computes only that seed."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..config import import_object
from ..engine import BatchResult, step_callback
from ..items import ItemLayout, seed_major
from .ensembles import load_ensemble
from ..files import read_json
from ..hashing import canonical_json, sha256_file, sha256_text
from ..objectives.base import with_model_forward_kwargs
from ..objectives.kinds import as_table, build_objective
from .shards import holds, read_metadata, read_shard, shard_key, write_heldout, write_shard

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


def heldout_key(manifest: dict, shard_path: str, device: str) -> str:
    """What a held-out score file follows from: the held-out ensemble, the shard file it scores (by
    that file's ``content_sha256``, or its bytes for a file written before them) and the requested device."""
    shard = read_metadata(shard_path).get("content_sha256") or sha256_file(shard_path)
    return sha256_text(canonical_json({"ensemble_hash": manifest["ensemble_hash"], "shard": shard, "device": device}))


def _to_write(out_paths: Sequence[str], key_name: str, keys: Sequence[str]) -> list[int]:
    """Positions of the outputs to (re)write: missing, unreadable, or written for another key. The
    others are kept as they are (Snakemake's ``update`` outputs are not deleted before a rerun)."""
    todo = []
    for position, (path, key) in enumerate(zip(out_paths, keys)):
        if holds(path, key_name, key):
            log.info("kept %s: it holds the result of its current inputs", path)
        else:
            todo.append(position)
    return todo


def generate_shard(
    manifest_path: str,
    method_path: str,
    shard_spec_path: str,
    seeds: Sequence[int],
    out_paths: Sequence[str],
    device: str = "auto",
    threads: int = 1,
    command_started: float | None = None,
) -> list[Path]:
    """Optimise the shard's items for every seed in one batch and write one shard file per seed
    (``out_paths[k]`` for ``seeds[k]``), each atomically. A file that already holds this shard's
    result for its seed (its ``shard_key``) is kept, so a job that reruns because a seed was added
    computes only that seed. ``command_started``: when the job's command started (``time.time()``),
    to log the start-up it paid before the first step."""
    if len(seeds) != len(out_paths):
        raise ValueError(f"{len(seeds)} seeds but {len(out_paths)} output files")
    torch.set_num_threads(threads)
    started = time.perf_counter()
    manifest, method, shard = read_json(manifest_path), read_json(method_path), read_json(shard_spec_path)
    keys = [shard_key(manifest, method, shard, seed, device) for seed in seeds]
    todo = _to_write(out_paths, "shard_key", keys)
    if not todo:
        return [Path(out) for out in out_paths]

    # the shard's spec holds its slice of the objective table: its content alone decides reruns.
    # Every seed's copy of the rows is one item of the batch (seed-major): items never interact, so
    # each equals the MEI computed for that seed alone
    rows = as_table(shard["rows"])
    batch_rows = pd.concat([rows] * len(todo), ignore_index=True)
    batch_seeds = seed_major([seeds[k] for k in todo], len(rows))
    target = resolve_device(device)
    model = load_ensemble(manifest).to(target)
    objective = build_objective(model, batch_rows)
    method_fn = import_object(method["method_fn"], f"methods.{method['name']}.method_fn")
    config = with_max_batch(method["config"], manifest.get("max_batch"))

    seed_names = ",".join(str(seeds[k]) for k in todo)
    bar = tqdm(desc=f"{manifest['name']}/{method['name']}/shard{shard['index']}/seeds {seed_names}", unit="step", mininterval=2.0)
    def progress(state) -> None:
        if state.i_iter:
            bar.update(1)
        elif command_started is not None:
            log.info("start-up %.2f s (from the command start until its first optimisation step is done)", time.time() - command_started)

    token = step_callback.set(progress)
    try:
        result: BatchResult = method_fn(objective, config, batch_seeds, tuple(manifest["input_shape"]), target)
    finally:
        step_callback.reset(token)
        bar.close()

    # the baselines call the members as the method did (its model_forward_kwargs: the one door)
    quality = baseline_of(with_model_forward_kwargs(objective, config), result, manifest, config.get("max_batch"), target)
    rows_per_seed = len(rows) * result.n_meis  # the result's rows: seed-major, n_meis rows per item
    runtime = time.perf_counter() - started
    for position, k in enumerate(todo):
        own_rows = slice(position * rows_per_seed, (position + 1) * rows_per_seed)
        write_shard(out_paths[k], rows, result.items(position * len(rows), (position + 1) * len(rows)), {
            "ensemble": manifest["name"], "method": method["name"], "method_hash": method["method_hash"],
            "seed": int(seeds[k]), "shard": int(shard["index"]), "host": platform.node(),
            "runtime_s": runtime / len(todo), "seeds_in_batch": len(todo),  # runtime_s: this file's share of the job
            "torch": torch.__version__, "ensemble_hash": manifest["ensemble_hash"],
            "shard_key": keys[k],
            # what every model call got besides the input (held-out scoring calls its members the same way)
            "model_forward_kwargs": config.get("model_forward_kwargs") or {},
        }, {name: values[own_rows] for name, values in quality.items()})
    log.info("wrote %d shard file(s) (seeds %s): %d items in %.1f s", len(todo), seed_names, len(batch_rows), runtime)
    return [Path(out) for out in out_paths]


def baseline_of(objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], result: BatchResult, manifest: dict,
                max_batch: int | None, device: torch.device) -> dict[str, np.ndarray]:
    """Per row of ``result``, the label-free baselines of ``quality.baseline_responses`` (the response
    to the mean stimulus and to noise drawn from ``input_stats``; with ``input_stats.from``, the best
    response over the sample at the MEI's contrast), evaluated by the members' objective in chunks of
    ``max_batch`` rows. Empty without ``input_stats`` (e.g. connectome inputs)."""
    from . import quality

    stats = manifest.get("input_stats")
    if not stats or len(manifest["input_shape"]) not in (3, 4):
        return {}
    plain = {k: stats[k] for k in ("mean", "std", "range") if k in stats}
    shape = list(manifest["input_shape"])
    with torch.no_grad():
        scored = result.transform.at_evaluation(result.meis.to(device))
    mean = quality.mean_stimulus(shape, plain).to(scored)
    contrast = (scored - mean).flatten(1).norm(dim=1).cpu().numpy()
    sample = quality.sample_rows(stats["from"]) if stats.get("from") else None
    return quality.baseline_responses(objective, result.row_items.numpy(), shape, plain, device, contrast, max_batch, sample)


def score_heldout(manifest_path: str, shard_spec_path: str, shard_paths: Sequence[str], out_paths: Sequence[str], device: str = "auto", threads: int = 1) -> list[np.ndarray]:
    """The same objective evaluated by the held-out (validation) ensemble on each MEI of the shard
    files of one shard (one per seed), as the members' ensemble scored it (``scored_inputs``: e.g. a
    transparency MEI blended onto its evaluation background) with the keywords its model calls got
    (the method's ``model_forward_kwargs``, recorded in the shard file); NaN without held-out
    members. A score file that already holds the scores of its shard file's content (same key) is kept."""
    if len(shard_paths) != len(out_paths):
        raise ValueError(f"{len(shard_paths)} shard files but {len(out_paths)} output files")
    started = time.perf_counter()
    torch.set_num_threads(threads)
    manifest, spec = read_json(manifest_path), read_json(shard_spec_path)
    keys = [heldout_key(manifest, path, device) for path in shard_paths]
    todo = _to_write(out_paths, "heldout_key", keys)
    if not todo:
        return []
    validation = load_ensemble(manifest)
    target = resolve_device(device)
    objective = None if validation is None else build_objective(validation.to(target), as_table(spec["rows"])).to(target)
    written = []
    for k in todo:
        shard = read_shard(shard_paths[k])
        if objective is None:
            scores = np.full(len(shard), np.nan, dtype=np.float32)
        else:
            # the model call the members' objective made: the same door for the method's keywords
            scored_by = with_model_forward_kwargs(objective, shard.metadata, shard_paths[k])
            layout = ItemLayout(len(spec["rows"]), shard.n_meis, target)
            meis = torch.from_numpy(shard.scored_inputs).to(target)  # what the members' objective scored
            scores = layout.score(scored_by, meis, manifest.get("max_batch")).cpu().numpy()
        write_heldout(out_paths[k], scores, {"ensemble_hash": manifest["ensemble_hash"], "heldout_key": keys[k],
                                             "shard_sha256": shard.metadata["content_sha256"]})
        written.append(scores)
    log.info("wrote %d held-out score file(s) in %.1f s", len(todo), time.perf_counter() - started)
    return written
