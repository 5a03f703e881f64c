"""Whether an MEI, or the stimulus statistics it was made with, can be trusted: one home for the rules.

Three parts, each used where its data is (evidence for every threshold: ``config/README.md``,
"Stimulus statistics and quality flags", measured by ``benchmarks/quality_flags.py``):

* ``input_stats`` from a sample of the training stimuli (``sample_stats``: ``.npy``/``.npz``/Zarr,
  ``N×C×H×W`` images or ``N×C×T×H×W`` videos), and the plausibility check of stated statistics against
  a model (``stats_check``): the first batch-norm layer's running statistics, where the model has one,
  compared with what stimuli drawn from the stated statistics give there (refused when implausible);
  without one, for rate models, the spread of the responses to such stimuli relative to the response
  to their mean (a warning only). Run at plan time for members whose files exist, else at their
  assembly: before any generation job either way.
* per MEI, label-free (``baseline_responses`` in the generate job, where the model is loaded;
  ``clip_fraction`` and ``seed_agreement`` at aggregation, where every seed is present): the response
  to the mean stimulus and to noise drawn from ``input_stats``, ``gain`` = score ÷ noise response, the
  share of pixels at the clip bounds, the agreement with the same neuron's MEIs of other seeds and,
  with a stimulus sample, the best response over the sample at the MEI's contrast.
* ``quality_flags``: the flag names each MEI earns (``FLAG_RULES``); a flagged MEI's status is ``suspect``.

Noise "drawn from input_stats" is 1/f (pink) noise per channel and frame with the stated mean and std,
clipped to the stated range: natural stimuli have roughly 1/f spectra, so the first layer sees about
the contrast structure it saw in training (batch-norm std ratios 0.998–1.002 at the right statistics).

This module imports numpy only; the functions that evaluate models import torch when called.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MEIConfigError

# --------------------------------------------------------------------------- constants (the rules)

#: noise images per row for the baseline response (the mean over them)
NOISE_DRAWS = 16
#: stimuli of the sample each row is compared with (evenly spaced through the file)
SAMPLE_DRAWS = 64
#: seed of the baseline noise: the same draws for every row and seed, so baselines compare across seeds
NOISE_SEED = 12345
#: stimuli drawn for the plausibility check of ``input_stats``
CHECK_DRAWS = 64
#: the stated statistics are implausible when stimuli drawn from them reach the first batch norm with
#: a std outside [1/BN_STD_FACTOR, BN_STD_FACTOR] × its running std, or a mean more than BN_MEAN_STDS
#: running stds from its running mean (medians over channels)
BN_STD_FACTOR = 3.0
BN_MEAN_STDS = 4.0
#: without a batch norm, for models whose responses are rates (never negative): the statistics are
#: doubtful when the response spread over stimuli drawn from them ÷ the response to their mean stimulus
#: (median over neurons) lies outside this interval (a warning only: it assumes rate outputs)
RESPONSE_CV_RANGE = (0.5, 6.0)
#: gain (score ÷ noise response) below which an MEI is flagged ``low_gain``
GAIN_MIN = 1.3
#: share of pixels at the clip bounds above which an MEI is flagged ``at_clip``
CLIP_SHARE_MAX = 0.5
#: a pixel within this fraction of the clip interval of a bound counts as at the bound
CLIP_TOLERANCE = 1e-3
#: score ÷ best sample response at the MEI's contrast below which an MEI is flagged ``below_sample``
SAMPLE_RATIO_MIN = 1.0
#: agreement with the other seeds' MEIs below which an MEI is flagged ``seeds_disagree``
AGREEMENT_MIN = 0.3

#: what ``input_stats`` may say besides the statistics themselves
CHECK_MODES = ("refuse", "warn", "off")


# --------------------------------------------------------------------------- input_stats from a sample


def read_sample(path: str | Path, key: str) -> np.ndarray:
    """The stimulus sample of ``input_stats.from`` as an array (memory-mapped for ``.npy``, a lazy Zarr
    array for a Zarr store): ``.npy``; ``.npz`` with one array (or one named ``stimuli``/``images``);
    or a Zarr array (a store holding one array). Errors name ``key`` and the file."""
    path = Path(path)
    if not path.exists():
        raise MEIConfigError(f"{key}: file {str(path)!r} not found (resolved to {str(path.resolve())!r})")
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                names = [n for n in ("stimuli", "images", "videos") if n in data.files] or data.files
                if len(names) != 1:
                    raise MEIConfigError(f"{key}: {str(path)!r} holds arrays {data.files}; name the stimuli 'stimuli' or save one array")
                return np.asarray(data[names[0]])
        import zarr

        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            arrays = list(node.array_keys())
            if len(arrays) != 1:
                raise MEIConfigError(f"{key}: Zarr group {str(path)!r} holds arrays {arrays}; give the path of one array")
            node = node[arrays[0]]
        return node
    except MEIConfigError:
        raise
    except Exception as error:
        raise MEIConfigError(f"{key}: cannot read {str(path)!r} as .npy, .npz or Zarr: {type(error).__name__}: {error}") from error


def sample_stats(path: str | Path, input_shape: Sequence[int], key: str, chunk: int = 256) -> dict[str, Any]:
    """``{mean, std, range}`` per channel of a stimulus sample ``N×C×H×W`` (or ``N×C×T×H×W``), read
    ``chunk`` stimuli at a time (float64 sums: exact enough for any file size). Refuses a sample whose
    stimuli are not ``input_shape``, that has fewer than 2 stimuli, or non-finite values."""
    sample = read_sample(path, key)
    if tuple(sample.shape[1:]) != tuple(input_shape):
        raise MEIConfigError(f"{key}: {str(path)!r} has shape {list(sample.shape)}; expected [N, {', '.join(map(str, input_shape))}] "
                             f"(N stimuli of the ensemble's input_shape)")
    if sample.shape[0] < 2:
        raise MEIConfigError(f"{key}: {str(path)!r} holds {sample.shape[0]} stimulus; a sample needs at least 2")
    channels = int(input_shape[0])
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    low, high = np.full(channels, np.inf), np.full(channels, -np.inf)
    for start in range(0, sample.shape[0], chunk):
        block = np.asarray(sample[start : start + chunk], dtype=np.float64)
        if not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
            raise MEIConfigError(f"{key}: {str(path)!r} has non-finite values (first in stimulus {bad})")
        per_channel = np.moveaxis(block, 1, 0).reshape(channels, -1)
        total += per_channel.sum(1)
        squares += np.square(per_channel).sum(1)
        count += per_channel.shape[1]
        low, high = np.minimum(low, per_channel.min(1)), np.maximum(high, per_channel.max(1))
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    if not (std > 0).all():
        raise MEIConfigError(f"{key}: {str(path)!r} is constant in channel {int(np.argmin(std))}: no contrast to take a std from")
    same = channels == 1 or (np.allclose(low, low[0]) and np.allclose(high, high[0]))
    value_range = [float(low[0]), float(high[0])] if same else [[float(a), float(b)] for a, b in zip(low, high)]
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "range": value_range}


def resolve_input_stats(input_stats: Mapping[str, Any], input_shape: Sequence[int], base: Path, key: str,
                        known: Mapping[str, Any] | None = None, kept: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The statistics a run uses (``{mean, std[, range]}``, what presets read) and what the manifest
    records about them (the statistics, their ``from`` file with its sha256, the ``check`` mode).

    ``input_stats`` is ``{mean, std[, range]}`` typed by hand or ``{from: FILE}`` (computed from the
    sample); either may add ``check: refuse|warn|off`` (default refuse). The statistics of a file are
    looked up in ``known`` (the plan's probe cache) by its size and modification time and kept in
    ``kept``, so a plan reads a file once."""
    from ..hashing import sha256_file

    if not isinstance(input_stats, Mapping):
        raise MEIConfigError(f"{key}: expected {{mean, std[, range]}} or {{from: FILE}}, got {input_stats!r}")
    mode = input_stats.get("check", "refuse")
    if mode not in CHECK_MODES:
        raise MEIConfigError(f"{key}.check: expected one of {', '.join(CHECK_MODES)}, got {mode!r}")
    stated = {k: v for k, v in input_stats.items() if k != "check"}
    record: dict[str, Any] = {"check": mode}
    if "from" in stated:
        extra = sorted(set(stated) - {"from"})
        if extra:
            raise MEIConfigError(f"{key}.{extra[0]}: give either 'from' (a stimulus sample) or the statistics, not both")
        file = stated["from"]
        if not isinstance(file, str):
            raise MEIConfigError(f"{key}.from: expected a file path, got {file!r}")
        path = base / file
        if not path.exists():
            raise MEIConfigError(f"{key}.from: file {file!r} not found (resolved to {str(path.resolve())!r})")
        status = path.stat()
        fingerprint = f"input_stats:{path.resolve()}:{status.st_size}:{status.st_mtime_ns}:{list(input_shape)}"
        cached = (known or {}).get(fingerprint)
        if not isinstance(cached, dict):
            cached = {"stats": sample_stats(path, input_shape, f"{key}.from"), "sha256": sha256_file(path) if path.is_file() else _tree_sha256(path),
                      "n_stimuli": int(read_sample(path, f"{key}.from").shape[0])}
        if kept is not None:
            kept[fingerprint] = cached
        stated = cached["stats"]
        record |= {"from": file, "sha256": cached["sha256"], "n_stimuli": cached["n_stimuli"]}
    record |= {k: stated[k] for k in ("mean", "std", "range") if k in stated}
    return stated, record


