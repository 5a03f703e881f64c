"""A differentiable Virtual-Retina-style (convis-like) retina model in plain torch.

Each ganglion cell is a chain of three stages, all differentiable:

1. **Outer plexiform layer (OPL)** — a separable space-time linear filter: a difference-of-Gaussians
   (DoG) spatial filter (centre position, centre sigma, surround sigma, surround weight), per-cell
   channel weights over the ``C`` input channels (e.g. green/UV), an ON (+1) or OFF (−1) polarity, and a
   biphasic temporal kernel ``k(t) = g(t; tau_1) − w_b · g(t; tau_2)`` where ``g`` is a gamma kernel
   (a cascade of ``order + 1`` exponential filters), normalised to unit integral.
2. **Contrast gain control** — divisive: ``y_t = L_t / sqrt(1 + lambda · c_{t−1})`` with the local
   contrast ``c_t = a · c_{t−1} + (1 − a) · y_t²`` an exponential low-pass (``a = exp(−1 / tau_gain)``)
   of the cell's own gain-controlled signal (a feedback loop, as in Virtual Retina's bipolar stage).
3. **Ganglion nonlinearity** — ``rate = gain · softplus(y − threshold, beta)`` (expected spike count
   per frame); optionally spikes (Poisson from an explicit ``torch.Generator``, or deterministic
   integrate-and-fire with threshold 1 and reset by subtraction), returned straight-through: the value
   is the spike count but gradients flow only through the rate path.

Time semantics: input videos are ``B×C×T×H×W``; outputs are ``B×T'×N``. The temporal convolution is
causal (frame ``t`` sees frames ``t−K+1 … t``, kernel index 0 = the current frame). With
``padding="causal"`` (default) the start is padded with ``K − 1`` zero frames (a blank, i.e. mean-grey
for contrast-coded input) and ``T' = T``; with ``padding="valid"`` no padding is done and
``T' = T − K + 1`` (the first output is frame ``K − 1``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DESCRIPTION_VERSION = 1

# Parameters stored as logarithms (positive by construction); the description holds their exp.
_LOG_PARAMS = {
    "sigma_center": "log_sigma_center",
    "sigma_surround": "log_sigma_surround",
    "tau_1": "log_tau_1",
    "tau_2": "log_tau_2",
    "gain_control_strength": "log_gain_control_strength",
    "tau_gain": "log_tau_gain",
    "gain": "log_gain",
}
# Parameters stored as they are described.
_RAW_PARAMS = ("surround_weight", "biphasic_weight", "threshold")


def _state(batch: int, n: int, history: int, like: Tensor) -> dict[str, Tensor]:
    return {
        "history": like.new_zeros(batch, n, history),
        "contrast": like.new_zeros(batch, n),
        "integrator": like.new_zeros(batch, n),
    }


class RetinaModel(nn.Module):
    """A population of ``N`` ON/OFF centre-surround ganglion cells on an ``H×W`` grid with ``C`` channels.

    ``forward(x)`` maps a ``B×C×T×H×W`` float32 video to ``B×T'×N`` rates (see the module docstring for
    ``T'``). Every op is per sample: a batch row alone gives the same output as inside a batch
    (up to float rounding of batched matmuls).

    Coordinates: centres are ``(x, y)`` in pixels, ``x`` the column and ``y`` the row index.
    """

    def __init__(
        self,
        polarity: Sequence[int],
        center: Tensor | Sequence[Sequence[float]],
        sigma_center: Sequence[float],
        sigma_surround: Sequence[float],
        surround_weight: Sequence[float],
        tau_1: Sequence[float],
        tau_2: Sequence[float],
        biphasic_weight: Sequence[float],
        channel_weights: Tensor | Sequence[Sequence[float]],
        gain_control_strength: Sequence[float],
        tau_gain: Sequence[float],
        gain: Sequence[float],
        threshold: Sequence[float],
        size: tuple[int, int],
        frames_kernel: int = 20,
        temporal_order: int = 2,
        softplus_beta: float = 1.0,
        padding: str = "causal",
    ) -> None:
        super().__init__()
        if padding not in ("causal", "valid"):
            raise ValueError(f"padding must be 'causal' or 'valid', not {padding!r}")
        if frames_kernel < 1:
            raise ValueError("frames_kernel must be >= 1")
        self.size = (int(size[0]), int(size[1]))
        self.frames_kernel = int(frames_kernel)
        self.temporal_order = int(temporal_order)
        self.softplus_beta = float(softplus_beta)
        self.padding = padding
        # Defaults for forward(); the pipeline calls model(x) and wants rates.
        self.spikes = False
        self.spike_mode = "poisson"

        def param(values: Any, log: bool = False) -> nn.Parameter:
            # Converting in float64 makes describe() -> from_description() recover the float32 exactly.
            t = torch.as_tensor(values, dtype=torch.float64)
            return nn.Parameter((t.log() if log else t).to(torch.float32))

        self.register_buffer("polarity", torch.as_tensor([float(p) for p in polarity], dtype=torch.float32))
        n = self.polarity.shape[0]
        self.center = param(center)
        self.log_sigma_center = param(sigma_center, log=True)
        self.log_sigma_surround = param(sigma_surround, log=True)
        self.surround_weight = param(surround_weight)
        self.log_tau_1 = param(tau_1, log=True)
        self.log_tau_2 = param(tau_2, log=True)
        self.biphasic_weight = param(biphasic_weight)
        self.channel_weights = param(channel_weights)
        self.log_gain_control_strength = param(gain_control_strength, log=True)
        self.log_tau_gain = param(tau_gain, log=True)
        self.log_gain = param(gain, log=True)
        self.threshold = param(threshold)
        if self.center.shape != (n, 2) or self.channel_weights.dim() != 2 or self.channel_weights.shape[0] != n:
            raise ValueError("center must be N×2 and channel_weights N×C")
        for name in ("log_sigma_center", "log_sigma_surround", "surround_weight", "log_tau_1", "log_tau_2",
                     "biphasic_weight", "log_gain_control_strength", "log_tau_gain", "log_gain", "threshold"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have one value per cell ({n})")
        self.register_buffer("grid_y", torch.arange(self.size[0], dtype=torch.float32))
        self.register_buffer("grid_x", torch.arange(self.size[1], dtype=torch.float32))
        self.register_buffer("lags", torch.arange(self.frames_kernel, dtype=torch.float32))

    # ---------------------------------------------------------------- construction / description
    @property
    def n_cells(self) -> int:
        return int(self.polarity.shape[0])

    @property
    def channels(self) -> int:
        return int(self.channel_weights.shape[1])

    @classmethod
    def random(
        cls,
        n_cells: int,
        size: tuple[int, int] = (32, 32),
        channels: int = 2,
        frames_kernel: int = 20,
        seed: int = 0,
        **kwargs: Any,
    ) -> RetinaModel:
        """A population with known parameters: cells alternate ON (even index) and OFF (odd index),
        centres uniform in the inner 60 % of the image, surround 2–3× the centre, biphasic temporal
        kernels peaking within the first ~8 frames, positive channel weights summing to 1.
        ``kwargs`` go to the constructor (``temporal_order``, ``softplus_beta``, ``padding``)."""
        g = torch.Generator().manual_seed(int(seed))
        h, w = int(size[0]), int(size[1])

        def u(lo: float, hi: float, shape: tuple[int, ...] = (n_cells,)) -> Tensor:
            return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

        scale = min(h, w)
        center = torch.stack([u(0.2 * (w - 1), 0.8 * (w - 1)), u(0.2 * (h - 1), 0.8 * (h - 1))], dim=1)
        sigma_center = u(0.05 * scale, 0.09 * scale)
        tau_1 = u(1.0, 2.0)
        raw = u(0.2, 1.0, (n_cells, channels))
        return cls(
            polarity=[1 if i % 2 == 0 else -1 for i in range(n_cells)],
            center=center.tolist(),
            sigma_center=sigma_center.tolist(),
            sigma_surround=(sigma_center * u(2.0, 3.0)).tolist(),
            surround_weight=u(0.5, 0.9).tolist(),
            tau_1=tau_1.tolist(),
            tau_2=(tau_1 * u(1.5, 2.5)).tolist(),
            biphasic_weight=u(0.3, 0.8).tolist(),
            channel_weights=(raw / raw.sum(dim=1, keepdim=True)).tolist(),
            gain_control_strength=u(0.5, 2.0).tolist(),
            tau_gain=u(5.0, 15.0).tolist(),
            gain=u(1.0, 3.0).tolist(),
            threshold=[0.0] * n_cells,
            size=(h, w),
            frames_kernel=frames_kernel,
            **kwargs,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able description: model settings plus, per cell, its type (ON/OFF), centre ``[x, y]``,
        sigmas (pixels), temporal time constants (frames), channel weights, gain-control strength and
        time constant (frames), output gain and threshold."""

        def values(t: Tensor) -> list[Any]:
            return t.detach().to(torch.float64).tolist()

        per_param = {key: values(getattr(self, raw).detach().to(torch.float64).exp()) for key, raw in _LOG_PARAMS.items()}
        per_param.update({key: values(getattr(self, key)) for key in _RAW_PARAMS})
        cells = []
        for i in range(self.n_cells):
            cell: dict[str, Any] = {
                "type": "ON" if float(self.polarity[i]) > 0 else "OFF",
                "center": values(self.center[i]),
                "channel_weights": values(self.channel_weights[i]),
            }
            cell.update({key: per_param[key][i] for key in per_param})
            cells.append(cell)
        return {
            "model": "mei_core.models.retina.RetinaModel",
            "version": DESCRIPTION_VERSION,
            "size": list(self.size),
            "channels": self.channels,
            "frames_kernel": self.frames_kernel,
            "temporal_order": self.temporal_order,
            "softplus_beta": self.softplus_beta,
            "padding": self.padding,
            "cells": cells,
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> RetinaModel:
        """The model ``describe()`` described (identical parameters, hence identical outputs)."""
        cells = description["cells"]
        if not cells:
            raise ValueError("a retina description needs at least one cell")
        types = [str(c["type"]).upper() for c in cells]
        if not set(types) <= {"ON", "OFF"}:
            raise ValueError(f"cell types must be ON or OFF, got {sorted(set(types))}")
        keys = list(_LOG_PARAMS) + list(_RAW_PARAMS)
        return cls(
            polarity=[1 if t == "ON" else -1 for t in types],
            center=[c["center"] for c in cells],
            channel_weights=[c["channel_weights"] for c in cells],
            size=tuple(description["size"]),
            frames_kernel=int(description.get("frames_kernel", 20)),
            temporal_order=int(description.get("temporal_order", 2)),
            softplus_beta=float(description.get("softplus_beta", 1.0)),
            padding=str(description.get("padding", "causal")),
            **{key: [c[key] for c in cells] for key in keys},
        )

    # ---------------------------------------------------------------- filters (ground truth)
    def _spatial_filters(self) -> Tensor:
        """``N×C×H×W``: polarity × channel weight × DoG, each Gaussian normalised to unit integral."""
        sc = self.log_sigma_center.exp()[:, None, None]
        ss = self.log_sigma_surround.exp()[:, None, None]
        dy = self.grid_y[None, :, None] - self.center[:, 1, None, None]
        dx = self.grid_x[None, None, :] - self.center[:, 0, None, None]
        r2 = dy * dy + dx * dx
        # Analytic normalisation (not a sum over the grid) so a cell near the border keeps its balance.
        centre = torch.exp(-r2 / (2 * sc * sc)) / (2 * math.pi * sc * sc)
        surround = torch.exp(-r2 / (2 * ss * ss)) / (2 * math.pi * ss * ss)
        dog = centre - self.surround_weight[:, None, None] * surround
        weights = self.polarity[:, None] * self.channel_weights
        return weights[:, :, None, None] * dog[:, None]

    def _temporal_kernels(self) -> Tensor:
        """``N×K``, index 0 = the current frame (lag 0)."""
        n = self.temporal_order

        def gamma(log_tau: Tensor) -> Tensor:
            tau = log_tau.exp()[:, None]
            s = self.lags[None, :] / tau
            return s.pow(n) * torch.exp(-s) / (tau * math.factorial(n))

        return gamma(self.log_tau_1) - self.biphasic_weight[:, None] * gamma(self.log_tau_2)

    def spatial_filter(self, cell: int) -> Tensor:
        """``C×H×W``: the cell's spatial filter including its polarity and channel weights, so that the
        OPL's linear response is ``spatial_filter ⊗ temporal_kernel`` (detached)."""
        return self._spatial_filters()[cell].detach()

    def temporal_kernel(self, cell: int) -> Tensor:
        """``K``: the cell's temporal kernel, index 0 = lag 0 (the current frame), detached."""
        return self._temporal_kernels()[cell].detach()

    # ---------------------------------------------------------------- running
    def initial_state(self, x: Tensor) -> dict[str, Tensor]:
        """The state before the first frame of ``x`` (``B×C×T×H×W``): a blank temporal history
        (``K − 1`` zero frames with causal padding, none with valid padding) and zero contrast."""
        history = self.frames_kernel - 1 if self.padding == "causal" else 0
        return _state(x.shape[0], self.n_cells, history, x)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.channels or tuple(x.shape[3:]) != self.size:
            raise ValueError(
                f"expected a B×C×T×H×W video with C={self.channels}, H×W={self.size}, got {tuple(x.shape)}"
            )

    def step(
        self,
        x: Tensor,
        state: dict[str, Tensor],
        spikes: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Run ``x`` (``B×C×T×H×W``) from ``state``; returns ``B×T''×N`` and the state after ``x``.

        ``T''`` is the number of frames that complete a kernel window given the carried history
        (``T`` with causal padding once started). The returned state is not detached.
        """
        self._check(x)
        k, n = self.frames_kernel, self.n_cells
        b, c, t, h, w = x.shape
        # Project space and channels first: the filter is separable and N ≪ C·H·W.
        filters = self._spatial_filters().reshape(n, c * h * w)
        frames = x.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w)
        drive = torch.matmul(frames, filters.t()).transpose(1, 2)  # B×N×T
        full = torch.cat([state["history"], drive], dim=2)
        if full.shape[2] >= k:
            # conv1d correlates; flipping makes kernel index 0 multiply the newest frame of each window.
            weight = self._temporal_kernels().flip(-1).unsqueeze(1)
            opl = F.conv1d(full, weight, groups=n)  # B×N×T''
        else:
            opl = full.new_zeros(b, n, 0)
        history = full[:, :, max(full.shape[2] - (k - 1), 0):] if k > 1 else full[:, :, :0]

        strength = self.log_gain_control_strength.exp()
        decay = torch.exp(-1.0 / self.log_tau_gain.exp())
        contrast = state["contrast"]
        outputs = []
        for i in range(opl.shape[2]):
            # The gain uses the contrast up to the previous frame: a causal feedback loop.
            y = opl[:, :, i] / torch.sqrt(1.0 + strength * contrast)
            contrast = decay * contrast + (1.0 - decay) * y * y
            outputs.append(y)
        bipolar = torch.stack(outputs, dim=1) if outputs else opl.transpose(1, 2)  # B×T''×N

        rate = self.log_gain.exp() * F.softplus(bipolar - self.threshold, beta=self.softplus_beta)
        integrator = state["integrator"]
        use_spikes = self.spikes if spikes is None else spikes
        if use_spikes and rate.shape[1] > 0:
            if self.spike_mode == "poisson":
                if generator is None:
                    raise ValueError("Poisson spikes need an explicit torch.Generator (no global RNG)")
                counts = torch.poisson(rate.detach(), generator=generator)
            elif self.spike_mode == "deterministic":
                # Integrate-and-fire, threshold 1, reset by subtraction: spikes = increments of floor(V).
                total = integrator[:, None, :] + torch.cumsum(rate.detach(), dim=1)
                floors = torch.floor(total)
                previous = torch.cat([torch.floor(integrator)[:, None, :], floors[:, :-1]], dim=1)
                counts = floors - previous
                integrator = total[:, -1] - floors[:, -1]
            else:
                raise ValueError(f"spike_mode must be 'poisson' or 'deterministic', not {self.spike_mode!r}")
            # Straight-through: the value is the spike count, the gradient that of the rate.
            rate = rate + (counts - rate).detach()
        new_state = {"history": history, "contrast": contrast, "integrator": integrator}
        return rate, new_state

    def forward(
        self,
        x: Tensor,
        data_key: str | None = None,
        spikes: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``B×C×T×H×W`` → ``B×T'×N`` rates (``T' = T`` causal, ``T − K + 1`` valid).

        ``data_key`` is accepted and ignored (openretina's signature). With ``spikes=True`` (or
        ``self.spikes``) the values are spike counts (Poisson from ``generator``, or deterministic when
        ``self.spike_mode == "deterministic"``); gradients then flow only through the rate path.
        Each call starts from a fresh state, so no graph is shared between calls.
        """
        out, _ = self.step(x, self.initial_state(x), spikes=spikes, generator=generator)
        return out

    def run_in_chunks(
        self,
        x: Tensor,
        chunk_frames: int,
        data_key: str | None = None,
        spikes: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``forward(x)`` computed ``chunk_frames`` frames at a time, carrying the temporal-filter history
        and the gain-control (and spike integrator) state; equals the one-shot rates to float rounding.

        The state starts fresh on every call and is detached between chunks: gradients are truncated at
        chunk boundaries (use ``forward`` for exact gradients), and no graph leaks across chunks or calls.
        Poisson spikes draw per chunk, so they differ from a one-shot draw.
        """
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        state = self.initial_state(x)
        outputs = []
        for start in range(0, x.shape[2], chunk_frames):
            out, state = self.step(x[:, :, start:start + chunk_frames], state, spikes=spikes, generator=generator)
            state = {key: value.detach() for key, value in state.items()}
            outputs.append(out)
        return torch.cat(outputs, dim=1)


# -------------------------------------------------------------------- fitting
def fit_parameters(
    model: nn.Module,
    stimuli: Tensor,
    responses: Tensor,
    epochs: int = 100,
    lr: float = 0.02,
    seed: int = 0,
    loss: str = "mse",
    parameters: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> list[float]:
    """Fit the parameters of any model mapping ``B×C×T×H×W`` to ``B×T'×N`` (a ``RetinaModel``, a
    ``VirtualRetina``, a :mod:`mei_core.models.filters` cascade): all, or those named in
    ``parameters`` (e.g. ``["log_gain", "threshold"]``), with Adam, to ``responses`` (``B×T'×N``)
    recorded for ``stimuli`` (``B×C×T×H×W``).

    ``loss`` is ``"mse"`` or ``"poisson"`` (negative log-likelihood of counts given the rate). Minibatch
    order comes from a generator seeded with ``seed``. Returns the mean loss of each epoch (measured
    during the epoch, before the last update). Other parameters keep their ``requires_grad``.
    """
    if loss not in ("mse", "poisson"):
        raise ValueError(f"loss must be 'mse' or 'poisson', not {loss!r}")
    named = dict(model.named_parameters())
    names = list(named) if parameters is None else list(parameters)
    unknown = [name for name in names if name not in named]
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; choose from {sorted(named)}")
    optimizer = torch.optim.Adam([named[name] for name in names], lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    size = stimuli.shape[0]
    batch = size if batch_size is None else int(batch_size)
    history: list[float] = []
    for _ in range(int(epochs)):
        order = torch.randperm(size, generator=generator)
        total = 0.0
        for start in range(0, size, batch):
            index = order[start:start + batch]
            prediction = model(stimuli[index])
            target = responses[index]
            if loss == "mse":
                value = torch.mean((prediction - target) ** 2)
            else:
                value = torch.mean(prediction - target * torch.log(prediction + 1e-6))
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            total += float(value.detach()) * index.numel()
        history.append(total / size)
    return history


# -------------------------------------------------------------------- pipeline builders
def load_retina(description: str | Path) -> RetinaModel:
    """Pipeline builder: the ``RetinaModel`` described by the JSON file ``description`` (as written by
    ``save_description``); use as ``{builder: mei_core.models.retina.load_retina,
    builder_kwargs: {description: path}}``."""
    try:
        with open(description) as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"cannot read the retina description {str(description)!r}: {error}") from error
    try:
        return RetinaModel.from_description(data)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{str(description)!r} is not a retina description: missing or bad {error}") from error


def save_description(model: RetinaModel, path: str | Path) -> None:
    """Write ``model.describe()`` as JSON to ``path`` (readable by ``load_retina``)."""
    with open(path, "w") as handle:
        json.dump(model.describe(), handle, indent=1)


def builder(
    description: str | Path | None = None,
    n_cells: int = 8,
    size: Sequence[int] = (32, 32),
    channels: int = 2,
    frames_kernel: int = 20,
    seed: int = 0,
) -> RetinaModel:
    """Pipeline builder: ``load_retina(description)`` when a description path is given, otherwise
    ``RetinaModel.random(n_cells, size, channels, frames_kernel, seed)``."""
    if description is not None:
        return load_retina(description)
    return RetinaModel.random(n_cells, size=(int(size[0]), int(size[1])), channels=channels,
                              frames_kernel=frames_kernel, seed=seed)
