"""The shard file: what one ``generate_meis`` job wrote for one seed (one ``.npz`` per ensemble ×
method × seed × shard; a job writes one per seed), and the held-out score file that ``score_heldout``
writes beside it. This module alone writes and reads both formats.

Arrays of a shard file, one entry per row (``n_meis`` consecutive rows per item): ``meis``
(rows × input shape: a transparency MEI's image channels), ``scores``, ``neuron_id``, ``output_unit``,
``mei_index``, ``n_iterations``, ``stop_reason``; traces in long form (``trace_step``, ``trace_row``,
``trace_name``, ``trace_value``); ``metadata`` (JSON: ensemble, method, method_hash, seed, shard,
n_items, n_meis, device, host, runtime_s (this file's share of its job's runtime), seeds_in_batch,
torch, ensemble_hash, shard_key: what its content follows from, so a rerun keeps a file whose key is
current, and aggregation refuses a file in another slot's place; transparency; content_sha256: of
its arrays, so an edited or damaged file is refused by name). With ``input_stats``, per row the baselines of ``quality.baseline_responses``:
``mean_response``, ``noise_response`` and, with a stimulus sample, ``sample_best``. Only where they apply: ``opacity`` (rows × spatial dims: a transparency
MEI's opacity, 1 opaque, as its ``AlphaBlend`` reads the alpha channel) and ``scored_inputs`` (what
the objective scored when that is not ``meis``: the method transform's ``at_evaluation`` view, e.g. a
transparency MEI blended onto its evaluation background, or a centre crop; the held-out ensemble
scores the same inputs).

A held-out score file: ``heldout_scores`` and ``metadata`` (its ``heldout_key``, its own
``content_sha256``, and ``shard_sha256``: the content of the shard file whose MEIs it scored).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import MEIConfigError
from ..files import atomic_path
from ..hashing import canonical_json, sha256_text

if TYPE_CHECKING:
    from ..engine import BatchResult

# torch and the engine are imported by the writers alone: aggregation, table concatenation and the
# checksums read shard files with numpy, and do not pay torch's import (≈ 1.2 s a job)


class ShardFileError(MEIConfigError):
    """A shard or held-out score file that cannot be read; the message names it and says what to do."""


def shard_key(manifest: dict, method: dict, shard: dict, seed: int, device: str) -> str:
    """What a shard file's content follows from, i.e. the identity of its slot: the ensemble, the
    method, the shard's rows, the seed and the requested device. A file that records the same key is
    kept when its job reruns; aggregation refuses a file whose key is not its slot's."""
    return sha256_text(canonical_json({"ensemble_hash": manifest["ensemble_hash"], "method_hash": method["method_hash"],
                                       "shard": shard, "seed": int(seed), "device": device}))