def _tree_sha256(folder: Path) -> str:
    """A Zarr store's identity: its files' relative names and contents."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- stimuli drawn from input_stats


def _per_channel(stats: Mapping[str, Any], n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from ..presets import check_input_stats

    checked = check_input_stats(stats, n_channels)
    value_range = None if checked["range"] is None else np.asarray(checked["range"], dtype=np.float64)
    return np.asarray(checked["mean"]), np.asarray(checked["std"]), value_range


def pink_noise(n: int, input_shape: Sequence[int], stats: Mapping[str, Any], seed: int = NOISE_SEED, scale: float = 1.0, shift: float = 0.0) -> Any:
    """``n`` stimuli ``n×C×H×W`` (or ``n×C×T×H×W``) of 1/f noise, each channel and frame standardised
    and set to ``mean + shift·std`` and ``scale·std`` of ``stats``, clipped to its range (torch, float32).
    Drawn from a generator seeded by ``seed``: the same draws wherever they are made."""
    import torch

    shape = tuple(int(v) for v in input_shape)
    generator = torch.Generator().manual_seed(int(seed))
    white = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    height, width = shape[-2:]
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    amplitude = 1.0 / torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / max(height, width))
    amplitude[0, 0] = 0.0  # no DC: the mean is set below
    noise = torch.fft.irfft2(torch.fft.rfft2(white) * amplitude, s=(height, width))
    flat = noise.flatten(-2)
    noise = ((flat - flat.mean(-1, keepdim=True)) / flat.std(-1, keepdim=True).clamp_min(1e-12)).reshape(noise.shape)
    mean, std, value_range = _per_channel(stats, shape[0])
    view = (1, -1) + (1,) * (len(shape) - 1)
    stimuli = torch.as_tensor(mean + shift * std).view(view) + scale * torch.as_tensor(std).view(view) * noise
    if value_range is not None:
        stimuli = torch.maximum(torch.minimum(stimuli, torch.as_tensor(value_range[:, 1]).view(view)), torch.as_tensor(value_range[:, 0]).view(view))
    return stimuli.float()


def mean_stimulus(input_shape: Sequence[int], stats: Mapping[str, Any]) -> Any:
    """The stimulus ``1×C×…`` that is the stated mean everywhere (torch, float32)."""
    import torch

    mean, _, _ = _per_channel(stats, int(input_shape[0]))
    view = (1, -1) + (1,) * (len(input_shape) - 1)
    return torch.as_tensor(mean, dtype=torch.float32).view(view).expand(1, *input_shape).contiguous()


# --------------------------------------------------------------------------- the plausibility check of input_stats


@dataclass
class StatsVerdict:
    """What the check found for one member: the first batch norm's statistics under the stated stimulus
    statistics (NaN without a batch norm), or without one the response spread ÷ response at the mean
    (NaN when the model's responses are not rates), and the reason the stats are implausible (``None``:
    plausible or not decidable); ``decisive``: a batch-norm finding (refused), else a warning only."""

    bn_layer: str | None
    bn_std_ratio: float
    bn_mean_offset: float
    problem: str | None
    response_cv: float = math.nan
    decisive: bool = True


def response_cv(forward: Callable[[Any], Any], input_shape: Sequence[int], stats: Mapping[str, Any], stimuli: Any) -> float:
    """Median over output units of (std of the responses to ``stimuli``) ÷ (response to the mean
    stimulus); NaN when any response is negative (not a rate: the ratio means nothing). Inputs
    ``B×C×…``; the model's outputs are flattened to units per stimulus."""
    import torch

    with torch.no_grad():
        responses = forward(stimuli).flatten(1).double()
        at_mean = forward(mean_stimulus(input_shape, stats)).flatten(1).double()[0]
    if (responses < 0).any() or (at_mean < 0).any():
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (responses.std(0) / at_mean).numpy()
    return float(np.median(np.where(np.isnan(ratio), 0.0, ratio)))


