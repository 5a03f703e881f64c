"""A convis-like toolbox of stateful spatio-temporal filters in plain torch.

Every filter maps a video ``B×C×T×H×W`` (time is dim 2) to a video, except :class:`CellReadout`,
which maps a video to ``B×T×N`` responses of ``N`` cells (the openretina convention). Filters compose
with :class:`Sequential`, :class:`Parallel` (outputs stacked along ``C``) and :class:`Sum`.

State and chunking. Every filter is a :class:`StatefulFilter` with a pure ``step(x, state) -> (y,
state)`` and ``initial_state(x)``. Three ways to run one:

- ``module(x)`` — by default starts from a fresh state on every call (what MEI optimisation needs:
  each call sees only its own input);
- ``module.run_in_chunks(x, chunk_frames)`` — equals ``module(x)`` (to float rounding) while carrying
  the state from chunk to chunk, detached so that no autograd graph spans chunks;
- ``module.carry_state = True`` — convis' behaviour: each call continues from the state the previous
  call left (detached), until ``reset_state()``.

Temporal filters are recursive (a loop over time, vectorised over batch, channels and space);
spatial filters are separable convolutions. Every op acts on each batch item alone, so an item alone
equals the same item inside a batch.

Discretisation of the exponential low-pass cascade. ``n`` stages ``dz_1/dt = (u − z_1)/τ``,
``dz_k/dt = (z_{k−1} − z_k)/τ`` have the impulse response ``t^(n−1) e^(−t/τ) / ((n−1)! τ^n)`` (a
gamma kernel of unit integral). Frame ``t`` holds the input constant for one step ``dt``; the state
after the frame is computed exactly (zero-order hold): with ``h = dt/τ`` and ``c = e^(−h)``,
``z ← Φ z + Γ u`` where ``Φ[j, i] = c h^(j−i)/(j−i)!`` (``j ≥ i``) and ``Γ[j] = 1 − c Σ_{m≤j} h^m/m!``.
The output of frame ``t`` is the last stage at the end of the frame, so a unit step gives exactly the
gamma CDF ``1 − e^(−t/τ) Σ_{m<n} (t/τ)^m/m!`` at ``t = (k+1)·dt``. For ``n = 1`` this is Virtual
Retina's recursive exponential ``y_t = c y_{t−1} + (1 − c) x_t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIME = 2

# ---------------------------------------------------------------------------------------- helpers


def _as_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    return value.to(like) if isinstance(value, Tensor) else torch.tensor(float(value), dtype=like.dtype, device=like.device)


def gaussian_kernel_1d(sigma: float | Tensor, radius: int | None = None, truncate: float = 4.0) -> Tensor:
    """A sampled Gaussian of standard deviation ``sigma`` (pixels) on ``−radius … radius``, normalised to
    sum 1 so a uniform image passes unchanged (Virtual Retina's blurs have unit gain). ``sigma`` may be a
    tensor that requires grad. ``radius`` defaults to ``ceil(truncate · sigma)`` (at least 1)."""
    sigma_value = float(sigma.detach()) if isinstance(sigma, Tensor) else float(sigma)
    if radius is None:
        radius = max(1, int(math.ceil(truncate * sigma_value)))
    sigma_t = sigma if isinstance(sigma, Tensor) else torch.tensor(sigma_value, dtype=torch.float64)
    positions = torch.arange(-radius, radius + 1, dtype=sigma_t.dtype, device=sigma_t.device)
    kernel = torch.exp(-0.5 * (positions / sigma_t) ** 2)
    return kernel / kernel.sum()


def gaussian_blur_matrix(n: int, sigma: float | Tensor, truncate: float = 4.0) -> Tensor:
    """``n×n`` matrix ``M`` with ``M @ v`` = ``v`` (length ``n``) blurred by :func:`gaussian_kernel_1d`
    with edges replicated (taps that fall outside land on the edge sample, so rows sum to 1).
    Differentiable with respect to ``sigma``."""
    kernel = gaussian_kernel_1d(sigma, truncate=truncate)
    radius = kernel.numel() // 2
    rows = torch.arange(n)[:, None].expand(n, kernel.numel())
    cols = (rows + torch.arange(-radius, radius + 1)[None, :]).clamp(0, n - 1)
    flat = torch.zeros(n * n, dtype=kernel.dtype, device=kernel.device)
    return flat.index_add(0, (rows * n + cols).reshape(-1).to(kernel.device), kernel.expand(n, -1).reshape(-1)).reshape(n, n)


def blur_with(x: Tensor, rows: Tensor | None, cols: Tensor | None) -> Tensor:
    """``rows @ x @ colsᵀ`` over the last two dims of ``x`` (``…×H×W``); ``None`` skips an axis."""
    if cols is not None:
        x = torch.matmul(x, cols.t().to(x))
    if rows is not None:
        x = torch.matmul(rows.to(x), x)
    return x


NO_BLUR_SIGMA = 0.05  # px: a Gaussian this narrow is a delta to float precision


def spatial_blur_matrices(size: tuple[int, int], sigma: float | Tensor, truncate: float = 4.0
                          ) -> tuple[Tensor | None, Tensor | None]:
    """The two matrices of :func:`spatial_gaussian_blur` for ``H×W`` images (``None, None`` when
    ``sigma`` is below ``NO_BLUR_SIGMA`` = 0.05 px, where the kernel is a delta to float precision)."""
    sigma_value = float(sigma.detach()) if isinstance(sigma, Tensor) else float(sigma)
    if sigma_value < NO_BLUR_SIGMA:
        return None, None
    return gaussian_blur_matrix(size[0], sigma, truncate), gaussian_blur_matrix(size[1], sigma, truncate)


def spatial_gaussian_blur(x: Tensor, sigma: float | Tensor, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur of the last two dims of ``x`` (``…×H×W``), edges replicated.

    Differs from :func:`mei_core.ops.gaussian_blur` (reflect padding, float sigma) on purpose: edge
    replication is what Virtual Retina's (Neumann) and convis' blurs do, and ``sigma`` may be a
    parameter being fitted. Computed as two products with banded ``H×H`` and ``W×W`` matrices that
    hold the padding (one large matrix product each; on CPU this is ~20× faster than ``conv2d`` on
    many single-channel frames). ``sigma`` below 0.05 px returns ``x``.
    """
    rows, cols = spatial_blur_matrices((x.shape[-2], x.shape[-1]), sigma, truncate)
    return x if rows is None else blur_with(x, rows, cols)


def sample_at(maps: Tensor, positions: Tensor, planes: Tensor | None = None) -> Tensor:
    """Bilinear samples of ``maps`` (``…×H×W``) at ``positions`` (``N×2``, ``(y, x)`` in pixels; clamped
    to the image) → ``…×N``. With ``planes`` (``N`` integers) ``maps`` is ``…×L×H×W`` and position ``i``
    reads plane ``planes[i]``. Differentiable with respect to ``maps``."""
    height, width = maps.shape[-2], maps.shape[-1]
    if planes is None:
        flat, offset = maps.reshape(*maps.shape[:-2], height * width), 0
    else:
        flat, offset = maps.reshape(*maps.shape[:-3], maps.shape[-3] * height * width), planes.long() * (height * width)
    if torch.equal(positions, positions.round()):  # on pixel centres: bilinear weights are 0 or 1
        index = positions[:, 0].long().clamp(0, height - 1) * width + positions[:, 1].long().clamp(0, width - 1)
        return flat.index_select(-1, offset + index)
    y = positions[:, 0].clamp(0, height - 1)
    x = positions[:, 1].clamp(0, width - 1)
    y0 = y.floor().clamp(max=height - 2 if height > 1 else 0).long()
    x0 = x.floor().clamp(max=width - 2 if width > 1 else 0).long()
    y1 = (y0 + 1).clamp(max=height - 1)
    x1 = (x0 + 1).clamp(max=width - 1)
    wy = (y - y0.to(y.dtype)).to(maps.dtype)
    wx = (x - x0.to(x.dtype)).to(maps.dtype)

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return flat.index_select(-1, offset + yy * width + xx)

    return ((1 - wy) * (1 - wx) * at(y0, x0) + (1 - wy) * wx * at(y0, x1)
            + wy * (1 - wx) * at(y1, x0) + wy * wx * at(y1, x1))


def exponential_cascade_coefficients(tau: Tensor, n_stages: int, dt: float) -> tuple[Tensor, Tensor]:
    """``(Φ, Γ)`` of the exact zero-order-hold step of ``n_stages`` exponential stages of time constant
    ``tau`` (see the module docstring): ``Φ`` is ``n×n`` lower triangular, ``Γ`` has ``n`` entries.
    Differentiable with respect to ``tau``."""
    h = dt / tau
    c = torch.exp(-h)
    powers = torch.stack([h ** m / math.factorial(m) for m in range(n_stages)])  # h^m/m!
    gamma = 1.0 - c * torch.cumsum(powers, dim=0)
    rows = []
    for j in range(n_stages):
        row = [c * powers[j - i] if i <= j else torch.zeros_like(c) for i in range(n_stages)]
        rows.append(torch.stack(row))
    return torch.stack(rows), gamma


def run_exponential_cascade(x: Tensor, state: Tensor, phi: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """Run the cascade over the time axis of ``x`` (``B×C×T×…``) from ``state`` (``n×B×C×…``); returns
    the last stage's output (shape of ``x``) and the state after the last frame. The loop is over time
    only; each step is one small matrix product over the stages, vectorised over everything else.
    ``phi``/``gamma`` may carry trailing dims (e.g. one time constant per channel: ``tau`` shaped
    ``C×1×1``) that broadcast against one frame ``B×C×…``."""
    n = gamma.shape[0]
    outputs = []
    for u in x.unbind(TIME):
        if n == 1:
            state = phi[0, 0] * state + gamma[0] * u.unsqueeze(0)
        elif phi.dim() == 2:
            state = torch.tensordot(phi, state, dims=1) + gamma.view(n, *([1] * u.dim())) * u.unsqueeze(0)
        else:  # per-channel coefficients n×n×(…) broadcasting against the frame's trailing dims
            state = (phi * state.unsqueeze(0)).sum(1) + gamma * u.unsqueeze(0)
        outputs.append(state[-1])
    if not outputs:
        return x, state
    return torch.stack(outputs, dim=TIME), state


def virtual_retina_nonlinearity(v: Tensor, i0: Tensor | float, v0: Tensor | float, slope: Tensor | float) -> Tensor:
    """Virtual Retina's rectification ``N(v)`` (Wohrer & Kornprobst 2009, eq. 9): linear
    ``i0 + λ(v − v0)`` above ``v0`` and ``i0 / (1 − λ(v − v0)/i0)`` below (a smooth approach to 0 as
    ``v → −∞``); value and slope are continuous at ``v0``. Computed without branches: with ``e = λ(v −
    v0)`` and ``e⁻ = min(e, 0)``, ``N = (e − e⁻) + i0²/(i0 − e⁻)``, whose denominator stays ≥ ``i0``, so
    no NaN gradients; at ``v = v0`` the slope is λ."""
    excess = (v - v0) * slope
    below = excess.clamp_max(0.0)
    return (excess - below) + (i0 * i0) / (i0 - below)


def _log_parameter(value: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(math.log(float(value)), dtype=torch.float32))


def _detach_state(state: Any) -> Any:
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple):
        return tuple(_detach_state(s) for s in state)
    if isinstance(state, list):
        return [_detach_state(s) for s in state]
    if isinstance(state, dict):
        return {k: _detach_state(v) for k, v in state.items()}
    return state


# ---------------------------------------------------------------------------------------- base


class StatefulFilter(nn.Module):
    """Base class: subclasses implement ``initial_state(x)`` and ``step(x, state) -> (y, state)``."""

    def __init__(self) -> None:
        super().__init__()
        self.carry_state = False
        self._carried: Any = None

    def initial_state(self, x: Tensor) -> Any:
        return None

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget the state carried between calls (``carry_state = True``)."""
        self._carried = None

    def forward(self, x: Tensor, data_key: str | None = None) -> Tensor:
        """Run ``x`` from a fresh state, or, with ``carry_state``, from where the last call stopped.
        ``data_key`` is accepted and ignored (openretina's signature)."""
        state = self._carried if (self.carry_state and self._carried is not None) else self.initial_state(x)
        y, state = self.step(x, state)
        if self.carry_state:
            self._carried = _detach_state(state)
        return y

    def run_in_chunks(self, x: Tensor, chunk_frames: int) -> Tensor:
        """``forward(x)`` computed ``chunk_frames`` frames at a time with the state carried (detached:
        gradients stop at chunk boundaries). Starts from a fresh state."""
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        state = self.initial_state(x)
        outputs = []
        for start in range(0, x.shape[TIME], chunk_frames):
            y, state = self.step(x[:, :, start:start + chunk_frames], state)
            state = _detach_state(state)
            outputs.append(y)
        # Readouts answer B×T×N (time is dim 1); video filters keep time at dim 2.
        return torch.cat(outputs, dim=1 if outputs[0].dim() == 3 else TIME)


# ---------------------------------------------------------------------------------------- temporal


class TemporalLowPass(StatefulFilter):
    """Cascade of ``n_stages`` exponential low-pass filters of time constant ``tau`` (seconds), step
    ``dt`` (seconds). Impulse response ``t^(n−1) e^(−t/τ)/((n−1)! τ^n)``, unit gain at DC; discretised
    exactly for inputs held constant over a frame (module docstring). ``tau`` is a fitted parameter
    (stored as its log)."""

    def __init__(self, tau: float, n_stages: int = 1, dt: float = 1.0) -> None:
        super().__init__()
        if n_stages < 1:
            raise ValueError("n_stages must be >= 1")
        self.n_stages = int(n_stages)
        self.dt = float(dt)
        self.log_tau = _log_parameter(tau)

    def initial_state(self, x: Tensor) -> Tensor:
        return x.new_zeros(self.n_stages, x.shape[0], x.shape[1], *x.shape[3:])

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        state = self.initial_state(x) if state is None else state
        phi, gamma = exponential_cascade_coefficients(self.log_tau.exp(), self.n_stages, self.dt)
        return run_exponential_cascade(x, state, phi.to(x.dtype), gamma.to(x.dtype))


class TemporalHighPass(StatefulFilter):
    """``x − weight · lowpass(x)``: Virtual Retina's transient ``δ(t) − w·E_τ(t)`` (``weight = 1``
    removes the DC; ``weight = 0.8`` keeps 20 % of it)."""

    def __init__(self, tau: float, weight: float = 1.0, n_stages: int = 1, dt: float = 1.0) -> None:
        super().__init__()
        self.lowpass = TemporalLowPass(tau, n_stages, dt)
        self.weight = nn.Parameter(torch.tensor(float(weight)))

    def initial_state(self, x: Tensor) -> Tensor:
        return self.lowpass.initial_state(x)

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        low, state = self.lowpass.step(x, state)
        return x - self.weight * low, state


# ---------------------------------------------------------------------------------------- spatial


class SpatialGaussian(StatefulFilter):
    """Separable Gaussian blur (``sigma`` in pixels, fitted as its log), edges replicated; stateless."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.log_sigma = _log_parameter(sigma)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        return spatial_gaussian_blur(x, self.log_sigma.exp()), state


def temporal_kernel(shape: str, length: int, dt: float = 1.0, **params: float) -> Tensor:
    """A causal temporal kernel of ``length`` taps (index 0 = lag 0), float64:

    - ``"delta"``: 1 at lag 0;
    - ``"exponential"`` (``tau``): ``n = 1`` gamma;
    - ``"gamma"`` (``tau``, ``n``): ``t^(n−1) e^(−t/τ)/((n−1)! τ^n) · dt`` sampled at ``t = k·dt``;
    - ``"biphasic"`` (``tau``, ``n``, ``tau_2``, ``weight``): ``gamma(τ) − weight · gamma(τ_2)``.
    """
    t = torch.arange(length, dtype=torch.float64) * dt

    def gamma(tau: float, n: int) -> Tensor:
        return t ** (n - 1) * torch.exp(-t / tau) / (math.factorial(n - 1) * tau ** n) * dt

    if shape == "delta":
        kernel = torch.zeros(length, dtype=torch.float64)
        kernel[0] = 1.0
        return kernel
    if shape == "exponential":
        return gamma(float(params["tau"]), 1)
    if shape == "gamma":
        return gamma(float(params["tau"]), int(params.get("n", 2)))
    if shape == "biphasic":
        n = int(params.get("n", 2))
        return gamma(float(params["tau"]), n) - float(params["weight"]) * gamma(float(params["tau_2"]), n)
    raise ValueError(f"unknown temporal kernel shape {shape!r}; choose delta, exponential, gamma or biphasic")


def spatial_kernel(shape: str, radius: int, **params: float) -> Tensor:
    """A ``(2r+1)×(2r+1)`` spatial kernel (float64), centred: ``"delta"``, ``"gaussian"`` (``sigma``,
    unit sum) or ``"dog"`` (``sigma_center``, ``sigma_surround``, ``surround_weight``: centre minus
    weighted surround, each Gaussian of unit sum)."""
    positions = torch.arange(-radius, radius + 1, dtype=torch.float64)
    r2 = positions[:, None] ** 2 + positions[None, :] ** 2

    def gaussian(sigma: float) -> Tensor:
        g = torch.exp(-r2 / (2 * sigma * sigma))
        return g / g.sum()

    if shape == "delta":
        kernel = torch.zeros_like(r2)
        kernel[radius, radius] = 1.0
        return kernel
    if shape == "gaussian":
        return gaussian(float(params["sigma"]))
    if shape == "dog":
        return gaussian(float(params["sigma_center"])) - float(params["surround_weight"]) * gaussian(float(params["sigma_surround"]))
    raise ValueError(f"unknown spatial kernel shape {shape!r}; choose delta, gaussian or dog")


class Conv3dFilter(StatefulFilter):
    """A learnable causal 3-D convolution ``C_in → C_out`` (convis' ``Conv3d``/``L``): kernel
    ``C_out×C_in×K×kh×kw`` set from named shapes as ``channel_weights ⊗ temporal ⊗ spatial`` (see
    :func:`temporal_kernel`, :func:`spatial_kernel`), or given whole as ``kernel``. Time is causal
    (the state holds the last ``K − 1`` input frames, zeros at the start); space is 'same'-sized with
    edges replicated."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        length: int = 10,
        radius: int = 3,
        temporal: Mapping[str, Any] | None = None,
        spatial: Mapping[str, Any] | None = None,
        kernel: Tensor | None = None,
        dt: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel is None:
            temporal = dict(temporal or {"shape": "delta"})
            spatial = dict(spatial or {"shape": "delta"})
            t = temporal_kernel(temporal.pop("shape"), int(length), dt, **temporal)
            s = spatial_kernel(spatial.pop("shape"), int(radius), **spatial)
            # conv3d correlates; flipping time makes tap 0 multiply the newest frame.
            kernel = (t.flip(0)[:, None, None] * s[None]).expand(out_channels, in_channels, -1, -1, -1) / in_channels
        self.kernel = nn.Parameter(torch.as_tensor(kernel, dtype=torch.float32).clone())

    def initial_state(self, x: Tensor) -> Tensor:
        k = self.kernel.shape[2]
        return x.new_zeros(x.shape[0], x.shape[1], k - 1, *x.shape[3:])

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        state = self.initial_state(x) if state is None else state
        k, kh, kw = self.kernel.shape[2:]
        full = torch.cat([state, x], dim=TIME)
        padded = F.pad(full, (kw // 2, kw // 2, kh // 2, kh // 2, 0, 0), mode="replicate")
        y = F.conv3d(padded, self.kernel)
        return y, full[:, :, full.shape[TIME] - (k - 1):]


# ---------------------------------------------------------------------------------------- static


class Nonlinearity(StatefulFilter):
    """A static nonlinearity with fitted parameters:

    - ``"rectify"``: ``gain · max(x − threshold, 0)``;
    - ``"softplus"``: ``gain · softplus(x − threshold)``;
    - ``"sigmoid"``: ``gain · sigmoid(slope · (x − threshold))``;
    - ``"square"``: ``gain · (x − threshold)²``;
    - ``"virtual_retina"``: Virtual Retina's ``N`` (:func:`virtual_retina_nonlinearity`) with ``i0``,
      ``v0`` (the threshold) and ``slope`` (λ).
    """

    KINDS = ("rectify", "softplus", "sigmoid", "square", "virtual_retina")

    def __init__(self, kind: str = "rectify", threshold: float = 0.0, gain: float = 1.0, slope: float = 1.0,
                 i0: float = 1.0) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown nonlinearity {kind!r}; choose one of {self.KINDS}")
        self.kind = kind
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.gain = nn.Parameter(torch.tensor(float(gain)))
        self.slope = nn.Parameter(torch.tensor(float(slope)))
        self.i0 = nn.Parameter(torch.tensor(float(i0)))

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        d = x - self.threshold
        if self.kind == "rectify":
            y = self.gain * F.relu(d)
        elif self.kind == "softplus":
            y = self.gain * F.softplus(d)
        elif self.kind == "sigmoid":
            y = self.gain * torch.sigmoid(self.slope * d)
        elif self.kind == "square":
            y = self.gain * d * d
        else:
            y = virtual_retina_nonlinearity(x, self.i0, self.threshold, self.slope)
        return y, state


# ---------------------------------------------------------------------------------------- readout


class CellReadout(StatefulFilter):
    """Video ``B×C×T×H×W`` → ``B×T×N``: channel ``channel_of_cell[i]`` (default 0) of the video,
    bilinearly sampled at cell ``i``'s position ``(y, x)`` (pixels)."""

    def __init__(self, positions: Sequence[Sequence[float]], channel_of_cell: Sequence[int] | None = None) -> None:
        super().__init__()
        self.register_buffer("positions", torch.as_tensor(positions, dtype=torch.float32).reshape(-1, 2))
        n = self.positions.shape[0]
        channels = [0] * n if channel_of_cell is None else [int(c) for c in channel_of_cell]
        self.register_buffer("channel_of_cell", torch.as_tensor(channels, dtype=torch.long))

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        samples = sample_at(x, self.positions)  # B×C×T×N
        n = torch.arange(self.positions.shape[0], device=x.device)
        return samples[:, self.channel_of_cell, :, n].permute(1, 2, 0), state


# ---------------------------------------------------------------------------------------- composition


class Sequential(StatefulFilter):
    """Filters applied one after the other; the state is the tuple of the members' states."""

    def __init__(self, *members: StatefulFilter) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def initial_state(self, x: Tensor) -> tuple[Any, ...]:
        # None: each member builds its fresh state from the input it actually receives.
        return (None,) * len(self.members)

    def step(self, x: Tensor, state: tuple[Any, ...] | None) -> tuple[Tensor, tuple[Any, ...]]:
        state = self.initial_state(x) if state is None else state
        new_states = []
        for member, member_state in zip(self.members, state):
            x, member_state = member.step(x, member_state)
            new_states.append(member_state)
        return x, tuple(new_states)


class Parallel(StatefulFilter):
    """Members applied to the same input; outputs concatenated along channels (dim 1 for videos,
    the cell axis, dim 2, for ``B×T×N`` readouts)."""

    def __init__(self, *members: StatefulFilter) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def initial_state(self, x: Tensor) -> tuple[Any, ...]:
        return (None,) * len(self.members)

    def step(self, x: Tensor, state: tuple[Any, ...] | None) -> tuple[Tensor, tuple[Any, ...]]:
        state = self.initial_state(x) if state is None else state
        outputs, states = zip(*(member.step(x, s) for member, s in zip(self.members, state)))
        return torch.cat(outputs, dim=1 if outputs[0].dim() == 5 else 2), tuple(states)


class Sum(Parallel):
    """Members applied to the same input; outputs summed (they must have equal shapes)."""

    def step(self, x: Tensor, state: tuple[Any, ...] | None) -> tuple[Tensor, tuple[Any, ...]]:
        state = self.initial_state(x) if state is None else state
        outputs, states = zip(*(member.step(x, s) for member, s in zip(self.members, state)))
        return torch.stack(outputs).sum(0), tuple(states)


# ---------------------------------------------------------------------------------------- cascades


def linear_stage(in_channels: int, out_channels: int, length: int, radius: int,
                 temporal: Mapping[str, Any], spatial: Mapping[str, Any], dt: float = 1.0) -> Conv3dFilter:
    """An ``L`` stage: one :class:`Conv3dFilter`."""
    return Conv3dFilter(in_channels, out_channels, length, radius, temporal, spatial, dt=dt)


def build_cascade(kind: str, stages: Sequence[Mapping[str, Any]], nonlinearities: Sequence[Mapping[str, Any]],
                  in_channels: int) -> Sequential:
    """``"L"``, ``"LN"`` or ``"LNLN"``: linear stages (kwargs of :func:`linear_stage` without
    ``in_channels``) interleaved with :class:`Nonlinearity` stages (its kwargs)."""
    counts = {"L": (1, 0), "LN": (1, 1), "LNLN": (2, 2)}
    if kind not in counts:
        raise ValueError(f"unknown cascade {kind!r}; choose L, LN or LNLN")
    n_linear, n_nonlinear = counts[kind]
    if len(stages) != n_linear or len(nonlinearities) != n_nonlinear:
        raise ValueError(f"a {kind} cascade needs {n_linear} linear and {n_nonlinear} nonlinear stages, "
                         f"got {len(stages)} and {len(nonlinearities)}")
    members: list[StatefulFilter] = []
    channels = int(in_channels)
    for i in range(n_linear):
        stage = dict(stages[i])
        out = int(stage.pop("out_channels", 1))
        members.append(linear_stage(channels, out, **stage))
        channels = out
        if i < n_nonlinear:
            members.append(Nonlinearity(**nonlinearities[i]))
    return Sequential(*members)


def build_filter_model(
    cells: Sequence[Sequence[float]],
    kind: str = "LN",
    channels: int = 1,
    stages: Sequence[Mapping[str, Any]] | None = None,
    nonlinearities: Sequence[Mapping[str, Any]] | None = None,
    channel_of_cell: Sequence[int] | None = None,
) -> Sequential:
    """Pipeline builder (plain JSON kwargs): an ``L``/``LN``/``LNLN`` cascade on ``B×C×T×H×W`` videos
    (``C = channels``) read out at ``cells`` (``[[y, x], …]`` pixels) → ``B×T×N``.

    Defaults: one linear stage of 15 frames × 7×7 pixels, DoG (σ 1 and 2.5 px, surround weight 0.8)
    times a biphasic gamma (τ 1.5 and 3 frames, weight 0.5), then a softplus. Use as
    ``{builder: mei_core.models.filters.build_filter_model, builder_kwargs: {cells: [[8, 8]]}}``.
    """
    if stages is None:
        stages = [{"length": 15, "radius": 3,
                   "temporal": {"shape": "biphasic", "tau": 1.5, "n": 2, "tau_2": 3.0, "weight": 0.5},
                   "spatial": {"shape": "dog", "sigma_center": 1.0, "sigma_surround": 2.5, "surround_weight": 0.8}}]
    if nonlinearities is None:
        nonlinearities = [{"kind": "softplus"}] * {"L": 0, "LN": 1, "LNLN": 2}.get(kind, 0)
    cascade = build_cascade(kind, stages, nonlinearities, channels)
    return Sequential(cascade, CellReadout(cells, channel_of_cell))