def content_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of arrays by name, dtype, shape and bytes (what ``np.load`` gives back bit for bit)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(canonical_json([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(memoryview(array).cast("B"))  # the bytes, without a copy
    return digest.hexdigest()


@dataclass
class ShardData:
    metadata: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def n_meis(self) -> int:
        return int(self.metadata["n_meis"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __len__(self) -> int:
        return len(self.arrays["meis"])

    @property
    def scored_inputs(self) -> np.ndarray:
        """What the method's objective scored of each MEI (and the held-out ensemble scores too)."""
        return self.arrays.get("scored_inputs", self.arrays["meis"])


def _traces(result: BatchResult) -> dict[str, np.ndarray]:
    """Scalar trackers in long form (snapshots of whole inputs do not belong in a long table)."""
    from ..trackers import PostProcessedInputObjective

    steps, rows, names, values = [], [], [], []
    for name, tracker in result.traces.items():
        if isinstance(tracker, PostProcessedInputObjective):
            continue
        for step, recorded in zip(tracker.steps, tracker.values):
            flat = recorded.reshape(len(recorded), -1)
            if flat.shape[1] != 1:
                continue
            steps.append(np.full(len(recorded), step, dtype=np.int32))
            rows.append(np.arange(len(recorded), dtype=np.int32))
            names.append(np.full(len(recorded), name, dtype=object))
            values.append(flat[:, 0].numpy().astype(np.float32))
    return {
        "trace_step": np.concatenate(steps) if steps else np.zeros(0, np.int32),
        "trace_row": np.concatenate(rows) if rows else np.zeros(0, np.int32),
        "trace_name": np.concatenate(names).astype(str) if names else np.zeros(0, str),
        "trace_value": np.concatenate(values) if values else np.zeros(0, np.float32),
    }


def _stimulus_arrays(result: BatchResult) -> dict[str, np.ndarray]:
    """``meis`` as stored (a transparency MEI split into image channels and ``opacity``), and
    ``scored_inputs`` where the objective scored something else than the stored MEIs."""
    import torch

    from ..transforms import alpha_blend_of

    blend = alpha_blend_of(result.transform)
    meis = result.meis[:, :-1] if blend is not None else result.meis
    arrays = {"meis": meis.numpy().astype(np.float32)}
    if blend is not None:
        arrays["opacity"] = blend.opacity_of(result.meis).numpy().astype(np.float32)
    with torch.no_grad():
        scored = result.transform.at_evaluation(result.meis)
    if scored.shape != meis.shape or not torch.equal(scored, meis):
        arrays["scored_inputs"] = scored.numpy().astype(np.float32)
    return arrays


#: label-free baselines per row (``quality.baseline_responses``), stored where the model was loaded
QUALITY_ARRAYS = ("mean_response", "noise_response", "sample_best")


def write_shard(path: str | os.PathLike, rows: pd.DataFrame, result: BatchResult, metadata: dict[str, Any],
                quality: dict[str, np.ndarray] | None = None) -> None:
    """Write one shard atomically: the engine's result for the items of ``rows`` (one row per item),
    and the rows' ``quality`` baselines (``QUALITY_ARRAYS``; absent without ``input_stats``)."""
    item = result.row_items.numpy()
    stimulus = _stimulus_arrays(result)
    arrays = {
        **stimulus,
        "scores": result.scores.numpy().astype(np.float32),
        "neuron_id": rows["neuron_id"].to_numpy(np.int64)[item],
        "output_unit": rows["output_unit"].to_numpy(np.int64)[item],
        "mei_index": np.tile(np.arange(result.n_meis), len(rows)).astype(np.int32),
        "n_iterations": np.asarray(result.n_iterations, dtype=np.int32)[item],
        "stop_reason": np.asarray(result.stop_reasons, dtype=str)[item],
        **_traces(result),
        **{name: np.asarray(values, dtype=np.float32) for name, values in (quality or {}).items() if name in QUALITY_ARRAYS},
    }
    metadata = {**metadata, "n_items": len(rows), "n_meis": result.n_meis, "device": str(result.device), "transparency": "opacity" in stimulus,
                "content_sha256": content_sha256(arrays)}
    with atomic_path(path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, metadata=np.asarray(json.dumps(metadata)), **arrays)


def _unreadable(path: str | os.PathLike, error: Exception) -> ShardFileError:
    return ShardFileError(f"{path}: cannot read this file ({type(error).__name__}: {error}); delete it and rerun to make it again")


def _load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays of a shard or held-out file whose arrays match the content hash written
    with them (a file edited, damaged or written before content hashes is refused by name)."""
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files if name != "metadata"}
            metadata = json.loads(str(npz["metadata"]))
    except Exception as error:  # truncated, corrupt or foreign file
        raise _unreadable(path, error) from error
    recorded = metadata.get("content_sha256")
    if recorded is None:
        raise ShardFileError(f"{path}: written without a content hash (by an older version); delete it and rerun to make it again")
    if content_sha256(arrays) != recorded:
        raise ShardFileError(f"{path}: its arrays differ from the content hash written with them (edited or damaged since); delete it and rerun to make it again")
    return metadata, arrays


def read_shard(path: str | os.PathLike) -> ShardData:
    metadata, arrays = _load(path)
    missing = {"meis", "scores", "neuron_id", "mei_index"} - set(arrays)
    if missing:
        raise _unreadable(path, KeyError(f"no array(s) {sorted(missing)}"))
    return ShardData(metadata, arrays)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata alone (its arrays are not read, nor checked against its content hash)."""
    try:
        with np.load(path) as shard:
            return json.loads(str(shard["metadata"]))
    except Exception as error:
        raise _unreadable(path, error) from error


def content_of(path: str | os.PathLike) -> str:
    """The content hash of a shard or held-out file, once its arrays are checked against it."""
    return _load(path)[0]["content_sha256"]


def holds(path: str | os.PathLike, key_name: str, key: str) -> bool:
    """Whether a shard or held-out file exists, records ``key`` and has the arrays it was written with:
    such a file is kept when its job reruns; any other is written again."""
    try:
        return Path(path).exists() and _load(path)[0].get(key_name) == key
    except ShardFileError:
        return False


def write_heldout(path: str | os.PathLike, scores: np.ndarray, metadata: dict[str, Any]) -> None:
    """The held-out ensemble's objective on each row of a shard (NaN without held-out members)."""
    arrays = {"heldout_scores": np.asarray(scores, dtype=np.float32)}
    metadata = {**metadata, "content_sha256": content_sha256(arrays)}
    with atomic_path(path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, metadata=np.asarray(json.dumps(metadata)), **arrays)


def read_heldout(path: str | os.PathLike, shard: ShardData, shard_path: str | os.PathLike) -> np.ndarray:
    """The held-out scores of ``shard`` (read from ``shard_path``), refused unless the file was
    written for that shard file's content."""
    metadata, arrays = _load(path)
    if "heldout_scores" not in arrays:
        raise _unreadable(path, KeyError("no array 'heldout_scores'"))
    if metadata.get("shard_sha256") != shard.metadata["content_sha256"]:
        raise ShardFileError(f"{path}: holds the held-out scores of another shard file than {shard_path} (another slot's, or of an older "
                             f"version of it); delete it and rerun to make it again")
    return arrays["heldout_scores"]