def first_batchnorm(model: Any) -> tuple[str, Any] | None:
    """The first batch-norm module (in registration order, which ``nn.Sequential`` cores follow) that
    keeps running statistics: its input is what the first layer makes of the training stimuli."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats and module.running_var is not None:
            return name, module
    return None


def bn_statistics(model: Any, stimuli: Any, forward: Callable[[Any], Any]) -> tuple[str, float, float] | None:
    """``(layer, std ratio, mean offset)``: medians over channels of the first batch norm's input std
    ÷ its running std, and of |input mean − running mean| ÷ running std, for ``stimuli``. ``None``
    without a batch norm."""
    import torch

    found = first_batchnorm(model)
    if found is None:
        return None
    name, module = found
    seen: dict[str, Any] = {}

    def hook(_module: Any, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach().double()
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        seen["mean"], seen["std"] = per_channel.mean(1), per_channel.std(1)

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            forward(stimuli)
    finally:
        handle.remove()
    if "mean" not in seen:
        return None
    running_std = (module.running_var.double() + module.eps).sqrt()
    ratio = float((seen["std"] / running_std).median())
    offset = float(((seen["mean"] - module.running_mean.double()).abs() / running_std).median())
    return name, ratio, offset


def stats_check(model: Any, input_shape: Sequence[int], stats: Mapping[str, Any], forward: Callable[[Any], Any] | None = None) -> StatsVerdict:
    """Judge stated ``stats`` against one member (the rule: ``BN_STD_FACTOR``, ``BN_MEAN_STDS``)."""
    forward = forward or model
    stimuli = pink_noise(CHECK_DRAWS, input_shape, stats, seed=NOISE_SEED)
    found = bn_statistics(model, stimuli, forward)
    if found is None:
        cv = response_cv(forward, input_shape, stats, stimuli)
        low, high = RESPONSE_CV_RANGE
        problem = None
        if cv == math.inf or (math.isfinite(cv) and not low <= cv <= high):
            problem = (f"the model has no batch norm to compare with; its responses to stimuli of these statistics spread {cv:.3g}× its "
                       f"response to their mean (at training statistics {low:g}–{high:g}× for rate models; too low: contrast too small, too high: too large)")
        return StatsVerdict(None, math.nan, math.nan, problem, cv, decisive=False)
    layer, ratio, offset = found
    problem = None
    if not (1 / BN_STD_FACTOR <= ratio <= BN_STD_FACTOR):
        problem = (f"stimuli of these statistics reach the model's first batch norm ({layer}) with {ratio:.3g}× the std it saw in "
                   f"training (plausible: {1 / BN_STD_FACTOR:.2g}–{BN_STD_FACTOR:.2g}×)")
    elif offset > BN_MEAN_STDS:
        problem = (f"stimuli of these statistics reach the model's first batch norm ({layer}) {offset:.3g} running stds from the "
                   f"mean it saw in training (plausible: ≤ {BN_MEAN_STDS:g})")
    return StatsVerdict(layer, ratio, offset, problem)


def judge_stats(verdicts: Sequence[tuple[str, StatsVerdict]], mode: str, key: str) -> None:
    """Refuse (``mode`` refuse: MEIConfigError naming ``key``) or warn (stderr) when a member finds the
    stated statistics implausible."""
    problems = [(member, v) for member, v in verdicts if v.problem]
    if not problems or mode == "off":
        return
    member, verdict = problems[0]
    message = (f"{key}: implausible for {member}: {verdict.problem}. input_stats must be the statistics of the stimuli the members were "
               f"trained on, in the same units (give a sample of them: input_stats: {{from: FILE}})")
    if mode == "refuse" and any(v.decisive for _, v in problems):
        raise MEIConfigError(message + f"; to run anyway set {key}.check: warn")
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- per MEI, where the model is loaded


def _chunked(objective: Callable[[Any, Any], Any], x: Any, items: Any, max_batch: int | None) -> Any:
    import torch

    size = int(max_batch or len(x)) or 1
    with torch.no_grad():
        return torch.cat([objective(x[i : i + size], items[i : i + size]) for i in range(0, len(x), size)])


def baseline_responses(objective: Callable[[Any, Any], Any], row_items: np.ndarray, input_shape: Sequence[int], stats: Mapping[str, Any],
                       device: Any, mei_contrast: np.ndarray, max_batch: int | None = None, sample: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per row (``row_items``: the objective's item of each MEI row): ``mean_response`` (the objective
    at the mean stimulus), ``noise_response`` (its mean over ``NOISE_DRAWS`` 1/f noise stimuli drawn from
    ``stats``, the same draws for every row) and, with a stimulus ``sample`` (``S×C×…``), ``sample_best``
    (the best objective over the sample). Noise and sample stimuli are compared at the MEI's contrast:
    each one's deviation from the mean is rescaled to the row's ``mei_contrast`` (L2 norm of MEI − mean):
    at the full contrast of the training stimuli, noise drives a neuron about as much as an MEI of a
    tenth of it (``config/README.md``, "Stimulus statistics and quality flags"). Every evaluation is one batched call per chunk
    of ``max_batch`` rows."""
    import torch

    items = torch.as_tensor(np.asarray(row_items), device=device)
    n_rows = len(items)
    mean = mean_stimulus(input_shape, stats).to(device)
    contrast = torch.as_tensor(np.asarray(mei_contrast, dtype=np.float32), device=device)

    def best_and_mean(stimuli: Any) -> tuple[Any, Any]:
        """Over ``stimuli`` at each row's contrast: the objective's max and mean per row."""
        deviation = stimuli.to(device) - mean
        norms = deviation.flatten(1).norm(dim=1).clamp_min(1e-12)
        # stimulus s for row i (stimulus-major): mean + deviation_s · contrast_i / ‖deviation_s‖
        factor = (contrast[None, :] / norms[:, None]).reshape(-1, *([1] * len(input_shape)))
        rows = mean + deviation.repeat_interleave(n_rows, 0) * factor
        responses = _chunked(objective, rows, items.repeat(len(stimuli)), max_batch).view(len(stimuli), n_rows)
        return responses.max(0).values, responses.mean(0)

    mean_response = _chunked(objective, mean.expand(n_rows, *input_shape), items, max_batch)
    _, noise_response = best_and_mean(pink_noise(NOISE_DRAWS, input_shape, stats))
    result = {"mean_response": mean_response.float().cpu().numpy(), "noise_response": noise_response.float().cpu().numpy()}
    if sample is not None:
        sample_best, _ = best_and_mean(torch.as_tensor(np.asarray(sample, dtype=np.float32)))
        result["sample_best"] = sample_best.float().cpu().numpy()
    return result


def sample_rows(path: str | Path, count: int = SAMPLE_DRAWS) -> np.ndarray:
    """``count`` stimuli evenly spaced through a sample file (all of them when it has fewer)."""
    sample = read_sample(path, "input_stats.from")
    index = np.unique(np.linspace(0, sample.shape[0] - 1, min(count, sample.shape[0])).round().astype(np.int64))
    return np.stack([np.asarray(sample[int(i)], dtype=np.float32) for i in index])


# --------------------------------------------------------------------------- per MEI, at aggregation


def clip_bounds(stats: Mapping[str, Any], n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel the bounds MEIs are clipped to: the stated range, else the default preset's
    ``mean ± CLIP_STDS·std``."""
    from ..presets import CLIP_STDS

    mean, std, value_range = _per_channel(stats, n_channels)
    if value_range is not None:
        return value_range[:, 0], value_range[:, 1]
    return mean - CLIP_STDS * std, mean + CLIP_STDS * std


def clip_fraction(meis: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """Per MEI (``B×C×…``), the share of its pixels within ``CLIP_TOLERANCE`` of a clip bound."""
    low, high = clip_bounds(stats, meis.shape[1])
    view = (1, -1) + (1,) * (meis.ndim - 2)
    tolerance = (CLIP_TOLERANCE * (high - low)).reshape(view)
    at_bound = (meis <= low.reshape(view) + tolerance) | (meis >= high.reshape(view) - tolerance)
    return at_bound.reshape(len(meis), -1).mean(1).astype(np.float32)


def _centred_unit(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat = flat - flat.mean(1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def amplitude_spectrum(meis: np.ndarray) -> np.ndarray:
    """|FFT| over the last two dims of each MEI's deviation from its mean (``B×…``): the same for an
    MEI and its shifted or phase-flipped copy, as a complex cell's MEIs of different seeds are."""
    flat = meis.reshape(len(meis), -1)
    deviation = (flat - flat.mean(1, keepdims=True)).reshape(meis.shape)
    return np.abs(np.fft.rfft2(deviation.astype(np.float64)))


def seed_agreement(meis: np.ndarray) -> np.ndarray:
    """``S×B×…`` MEIs (seeds × MEIs) → ``S×B``: Pearson r of each MEI's amplitude spectrum with the
    mean spectrum of the same MEI's other seeds (NaN with one seed). Phase-invariant on purpose:
    complex cells' MEIs of different seeds differ in phase and position, not in spectrum."""
    n_seeds = meis.shape[0]
    result = np.full(meis.shape[:2], np.nan, dtype=np.float32)
    if n_seeds < 2:
        return result
    spectra = amplitude_spectrum(meis.reshape(-1, *meis.shape[2:])).reshape(n_seeds, meis.shape[1], -1)
    others = (spectra.sum(0, keepdims=True) - spectra) / (n_seeds - 1)
    a, b = _centred_unit(spectra.reshape(-1, spectra.shape[-1])), _centred_unit(others.reshape(-1, others.shape[-1]))
    return (a * b).sum(1).reshape(n_seeds, -1).astype(np.float32)


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class FlagRule:
    name: str
    rule: str  # the rule in words (config/README.md's table is generated from these)
    applies: Callable[[Mapping[str, np.ndarray]], np.ndarray]


def _below(column: str, threshold: float) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    def applies(table: Mapping[str, np.ndarray]) -> np.ndarray:
        values = np.asarray(table[column], dtype=np.float64)
        return np.isfinite(values) & (values < threshold)
    return applies


def _above(column: str, threshold: float) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    def applies(table: Mapping[str, np.ndarray]) -> np.ndarray:
        values = np.asarray(table[column], dtype=np.float64)
        return np.isfinite(values) & (values > threshold)
    return applies


FLAG_RULES: tuple[FlagRule, ...] = (
    FlagRule("low_gain", f"gain (score ÷ the mean response to 1/f noise drawn from input_stats at the MEI's contrast) < {GAIN_MIN}: "
             "the MEI drives the neuron hardly more than noise of its contrast does (e.g. an MEI made in the wrong units)", _below("gain", GAIN_MIN)),
    FlagRule("below_sample", f"score ÷ the best response over the stimulus sample (input_stats.from) at the MEI's contrast "
             f"< {SAMPLE_RATIO_MIN}: a training stimulus of the same contrast beats the MEI", _below("sample_ratio", SAMPLE_RATIO_MIN)),
    FlagRule("at_clip", f"more than {CLIP_SHARE_MAX:.0%} of pixels at the clip bounds (input_stats.range, else mean ± 3 std): "
             "the MEI is saturated", _above("clip_fraction", CLIP_SHARE_MAX)),
    FlagRule("seeds_disagree", f"seed_agreement (r of the MEI's amplitude spectrum with the other seeds' mean) < {AGREEMENT_MIN}: "
             "the seeds found different stimuli", _below("seed_agreement", AGREEMENT_MIN)),
)


def quality_flags(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Comma-separated names of the flags each row earns (``""`` when none): ``table`` holds the
    columns the rules read (``gain``, ``sample_ratio``, ``clip_fraction``, ``seed_agreement``)."""
    n = len(next(iter(table.values())))
    names = np.full(n, "", dtype=object)
    for rule in FLAG_RULES:
        hit = rule.applies(table)
        names = np.where(hit, np.where(names == "", rule.name, names + "," + rule.name), names)
    return names.astype(str)


def flag_table_markdown() -> str:
    """The flag rules as a Markdown table (config/README.md, "Stimulus statistics and quality flags")."""
    lines = ["| flag | rule |", "|---|---|"]
    lines += [f"| `{rule.name}` | {rule.rule} |" for rule in FLAG_RULES]
    return "\n".join(lines)
