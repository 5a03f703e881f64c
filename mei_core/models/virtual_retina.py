"""Virtual Retina (Wohrer & Kornprobst 2009) as a differentiable, batched torch module.

Stages (units as in Virtual Retina's XML: seconds, degrees, Hz; ``ppd`` = pixels per degree):

1. **Luminance.** ``L = Σ_c w_c x_c``: the ``C`` input channels of a ``B×C×T×H×W`` video are mixed
   with fixed ``channel_weights`` (default: the mean) into one luminance map; Virtual Retina has one
   luminance channel.
2. **OPL.** Centre ``C = G_σC * T_U * E_C * L`` with ``E_C`` Virtual Retina's ``ExpCascade(τ_C, n_C)``
   (``n_C + 1`` exponential stages of ``τ_C/n_C`` each, peak at ``τ_C``; one stage of ``τ_C`` when
   ``n_C = 0``) and the undershoot ``T_U = δ − w_U E_τU``; surround ``S = G_σS * E_τS * C``;
   ``I_OPL = (λ_OPL / input_luminosity_range) (C − w_OPL S)``.
3. **Contrast gain control.** ``dV/dt = λ_in I_OPL − g_A V`` with ``g_A = g0_A + G_σA * E_τA *
   (λ_A V²)`` (Virtual Retina's ``FastGainControl``: ``λ_in`` = opl-amplification__Hz, ``g0_A`` =
   bipolar-inert-leaks__Hz, ``λ_A`` = adaptation-feedback-amplification__Hz).
4. **Ganglion layers** (one per ``<ganglion-layer>``; each cell belongs to one): transient
   ``T_G = δ − w_G E_τG`` on ``V``, then ``N(sign · v)`` (:func:`virtual_retina_nonlinearity`:
   ``i0_G``, ``v0_G``, ``λ_G``), pooled by ``G_σG``, sampled at the cell's ``(y, x)`` → the rate
   ``I_Gang`` (Hz), output ``B×T×N``.
5. **Spikes** (``spikes=True``): a leaky integrate-and-fire per cell, ``dV_m/dt = I_Gang − g_L V_m +
   noise``, threshold 1, reset to 0, refractory period ``~ N(refr_mean, refr_stdev)`` (held at 0).
   Output: spikes per frame (0/1), with a surrogate gradient (``surrogate = "fast_sigmoid"``:
   ``1/(1 + β|V_m − 1|)²``, or ``"straight_through"``: 1), so spike counts can be optimised.

Discretisation (one frame = one step ``dt``; the input is held constant over the frame):

- the linear stages (OPL; without gain-control feedback also the bipolar stage and the ganglion
  transients) are solved together exactly for the held input — one matrix exponential of their ODE
  system per call — so they equal the paper's equations at the frame ends to float32 rounding
  (``tests/test_virtual_retina_paper.py``: rel. RMS ≤ 1.2e-6). Virtual Retina's C++ steps each stage
  once per frame, ``y_t = c y_{t−1} + (1 − c) x_t``, from the previous stage's value of the frame
  before; convis from the previous stage's value at the frame's end: both first order in ``dt/τ``
  (stepped like convis, the OPL is off by 9.5 % rel. RMS at 1 ms, τ_S = 4 ms, on input redrawn every
  frame);
- with gain control the bipolar ODE is stepped per frame with ``g_A`` held (from ``V`` up to the frame
  before: the causal feedback) and the drive ``λ_in I_OPL`` moving linearly from the last frame's value
  to this one's (``I_OPL`` is continuous): ``V_t = E_t − δ + (V_{t−1} − E_{t−1} + δ) e^{−g dt}``, ``E =
  λ_in I_OPL / g``, ``δ = (E_t − E_{t−1})/(g dt)`` — exact for constant ``g``, stable for any ``g dt``;
  the transients see ``V`` move linearly too (first-order hold). Against the paper's equations the
  error is second order in ``dt``: 0.3 % rel. RMS of the rates at 1 ms (parvo, λ_A = 50 Hz), a quarter
  of that at 0.5 ms. (Virtual Retina's ``CondCellMap`` holds the drive: first order.) Since the linear
  stages are exact, λ_A → 0 approaches λ_A = 0 up to that second-order error (at most 1.2 % of the
  s.d. on input redrawn every frame at 1 ms);
- the LIF membrane is stepped as an exact Ornstein–Uhlenbeck update, ``V_m ← I/g + (V_m − I/g) e^{−g
  dt} + σ_V √(1 − e^{−2 g dt}) ξ``, so ``σ_V`` is the stationary s.d. of the free membrane;
- Gaussians are separable sampled kernels of unit sum (radius ``4σ``), edges replicated (Virtual
  Retina blurs recursively with Deriche's filter; convis convolves).

Computation. Blurs commute with the temporal filters, so the surround's blur moves to the input:
with ``u_t = (G_σC L_t, G_σS G_σC L_t)`` (blurred for all frames at once, two banded-matrix products
each), the OPL is a linear ODE on a few states per pixel — the centre cascade and undershoot on
``u_0``, the same on ``u_1``, the surround — whose exact one-frame map ``z_t = A z_{t−1} + B u_t``
(``[A, B]`` from ``exp(dt [[F, G], [0, 0]])``) is read out as ``y_t = C z_t + D u_t``: one batched
matrix product ``[y_t; z_t] = W [z_{t−1}; u_t]`` per frame. Without gain control feedback (``λ_A =
0`` and no gradient wanted for it) the bipolar stage (``dV/dt = λ_in I_OPL − g0_A V``) and the
ganglion transients join the same ODE, which then yields the transients directly; otherwise the OPL
recursion yields ``I_OPL``, one loop over frames steps the bipolar ODE (the ``G_σA`` blur of ``g_A``
as two banded-matrix products per frame) and a second recursion (inputs ``V_{t−1}``, ``V_t``) gives
the transients. ``N``, pooling and the cells'
read-out then act on all frames at once, and the LIF is the last loop over frames. Long inputs run in
blocks of frames (``block_floats`` bounds a block's intermediates) with the state carried.

Every op and random draw is per batch item (one ``torch.Generator`` per item), so an item alone
equals the same item in a batch. The state (the recursions' states, ``V``, ``g_A``, the last drive, membranes,
refractory clocks) can be carried: ``run_in_chunks(x, chunk)`` equals one run — each frame goes
through the same float operations however the frames are split — and the state is detached between
chunks.

Conventions (``conventions=``): ``"paper"`` (default) is the above. ``"convis"`` reproduces convis
0.6.3's conventions, for users who want its numbers: its surround blur and gain-control blur centred one
pixel towards +y/+x (it pads an odd ``k×k`` kernel by ``(k//2 − 1, k//2 + 1)``), its gain-control
conductance map starting at 1 Hz and its bipolar loop (``g_A = g0_A + Σ``, ``Σ ← G_σA (c Σ + (1 − c) λ_A
V²)`` with the ``V`` of the frame before: the state blurred every frame), the drive held over a frame
and the transients seeing ``V`` held. ``"convis_gain_control"`` adds convis' gain-control low-pass as
it computes it: ``c = e^{−dt²/τ_A}`` (τ_A converted to steps, the step left in seconds: 5 s for 5 ms at
1 ms frames) and the input weighted ``1 + c``. convis' other numerics are not reproduced (its 3×3
centre kernel sums to 1.028, first-order stage stepping, the undershoot's input a frame late, the
transient truncated at 72 ms, σ_A fixed at 1 px whatever adaptation-sigma__deg says: set
``adaptation_sigma`` to 0.1° at 10 px/deg). Measured against genuine convis 0.6.3 output
(``tests/test_virtual_retina.py``): "convis" within 3.7–4.4 % rel. RMS (÷ convis' s.d.) per stage
without gain control, "convis_gain_control" within 4.2–7.0 % with λ_A = 50 Hz; "paper" differs from
convis by 45–48 % on structured stimuli (the off-centre surround), 11–20 % on a uniform screen (the
numerics, at the onset from black), and by 130–180 % with gain control on (the 5 s low-pass).

Not modelled: the leaky-heat-equation OPL variant (read, approximated by the separable filters as
convis does), log-polar schemes and microsaccades (ignored with a warning), spiking adaptation.
"""

from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .filters import (
    NO_BLUR_SIGMA,
    blur_with,
    gaussian_kernel_1d,
    sample_at,
    spatial_blur_matrices,
    spatial_gaussian_blur,
    virtual_retina_nonlinearity,
)

DESCRIPTION_VERSION = 1

# name → (XML element, XML attribute, unit, meaning, default). Defaults: Virtual Retina's human parvo
# configuration as convis ships it, at convis' effective resolution (1 ms steps, 10 px/deg, input
# luminance used as given).
RETINA_PARAMETERS: dict[str, tuple[str, str, str, str, float]] = {
    "dt": ("retina", "temporal-step__sec", "s", "time step (one input frame)", 0.001),
    "pixels_per_degree": ("retina", "pixels-per-degree", "px/deg", "spatial resolution of the input", 10.0),
    "input_luminosity_range": ("retina", "input-luminosity-range", "luminance",
                               "input range; the OPL gain is opl_amplification divided by it", 1.0),
    "sigma_center": ("linear-version", "center-sigma__deg", "deg", "σ_C: centre (photoreceptor) Gaussian", 0.05),
    "tau_center": ("linear-version", "center-tau__sec", "s", "τ_C: centre low-pass time constant (peak time)", 0.01),
    "n_center": ("linear-version", "center-n__uint", "1", "n_C: the centre low-pass has n_C + 1 exponential stages", 0),
    "sigma_surround": ("linear-version", "surround-sigma__deg", "deg", "σ_S: surround (horizontal cells) Gaussian", 0.15),
    "tau_surround": ("linear-version", "surround-tau__sec", "s", "τ_S: surround low-pass time constant", 0.004),
    "opl_amplification": ("linear-version", "opl-amplification", "1/luminance",
                          "λ_OPL: OPL gain relative to the input luminosity range", 10.0),
    "opl_relative_weight": ("linear-version", "opl-relative-weight", "1", "w_OPL: surround weight", 1.0),
    "undershoot_weight": ("undershoot", "relative-weight", "1", "w_U: centre undershoot (transient) weight", 0.8),
    "undershoot_tau": ("undershoot", "tau__sec", "s", "τ_U: undershoot time constant", 0.1),
    "bipolar_amplification": ("contrast-gain-control", "opl-amplification__Hz", "Hz",
                              "λ_in: gain of the OPL current into the bipolar ODE", 50.0),
    "bipolar_leak": ("contrast-gain-control", "bipolar-inert-leaks__Hz", "Hz", "g0_A: constant bipolar leak", 50.0),
    "adaptation_sigma": ("contrast-gain-control", "adaptation-sigma__deg", "deg", "σ_A: spatial pooling of the gain control", 0.2),
    "adaptation_tau": ("contrast-gain-control", "adaptation-tau__sec", "s", "τ_A: temporal low-pass of the gain control", 0.005),
    "adaptation_amplification": ("contrast-gain-control", "adaptation-feedback-amplification__Hz", "Hz",
                                 "λ_A: gain-control conductance per V_Bip² (0: no gain control)", 0.0),
}
GANGLION_PARAMETERS: dict[str, tuple[str, str, str, str, float]] = {
    "sign": ("ganglion-layer", "sign", "1", "+1 ON, −1 OFF: sign of the bipolar input", 1.0),
    "transient_tau": ("ganglion-layer", "transient-tau__sec", "s", "τ_G: ganglion transient time constant", 0.02),
    "transient_weight": ("ganglion-layer", "transient-relative-weight", "1", "w_G: ganglion transient weight", 0.7),
    "linear_threshold": ("ganglion-layer", "bipolar-linear-threshold", "V_Bip units", "v0_G: N is linear above it", 0.0),
    "value_at_threshold": ("ganglion-layer", "value-at-linear-threshold__Hz", "Hz", "i0_G: N(v0_G)", 37.0),
    "amplification": ("ganglion-layer", "bipolar-amplification__Hz", "Hz per V_Bip unit", "λ_G: slope of N", 100.0),
    "sigma_pool": ("ganglion-layer", "sigma-pool__deg", "deg", "σ_G: spatial pooling of the ganglion input", 0.0),
    "g_leak": ("spiking-channel", "g-leak__Hz", "Hz", "g_L: membrane leak of the integrate-and-fire", 50.0),
    "sigma_v": ("spiking-channel", "sigma-V", "threshold units", "σ_V: stationary s.d. of the membrane noise", 0.1),
    "refr_mean": ("spiking-channel", "refr-mean__sec", "s", "mean refractory period", 0.003),
    "refr_stdev": ("spiking-channel", "refr-stdev__sec", "s", "s.d. of the refractory period", 0.0),
    "random_init": ("spiking-channel", "random-init", "0/1", "1: membranes start uniform in [0, 1)", 0.0),
}
# Parameters that stay fixed structure (not nn.Parameters).
_STRUCTURAL = {"dt", "pixels_per_degree", "input_luminosity_range", "n_center"}
_SPIKING = ("g_leak", "sigma_v", "refr_mean", "refr_stdev", "random_init")
_LAYER_FITTED = ("transient_tau", "transient_weight", "linear_threshold", "value_at_threshold", "amplification", "sigma_pool")
_TINY = 1e-6
# the ``conventions`` a VirtualRetina follows: the paper's equations, or convis 0.6.3's (module docstring)
CONVENTIONS = ("paper", "convis", "convis_gain_control")


class _SpikeFunction(torch.autograd.Function):
    """Heaviside(u) forward; a surrogate derivative backward."""

    @staticmethod
    def forward(ctx: Any, u: Tensor, kind: str, beta: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.kind, ctx.beta = kind, beta
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (u,) = ctx.saved_tensors
        if ctx.kind == "straight_through":
            return grad, None, None
        return grad / (1.0 + ctx.beta * u.abs()) ** 2, None, None


def spike_with_surrogate(u: Tensor, kind: str = "fast_sigmoid", beta: float = 5.0) -> Tensor:
    """``1`` where ``u ≥ 0`` else ``0``; backward: ``1/(1 + β|u|)²`` (``"fast_sigmoid"``, Zenke &
    Ganguli's SuperSpike) or ``1`` (``"straight_through"``)."""
    if kind not in ("fast_sigmoid", "straight_through"):
        raise ValueError(f"surrogate must be 'fast_sigmoid' or 'straight_through', not {kind!r}")
    return _SpikeFunction.apply(u, kind, float(beta))


# ----------------------------------------------------------------------------- linear recursions
# A block of states of a linear ODE: (rate 1/τ, n, reads): n exponential stages, ds_1/dt = (r − s_1)/τ,
# ds_j/dt = (s_{j−1} − s_j)/τ, driven by r = Σ weight · source, source = ("u", i): input i (held over the
# frame), or ("z", j): state j (of any block, at the same instant). A read-out is a list of reads as well.
_Read = tuple[str, int, Any]
_Block = tuple[Tensor, int, list[_Read]]


class _Linear(NamedTuple):
    """A linear recursion ``z_t = A z_{t−1} + B u_t`` (``k`` states, ``m`` inputs) with read-outs ``y_t =
    C z_t + D u_t`` (``r`` of them), as the one matrix ``W = [[C A, C B + D], [A, B]]`` that maps
    ``[z_{t−1}; u_t]`` to ``[y_t; z_t]``."""

    w: Tensor
    k: int
    m: int
    r: int


def _linear_system(blocks: Sequence[_Block], reads: Sequence[Sequence[_Read]], n_inputs: int, dt: float,
                   first_order: bool = False) -> _Linear:
    """The exact one-frame map of the ODE ``dz/dt = F z + G u`` that ``blocks`` form, and the read-outs
    ``reads`` (computed in float64; differentiable in the rates and the weights). ``u`` is held over the
    frame (zero-order hold): ``[A, B]`` = the first ``k`` rows of ``exp(dt [[F, G], [0, 0]])``; or, with
    ``first_order``, it moves linearly from ``u_{t−1}`` to ``u_t`` (first-order hold): the inputs are then
    ``[u_{t−1}; u_t]`` (``2 n_inputs``) and ``[A, B_0, B_1]`` come from ``exp(dt [[F, G, 0], [0, 0, I],
    [0, 0, 0]])`` acting on ``[z; u_{t−1}; (u_t − u_{t−1})/dt]``."""
    k = sum(n for _, n, _ in blocks)
    m = n_inputs
    size = k + 2 * m  # columns: z, u, du/dt (zero unless first_order)
    unit = torch.eye(size, dtype=torch.float64, device=blocks[0][0].device)

    rows: list[Tensor] = []  # the rows of dt·F and dt·G: ds_j/dt = rate (input_j − s_j)
    for rate, n, block_reads in blocks:
        drive = sum((torch.as_tensor(weight).to(unit) * unit[index + (k if source == "u" else 0)]
                     for source, index, weight in block_reads), unit.new_zeros(size))
        for j in range(n):
            rows.append(rate.to(unit) * dt * ((drive if j == 0 else unit[len(rows) - 1]) - unit[len(rows)]))
    slope_rows = (dt * unit[k + m:] if first_order else unit.new_zeros(m, size))  # du/dt = du
    exp = torch.linalg.matrix_exp(torch.cat([torch.stack(rows), slope_rows, unit.new_zeros(m, size)]))[:k]
    if first_order:  # z_t = A z + E_u u_{t−1} + E_du (u_t − u_{t−1})/dt
        step = torch.cat([exp[:, :k], exp[:, k:k + m] - exp[:, k + m:] / dt, exp[:, k + m:] / dt], 1)
    else:
        step = exp[:, :k + m]
    current = k + (m if first_order else 0)  # the column of u_t in [z_{t−1}; inputs]
    width = step.shape[1]
    out_rows = []
    for read in reads:  # y_t = Σ w z_t[i] + Σ w u_t[i] = (Σ w step[i]) [z_{t−1}; inputs] + Σ w u_t[i]
        out_rows.append(sum((torch.as_tensor(weight).to(unit) * (step[index] if source == "z" else unit[current + index, :width])
                             for source, index, weight in read), unit.new_zeros(width)))
    return _Linear(torch.cat([torch.stack(out_rows), step]), k, width - k, len(out_rows))


def _run_linear(system: _Linear, inputs: Sequence[Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``system`` on ``inputs`` (``m`` tensors ``T×B×P``) from the states ``z`` (``B×k×P``): one batched
    matrix product per frame, ``[y_t; z_t] = W [z_{t−1}; u_t]``. Returns the read-outs ``T×B×r×P`` and the
    last ``z``."""
    w, k, m, r = system
    frames, batch, pixels = inputs[0].shape
    w = w.to(z).expand(batch, -1, -1).contiguous()
    if torch.is_grad_enabled():
        u = torch.stack(list(inputs), 2)
        outputs = []
        for t in range(frames):
            yz = torch.bmm(w, torch.cat([z, u[t]], 1))
            outputs.append(yz[:, :r])
            z = yz[:, r:]
        return (torch.stack(outputs) if outputs else u.new_zeros(0, batch, r, pixels)), z
    # The same products without autograd, in one buffer: frame t holds [y_t; z_t; u_{t+1}].
    buffer = z.new_empty(frames + 1, batch, r + k + m, pixels)
    buffer[0, :, r:r + k] = z
    for i, u in enumerate(inputs):
        buffer[:frames, :, r + k + i] = u
    for t in range(frames):
        torch.bmm(w, buffer[t, :, r:], out=buffer[t + 1, :, :r + k])
    return buffer[1:, :, :r], buffer[frames, :, r:r + k].clone()


def _shifted_blur_matrix(n: int, sigma: Tensor, shift: int) -> Tensor | None:
    """``n×n``: the replicated-edge Gaussian blur (:func:`mei_core.models.filters.gaussian_kernel_1d`) read
    ``shift`` pixels further on: row ``i`` is the blur centred at ``i + shift`` (``None`` below 0.05 px)."""
    if float(sigma.detach()) < NO_BLUR_SIGMA:
        return None
    kernel = gaussian_kernel_1d(sigma)
    radius = kernel.numel() // 2
    rows = torch.arange(n)[:, None].expand(n, kernel.numel())
    cols = (rows + shift + torch.arange(-radius, radius + 1)[None, :]).clamp(0, n - 1)
    flat = kernel.new_zeros(n * n)
    return flat.index_add(0, (rows * n + cols).reshape(-1), kernel.expand(n, -1).reshape(-1)).reshape(n, n)


class VirtualRetina(nn.Module):
    """Virtual Retina on ``H×W`` videos with ``N`` ganglion cells at ``(y, x)`` pixel positions.

    ``forward(x)`` maps ``B×C×T×H×W`` to ``B×T×N`` ganglion rates (Hz), or spikes per frame with
    ``spikes=True``. Continuous parameters of the OPL, the gain control and the ganglion layers are
    ``nn.Parameter``s (fit them with :func:`mei_core.models.retina.fit_parameters`); ``dt``, ``ppd``,
    the input range, ``n_C`` and the spiking parameters are fixed. ``conventions``: ``"paper"``
    (default), ``"convis"`` or ``"convis_gain_control"`` (convis 0.6.3's; module docstring, "Conventions").
    ``block_floats`` (default 2²²)
    bounds the floats a block of frames keeps per pass (batch × pixels × states × frames); blocks
    change the speed only, never a value.
    """

    block_floats = 1 << 22  # 16 MiB of float32: the fastest measured (1 and 16 items, 32 MiB L3)

    def __init__(
        self,
        size: tuple[int, int],
        cells: Sequence[Sequence[float]],
        cell_layers: Sequence[int] | None = None,
        ganglion_layers: Sequence[Mapping[str, Any]] | None = None,
        channel_weights: Sequence[float] = (1.0,),
        initial_luminance: float = 0.0,
        surrogate: str = "fast_sigmoid",
        surrogate_beta: float = 5.0,
        conventions: str = "paper",
        **parameters: float,
    ) -> None:
        super().__init__()
        if conventions not in CONVENTIONS:
            raise ValueError(f"conventions must be one of {list(CONVENTIONS)}, not {conventions!r}")
        self.conventions = conventions
        unknown = set(parameters) - set(RETINA_PARAMETERS)
        if unknown:
            raise ValueError(f"unknown Virtual Retina parameters {sorted(unknown)}; known: {sorted(RETINA_PARAMETERS)}")
        self.size = (int(size[0]), int(size[1]))
        values = {name: float(parameters.get(name, spec[4])) for name, spec in RETINA_PARAMETERS.items()}
        self.dt = values["dt"]
        self.pixels_per_degree = values["pixels_per_degree"]
        self.input_luminosity_range = values["input_luminosity_range"]
        self.n_center = int(values["n_center"])
        if self.n_center < 0:
            raise ValueError("center-n__uint must be >= 0")
        for name, value in values.items():
            if name not in _STRUCTURAL:
                setattr(self, name, nn.Parameter(torch.tensor(value, dtype=torch.float32)))

        layers = [dict(layer) for layer in (ganglion_layers or [{"sign": 1.0}, {"sign": -1.0}])]
        for layer in layers:
            bad = set(layer) - set(GANGLION_PARAMETERS) - {"name"}
            if bad:
                raise ValueError(f"unknown ganglion-layer parameters {sorted(bad)}; known: {sorted(GANGLION_PARAMETERS)}")
        self.layer_names = [str(layer.get("name", f"layer {i}")) for i, layer in enumerate(layers)]

        def column(name: str) -> list[float]:
            return [float(layer.get(name, GANGLION_PARAMETERS[name][4])) for layer in layers]

        self.register_buffer("sign", torch.tensor([1.0 if s >= 0 else -1.0 for s in column("sign")]))
        for name in _LAYER_FITTED:
            setattr(self, name, nn.Parameter(torch.tensor(column(name), dtype=torch.float32)))
        for name in _SPIKING:
            self.register_buffer(name, torch.tensor(column(name), dtype=torch.float32))

        cell_positions = torch.as_tensor(cells, dtype=torch.float32).reshape(-1, 2)
        if cell_positions.shape[0] == 0:
            raise ValueError("a VirtualRetina needs at least one ganglion cell")
        self.register_buffer("cells", cell_positions)
        layer_of = [0] * cell_positions.shape[0] if cell_layers is None else [int(i) for i in cell_layers]
        if len(layer_of) != cell_positions.shape[0] or min(layer_of) < 0 or max(layer_of) >= len(layers):
            raise ValueError("cell_layers needs one valid ganglion-layer index per cell")
        self.register_buffer("cell_layers", torch.tensor(layer_of, dtype=torch.long))
        self.register_buffer("channel_weights", torch.tensor([float(w) for w in channel_weights]))
        self.initial_luminance = float(initial_luminance)
        spike_with_surrogate(torch.zeros(1), surrogate)  # validates the name
        self.surrogate = surrogate
        self.surrogate_beta = float(surrogate_beta)
        self.spikes = False  # forward()'s default: rates

    # ------------------------------------------------------------------------- sizes and units
    @property
    def n_cells(self) -> int:
        return int(self.cells.shape[0])

    @property
    def channels(self) -> int:
        return int(self.channel_weights.shape[0])

    def _pixels(self, degrees: Tensor) -> Tensor:
        return degrees * self.pixels_per_degree

    def _center_stages(self) -> tuple[Tensor, int]:
        """Virtual Retina's ExpCascade(τ_C, n_C): n_C + 1 stages of τ_C/n_C (τ_C itself when n_C = 0)."""
        tau = self.tau_center.clamp_min(_TINY)
        return (tau / self.n_center if self.n_center else tau), self.n_center + 1

    # ------------------------------------------------------------------------- state
    def _bipolar_steady_state(self, current: float) -> float:
        """V solving λ_in I = (g0_A + λ_A V²) V (unique: the right side is increasing)."""
        lam_in, g0, lam_a = (float(p.detach()) for p in (self.bipolar_amplification, self.bipolar_leak,
                                                          self.adaptation_amplification))
        v = lam_in * current / max(g0, _TINY)
        for _ in range(60):  # Newton on a monotone cubic
            f = (g0 + lam_a * v * v) * v - lam_in * current
            v -= f / (g0 + 3 * lam_a * v * v)
        return v

    def initial_state(self, x: Tensor) -> dict[str, Tensor]:
        """The steady state for a uniform screen of ``initial_luminance`` (0 by default: a blank,
        all-zero state), as Virtual Retina starts from a uniform screen. Maps are flattened to ``P =
        H·W`` pixels; ``opl`` holds the OPL recursion's states (see :meth:`_opl_system`)."""
        b, (h, w) = x.shape[0], self.size
        n_layers = self.sign.shape[0]
        lum = self.initial_luminance
        with torch.no_grad():
            amp = float(self.opl_amplification.detach()) / self.input_luminosity_range
            centre_dc = (1.0 - float(self.undershoot_weight.detach())) * lum
            current = amp * (1.0 - float(self.opl_relative_weight.detach())) * centre_dc
            v_bip = self._bipolar_steady_state(current)
        full = lambda *shape, value: x.new_full(shape, value)  # noqa: E731
        n = self.n_center + 1
        # centre cascade, undershoot (on the centre), then the same two on the surround's input, surround
        opl = [lum] * (n + 1) + [lum] * (n + 1) + [centre_dc]
        return {
            "opl": torch.tensor(opl, dtype=x.dtype, device=x.device).view(1, -1, 1).expand(b, -1, h * w).clone(),
            "v_bip": full(b, h * w, value=v_bip),
            "drive": full(b, h * w, value=float(self.bipolar_amplification.detach()) * current),
            "adaptation": full(b, h * w, value=float(self.adaptation_amplification.detach()) * v_bip * v_bip
                               + (0.0 if self.conventions == "paper" else 1.0)),  # convis' map starts at 1 Hz
            "transient": full(b, n_layers, h * w, value=v_bip),
            "membrane": x.new_zeros(b, self.n_cells),
            "refractory": x.new_zeros(b, self.n_cells),
            "started": x.new_zeros(b),
        }

    # ------------------------------------------------------------------------- linear recursions
    def _opl_system(self) -> tuple[list[_Block], int, list[_Read]]:
        """The OPL as blocks on the inputs ``u = (G_σC L, G_σS G_σC L)``, its number of states, and the
        read-out of ``I_OPL``. States: the centre cascade ``E_C`` and the undershoot ``E_τU`` on ``u_0``,
        the same two on ``u_1`` (the surround's input: blurs commute with temporal filters), then the
        surround ``E_τS`` on ``T_U E_C u_1``."""
        tau_c, n = self._center_stages()
        centre, under = 1.0 / tau_c, 1.0 / self.undershoot_tau.clamp_min(_TINY)
        surround = 1.0 / self.tau_surround.clamp_min(_TINY)
        w_u = self.undershoot_weight
        last_a, under_a, last_b, under_b, surround_index = n - 1, n, 2 * n, 2 * n + 1, 2 * n + 2
        blocks = [
            (centre, n, [("u", 0, 1.0)]),
            (under, 1, [("z", last_a, 1.0)]),
            (centre, n, [("u", 1, 1.0)]),
            (under, 1, [("z", last_b, 1.0)]),
            (surround, 1, [("z", last_b, 1.0), ("z", under_b, -w_u)]),
        ]
        amp = self.opl_amplification / self.input_luminosity_range
        current = [("z", last_a, amp), ("z", under_a, -amp * w_u), ("z", surround_index, -amp * self.opl_relative_weight)]
        return blocks, surround_index + 1, current

    def _transient_blocks(self, reads: list[_Read]) -> list[_Block]:
        """One ganglion transient low-pass ``E_τG`` per layer, each reading ``reads`` (V_Bip)."""
        tau = self.transient_tau.clamp_min(_TINY)
        return [(1.0 / tau[i], 1, reads) for i in range(tau.shape[0])]

    def _transient_reads(self, v_bip: tuple[str, int], first: int) -> list[list[_Read]]:
        """``sign · (V_Bip − w_G E_τG V_Bip)`` per layer; the low-passes are states ``first, first + 1, …``."""
        return [[(*v_bip, self.sign[i]), ("z", first + i, -self.sign[i] * self.transient_weight[i])]
                for i in range(self.sign.shape[0])]

    def _plan(self, maps: bool = False) -> dict[str, Any]:
        """What the loops over frames need from the parameters, computed once per call and shared by
        its blocks: the linear systems (one without gain-control feedback, else two around the bipolar
        ODE), the gain control's constants and blur matrices, ``N``'s parameters per layer. ``maps``:
        the one system also reads out I_OPL and V_Bip (for :meth:`stage_outputs`)."""
        blocks, k_opl, current = self._opl_system()
        n_layers = self.sign.shape[0]
        # With λ_A = 0 (and no gradient wanted for it) g_A ≡ g0_A: the bipolar stage is linear too.
        # convis' conventions: its conductance map starts at 1 Hz, so the bipolar loop always runs.
        feedback = bool(self.adaptation_amplification.detach() != 0) or self.conventions != "paper" or (
            torch.is_grad_enabled() and self.adaptation_amplification.requires_grad)
        tau_a = self.adaptation_tau.clamp_min(_TINY)
        if self.conventions == "convis_gain_control":
            # convis 0.6.3's Bipolar: τ_A converted to steps but the step left in seconds (c = e^{−dt/(τ_A/dt)}),
            # and the input weighted 1 + c instead of 1 − c (the recursive form of its OPL filters, unnormalised).
            adaptation_decay = torch.exp(-self.dt * self.dt / tau_a)
            adaptation_gain = 1.0 + adaptation_decay
        else:
            adaptation_decay = torch.exp(-self.dt / tau_a)
            adaptation_gain = 1.0 - adaptation_decay
        plan: dict[str, Any] = {"feedback": feedback, "k_opl": k_opl, "adaptation_decay": adaptation_decay}
        if not feedback:
            # dV/dt = g0_A (λ_in I_OPL / g0_A − V), then the transients: one recursion.
            g = self.bipolar_leak.clamp_min(_TINY)
            blocks = blocks + [(g, 1, [(s, i, c * self.bipolar_amplification / g) for s, i, c in current])]
            reads = self._transient_reads(("z", k_opl), k_opl + 1) + ([current, [("z", k_opl, 1.0)]] if maps else [])
            plan["linear"] = _linear_system(blocks + self._transient_blocks([("z", k_opl, 1.0)]), reads, 2, self.dt)
            # λ_in I_OPL from the OPL states (the bipolar drive a later call with feedback starts from)
            plan["drive_row"] = torch.stack([sum((self.bipolar_amplification * w for _, i, w in current if i == j),
                                                 torch.zeros(())) for j in range(k_opl)])
        else:
            plan["opl"] = _linear_system(blocks, [current], 2, self.dt)
            # V_Bip moves continuously: the transients see it linear over a frame (convis: sampled, held)
            plan["transient"] = _linear_system(self._transient_blocks([("u", 0, 1.0)]), self._transient_reads(("u", 0), 0),
                                               1, self.dt, first_order=self.conventions == "paper")
            plan["gain"] = adaptation_gain * self.adaptation_amplification
            plan["blur"] = self._blur_matrices(self.adaptation_sigma)
        plan["pool"] = bool((self._pixels(self.sigma_pool.detach()) >= NO_BLUR_SIGMA).any())
        plan["nonlinearity"] = tuple(p.view(n_layers, 1) for p in (self.value_at_threshold, self.linear_threshold,
                                                                    self.amplification))
        return plan

    # ------------------------------------------------------------------------- stages
    def _luminance(self, x: Tensor) -> Tensor:
        """``B×C×T×H×W`` → luminance ``T×B×H×W``."""
        if x.dim() != 5 or x.shape[1] != self.channels or tuple(x.shape[3:]) != self.size:
            raise ValueError(f"expected a B×C×T×H×W video with C={self.channels}, H×W={self.size}, got {tuple(x.shape)}")
        return torch.einsum("bcthw,c->tbhw", x, self.channel_weights.to(x.dtype))

    def _gain_control(self, drive: Tensor, v: Tensor, adaptation: Tensor, before: Tensor, plan: dict[str, Any]
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """The bipolar ODE over frames: ``drive`` (``λ_in I_OPL``, T×B×P; ``before``: the drive of the frame
        before, B×P) → V_Bip (T×B×P) and the last ``V``, ``Σ = λ_A E_τA V²`` (``g_A = g0_A + G_σA Σ``).
        ``g_A`` is held over a frame; the drive moves linearly from the last frame's value to this one's
        (``I_OPL`` is continuous), and ``V`` takes the exact solution of that. With convis' conventions
        its loop instead: the drive held at this frame's value, ``g_A = g0_A + Σ`` and ``Σ ← G_σA (c Σ +
        gain λ_A V²)`` with the ``V`` of the frame before (convis blurs the low-pass' state every frame,
        Virtual Retina its input once)."""
        frames, b, pixels = drive.shape
        h, w = self.size
        before = before.reshape(b, h, w)
        rows, cols = plan["blur"]
        rows, cols_t = (None, None) if rows is None else (rows.to(drive), cols.t().to(drive).contiguous())
        decay, gain, leak, minus_dt = plan["adaptation_decay"], plan["gain"], self.bipolar_leak, -self.dt
        # g_A ≥ g0_A > 0 when λ_A ≥ 0 and Σ ≥ 0 (the blur's weights are ≥ 0): the clamp can go
        positive = bool(leak.detach() > _TINY) and bool(self.adaptation_amplification.detach() >= 0) and bool(
            (adaptation.detach() >= 0).all())
        v, adaptation = v.reshape(b, h, w), adaptation.reshape(b, h, w)
        blur = (lambda m: m) if rows is None else (lambda m: torch.matmul(rows, torch.matmul(m, cols_t)))  # noqa: E731
        convis = self.conventions != "paper"
        outputs = []
        for frame in drive.view(frames, b, h, w).unbind(0):
            g = leak + (adaptation if convis else blur(adaptation))
            if not positive:
                g = g.clamp_min(_TINY)
            target = frame / g
            if convis:  # V ← E + (V − E) e^{−g dt}, E = drive / g
                v, last_v = torch.addcmul(target, v - target, torch.exp(g * minus_dt)), v
                adaptation = blur(torch.addcmul(adaptation * decay, last_v * last_v, gain))
            else:
                # dV/dt = d(s) − g V, d linear from d_{t−1} to d_t: V = E_t − δ + (V − E_{t−1} + δ) e^{−g dt},
                # E = d/g, δ = (E_t − E_{t−1})/(g dt)
                slope = (frame - before) / (g * g * self.dt)
                v = (target - slope) + (v - (before / g - slope)) * torch.exp(g * minus_dt)
                adaptation = torch.addcmul(adaptation * decay, v * v, gain)
            before = frame
            outputs.append(v)
        voltages = torch.stack(outputs).view(frames, b, pixels) if outputs else drive
        return voltages, v.reshape(b, pixels), adaptation.reshape(b, pixels)

    def _blur_matrices(self, sigma_degrees: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The matrices of a Gaussian blur of ``sigma_degrees`` on ``H×W`` maps (edges replicated). With
        convis' conventions it is centred one pixel towards +y and +x, as convis 0.6.3 pads an odd ``k×k``
        kernel by ``(k//2 − 1, k//2 + 1)`` (``Conv3d.kernel_padding``, ``Conv2d.kernel_padding``): convis'
        blurred ``S(y, x)`` is the centred ``S(y + 1, x + 1)``."""
        sigma = self._pixels(sigma_degrees)
        if self.conventions == "paper":
            return spatial_blur_matrices(self.size, sigma)
        return _shifted_blur_matrix(self.size[0], sigma, 1), _shifted_blur_matrix(self.size[1], sigma, 1)

    def _run(self, x: Tensor, state: dict[str, Tensor], plan: dict[str, Any], maps: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """``x`` (B×C×T×H×W) → ganglion rates ``T×B×N`` (Hz) and the new state; ``maps`` (if given, and
        the plan made for maps) receives I_OPL and V_Bip (``T×B×P``) and the pooled ganglion maps (``T×B×L×P``)."""
        lum = self._luminance(x)
        frames, b, h, w = lum.shape
        n_layers, k_opl = self.sign.shape[0], plan["k_opl"]
        centre = spatial_gaussian_blur(lum, self._pixels(self.sigma_center))
        inputs = [centre.reshape(frames, b, h * w),
                  blur_with(centre, *self._blur_matrices(self.sigma_surround)).reshape(frames, b, h * w)]
        new = dict(state)
        if not plan["feedback"]:
            z = torch.cat([state["opl"], state["v_bip"][:, None], state["transient"]], 1)
            out, z = _run_linear(plan["linear"], inputs, z)
            new["opl"], new["v_bip"], new["transient"] = z[:, :k_opl], z[:, k_opl], z[:, k_opl + 1:]
            new["adaptation"] = state["adaptation"] * plan["adaptation_decay"] ** frames  # λ_A = 0: Σ only decays
            new["drive"] = torch.einsum("k,bkp->bp", plan["drive_row"].to(z), new["opl"])
            if maps is not None:
                maps["opl"], maps["bipolar"] = out[:, :, n_layers], out[:, :, n_layers + 1]
            transients = out[:, :, :n_layers]
        else:
            current, new["opl"] = _run_linear(plan["opl"], inputs, state["opl"])
            drive = self.bipolar_amplification * current[:, :, 0]
            v_bip, new["v_bip"], new["adaptation"] = self._gain_control(
                drive, state["v_bip"], state["adaptation"], state["drive"], plan)
            new["drive"] = drive[-1] if frames else state["drive"]
            held = [v_bip] if plan["transient"].m == 1 else [torch.cat([state["v_bip"][None], v_bip[:-1]]), v_bip]
            transients, new["transient"] = _run_linear(plan["transient"], held, state["transient"])
            if maps is not None:
                maps["opl"], maps["bipolar"] = current[:, :, 0], v_bip
        ganglion = virtual_retina_nonlinearity(transients, *plan["nonlinearity"])
        if plan["pool"]:
            ganglion = torch.stack([spatial_gaussian_blur(ganglion[:, :, i].reshape(frames, b, h, w),
                                                          self._pixels(self.sigma_pool[i])).reshape(frames, b, h * w)
                                    for i in range(n_layers)], dim=2)
        if maps is not None:
            maps["ganglion"] = ganglion
        rates = sample_at(ganglion.view(frames, b, n_layers, h, w), self.cells, planes=self.cell_layers)
        return rates, new

    def _spikes(self, rates: Tensor, state: dict[str, Tensor], generators: Sequence[torch.Generator] | None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """Rates T×B×N (Hz) → spikes T×B×N (0/1) from the noisy LIF, per item generators.

        Each item draws its noise for all frames of the call at once, ``⌈draws/16⌉·16`` normals per
        frame: torch's CPU sampler fills blocks of 16 from uniforms taken in order, so this is the
        stream of one draw per frame, and a chunked run sees the same noise as one run."""
        frames, b = rates.shape[:2]
        layer = self.cell_layers
        g_leak, sigma_v = self.g_leak[layer], self.sigma_v[layer]
        refr_mean, refr_stdev = self.refr_mean[layer], self.refr_stdev[layer]
        voltage_noise, refractory_noise = bool((sigma_v > 0).any()), bool((refr_stdev > 0).any())
        noisy = voltage_noise or refractory_noise or bool((self.random_init[layer] > 0).any())
        if noisy and (generators is None or len(generators) != b):
            raise ValueError("noisy spiking needs one torch.Generator per batch item (generators=[...])")
        membrane, refractory, started = state["membrane"], state["refractory"], state["started"]
        if noisy and bool((started == 0).any()):
            start = torch.stack([torch.rand(self.n_cells, generator=g) for g in generators]).to(rates)
            init = torch.where(self.random_init[layer] > 0, start, torch.zeros_like(start))
            membrane = torch.where(started[:, None] == 0, init, membrane)
        started = torch.ones_like(started)
        decay = torch.exp(-g_leak * self.dt)
        # V_m ← decay V_m + drive_t, drive_t = (1 − decay) I_t / g_L + σ_V √(1 − decay²) ξ_t
        drive = rates * ((1.0 - decay) / g_leak)
        refr_draw = refr_mean.clamp_min(0.0).expand(b, -1)
        n_draws = self.n_cells * (int(voltage_noise) + int(refractory_noise))
        if n_draws:
            width = 16 * -(-n_draws // 16)
            draws = torch.stack([torch.randn(frames, width, generator=g) for g in generators], 1).to(rates)
            if voltage_noise:
                drive = torch.addcmul(drive, draws[..., :self.n_cells], sigma_v * torch.sqrt(1.0 - decay * decay))
            if refractory_noise:
                refr_draw = (refr_mean + refr_stdev * draws[..., n_draws - self.n_cells:n_draws]).clamp_min(0.0)
        free_below, dt, zero = 0.5 * self.dt, self.dt, rates.new_zeros(())
        recording = torch.is_grad_enabled()
        outputs = []
        for t in range(frames):
            free = refractory < free_below
            v = torch.where(free, torch.addcmul(drive[t], membrane, decay), zero)
            if recording:
                spike = spike_with_surrogate(v - 1.0, self.surrogate, self.surrogate_beta) * free.to(v.dtype)
                fired = spike.detach() > 0
            else:  # the same values without the autograd Function's per-call overhead
                spike = fired = v >= 1.0
            # Reset and refractory clocks are not differentiated (the usual detached reset).
            membrane = torch.where(fired, zero, v)
            refractory = torch.where(fired, refr_draw[t] if refractory_noise else refr_draw, refractory - dt)
            outputs.append(spike)
        new = dict(state)
        new["membrane"], new["refractory"], new["started"] = membrane, refractory, started
        return (torch.stack(outputs).to(rates.dtype) if outputs else rates), new

    # ------------------------------------------------------------------------- running
    def step(
        self,
        x: Tensor,
        state: dict[str, Tensor] | None = None,
        spikes: bool | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Run ``x`` (``B×C×T×H×W``) from ``state`` (fresh when ``None``); returns ``B×T×N`` and the
        state after ``x`` (not detached)."""
        state = self.initial_state(x) if state is None else state
        use_spikes = self.spikes if spikes is None else spikes
        plan = self._plan()
        # Blocks of frames whose intermediates stay small (cache-sized); carrying the state makes this
        # equal one pass (see run_in_chunks).
        h, w = self.size
        per_frame = x.shape[0] * h * w * (2 * self.n_center + 6 + self.sign.shape[0])
        block = max(1, self.block_floats // max(per_frame, 1))
        outputs = []
        for start in range(0, x.shape[2], block) if x.shape[2] else [0]:
            out, state = self._run(x[:, :, start:start + block], state, plan)
            if use_spikes:
                out, state = self._spikes(out, state, generators)
            outputs.append(out.transpose(0, 1))
        return torch.cat(outputs, 1), state

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """The maps of each stage for ``x`` (``B×C×T×H×W``) from a fresh state: ``opl`` (I_OPL,
        ``B×T×H×W``), ``bipolar`` (V_Bip, ``B×T×H×W``), ``ganglion`` (pooled N(sign·T_G V_Bip) per
        ganglion layer, ``B×L×T×H×W``, Hz) and ``rates`` (``B×T×N``)."""
        maps: dict[str, Tensor] = {}
        rates, _ = self._run(x, self.initial_state(x), self._plan(maps=True), maps)
        frames, b = rates.shape[:2]
        h, w = self.size
        return {"opl": maps["opl"].transpose(0, 1).reshape(b, frames, h, w),
                "bipolar": maps["bipolar"].transpose(0, 1).reshape(b, frames, h, w),
                "ganglion": maps["ganglion"].permute(1, 2, 0, 3).reshape(b, -1, frames, h, w),
                "rates": rates.transpose(0, 1)}

    def forward(
        self,
        x: Tensor,
        data_key: str | None = None,
        spikes: bool | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """``B×C×T×H×W`` → ``B×T×N`` rates (Hz), or spikes per frame with ``spikes=True`` (needs one
        generator per item when the spiking is noisy). Starts from a fresh state on every call;
        ``data_key`` is accepted and ignored (openretina's signature)."""
        out, _ = self.step(x, None, spikes=spikes, generators=generators)
        return out

    def run_in_chunks(
        self,
        x: Tensor,
        chunk_frames: int,
        spikes: bool | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """``forward(x)`` computed ``chunk_frames`` frames at a time, carrying the whole state
        (detached between chunks: no graph spans chunks). Random draws are per frame, so spikes
        equal a one-shot run with generators seeded alike."""
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        state = None
        outputs = []
        for start in range(0, x.shape[2], chunk_frames):
            out, state = self.step(x[:, :, start:start + chunk_frames], state, spikes=spikes, generators=generators)
            state = {key: value.detach() for key, value in state.items()}
            outputs.append(out)
        return torch.cat(outputs, dim=1)

    # ------------------------------------------------------------------------- ground truth
    def linear_kernel(self, cell: int, frames: int = 40) -> Tensor:
        """``frames×C×H×W``: the cell's linear spatio-temporal kernel around a blank screen (index 0 =
        lag 0): the gradient of its rate at the last frame with respect to a zero input. At zero input
        ``V_Bip = 0`` so the gain-control feedback (∝ V²) has no first-order effect; the kernel is the
        OPL ⊗ bipolar low-pass ⊗ ganglion transient ⊗ pooling, times ``N'``."""
        x = torch.zeros(1, self.channels, frames, *self.size, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self(x)[0, -1, cell], x)
        return grad[0].permute(1, 0, 2, 3).flip(0).detach()

    def spatial_filter(self, cell: int, frames: int = 40) -> Tensor:
        """``C×H×W``: the leading spatial component (SVD) of :meth:`linear_kernel`, unit norm, signed so
        that the cell's own pixel has the sign of its layer (positive for ON cells)."""
        kernel = self.linear_kernel(cell, frames)
        u, s, vh = torch.linalg.svd(kernel.reshape(frames, -1).double(), full_matrices=False)
        spatial = vh[0].reshape(self.channels, *self.size)
        y, x = (int(round(float(v))) for v in self.cells[cell])
        flip = torch.sign(spatial[:, y, x].sum()) * float(self.sign[self.cell_layers[cell]])
        return (spatial * (flip if flip != 0 else 1.0)).float()

    def temporal_kernel(self, cell: int, frames: int = 40) -> Tensor:
        """``frames``: the temporal component matching :meth:`spatial_filter` (index 0 = lag 0), so that
        ``linear_kernel ≈ temporal ⊗ spatial``."""
        kernel = self.linear_kernel(cell, frames).reshape(frames, -1).double()
        return (kernel @ self.spatial_filter(cell, frames).reshape(-1).double()).float()

    def center_surround(self, cell: int) -> dict[str, Tensor]:
        """The cell's known OPL spatial profiles (``H×W``, unit sum, at its position): ``center`` =
        G_σC, ``surround`` = G_σC * G_σS (the surround acts on the blurred centre signal)."""
        y = torch.arange(self.size[0], dtype=torch.float64)[:, None] - float(self.cells[cell, 0])
        x = torch.arange(self.size[1], dtype=torch.float64)[None, :] - float(self.cells[cell, 1])
        sc = float(self._pixels(self.sigma_center.detach()))
        ss = math.hypot(sc, float(self._pixels(self.sigma_surround.detach())))

        def gaussian(sigma: float) -> Tensor:
            g = torch.exp(-(x * x + y * y) / (2 * sigma * sigma))
            return g / g.sum()

        return {"center": gaussian(sc).float(), "surround": gaussian(ss).float()}

    # ------------------------------------------------------------------------- description
    def _retina_values(self) -> dict[str, float]:
        values = {"dt": self.dt, "pixels_per_degree": self.pixels_per_degree,
                  "input_luminosity_range": self.input_luminosity_range, "n_center": self.n_center}
        for name in RETINA_PARAMETERS:
            if name not in values:
                values[name] = float(getattr(self, name).detach().double())
        return values

    def _layer_values(self, i: int) -> dict[str, float]:
        return {name: float(getattr(self, name)[i].detach().double()) for name in GANGLION_PARAMETERS}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description: every parameter with its value, unit, Virtual Retina XML attribute
        and meaning; the ganglion layers; the cells (``y``, ``x`` in pixels, layer index)."""

        def entry(spec: tuple[str, str, str, str, float], value: float) -> dict[str, Any]:
            element, attribute, unit, meaning, _ = spec
            return {"value": value, "unit": unit, "xml": f"{element}/@{attribute}", "meaning": meaning}

        retina = self._retina_values()
        return {
            "model": "mei_core.models.virtual_retina.VirtualRetina",
            "version": DESCRIPTION_VERSION,
            "size": list(self.size),
            "channel_weights": self.channel_weights.double().tolist(),
            "initial_luminance": self.initial_luminance,
            "surrogate": {"kind": self.surrogate, "beta": self.surrogate_beta},
            "conventions": self.conventions,
            "parameters": {name: entry(spec, retina[name]) for name, spec in RETINA_PARAMETERS.items()},
            "ganglion_layers": [
                {"name": self.layer_names[i],
                 **{name: entry(spec, self._layer_values(i)[name]) for name, spec in GANGLION_PARAMETERS.items()}}
                for i in range(self.sign.shape[0])
            ],
            "cells": [{"y": float(p[0]), "x": float(p[1]), "layer": int(layer)}
                      for p, layer in zip(self.cells.double().tolist(), self.cell_layers.tolist())],
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> VirtualRetina:
        """The model ``describe()`` described (identical parameters, hence identical outputs)."""
        cells = description["cells"]
        return cls(
            size=tuple(description["size"]),
            cells=[[c["y"], c["x"]] for c in cells],
            cell_layers=[c["layer"] for c in cells],
            ganglion_layers=[{"name": layer.get("name", f"layer {i}"),
                              **{k: v["value"] for k, v in layer.items() if k != "name"}}
                             for i, layer in enumerate(description["ganglion_layers"])],
            channel_weights=description.get("channel_weights", [1.0]),
            initial_luminance=float(description.get("initial_luminance", 0.0)),
            surrogate=description.get("surrogate", {}).get("kind", "fast_sigmoid"),
            surrogate_beta=float(description.get("surrogate", {}).get("beta", 5.0)),
            conventions=str(description.get("conventions", "paper")),
            **{name: entry["value"] for name, entry in description["parameters"].items()},
        )

    # ------------------------------------------------------------------------- Virtual Retina XML
    def to_xml(self) -> str:
        """The Virtual Retina parameter file (``<retina-description-file><retina …>``); cells are
        listed as ``<all-units>`` with offsets in degrees from the image centre."""
        root = ET.Element("retina-description-file")
        retina_values = self._retina_values()
        elements: dict[str, ET.Element] = {}
        retina = ET.SubElement(root, "retina")
        elements["retina"] = retina
        opl = ET.SubElement(retina, "outer-plexiform-layer")
        elements["linear-version"] = ET.SubElement(opl, "linear-version")
        elements["undershoot"] = ET.SubElement(elements["linear-version"], "undershoot")
        elements["contrast-gain-control"] = ET.SubElement(retina, "contrast-gain-control")
        for name, (element, attribute, *_rest) in RETINA_PARAMETERS.items():
            value = retina_values[name]
            elements[element].set(attribute, str(int(value)) if name == "n_center" else repr(float(value)))
        elements["linear-version"].set("leaky-heat-equation", "0")
        centre_y, centre_x = (self.size[0] - 1) / 2, (self.size[1] - 1) / 2
        for i in range(self.sign.shape[0]):
            layer = ET.SubElement(retina, "ganglion-layer")
            spiking = ET.SubElement(layer, "spiking-channel")
            values = self._layer_values(i)
            for name, (element, attribute, *_rest) in GANGLION_PARAMETERS.items():
                target = layer if element == "ganglion-layer" else spiking
                value = values[name]
                integral = name in ("sign", "random_init")
                target.set(attribute, str(int(value)) if integral else repr(float(value)))
            units = ET.SubElement(spiking, "all-units")
            for index in torch.nonzero(self.cell_layers == i).flatten().tolist():
                y, x = (float(v) for v in self.cells[index].double())
                unit = ET.SubElement(units, "unit")
                unit.set("x-offset__deg", repr((x - centre_x) / self.pixels_per_degree))
                unit.set("y-offset__deg", repr((y - centre_y) / self.pixels_per_degree))
                unit.set("mvaspike-id", str(index))
        ET.indent(root)
        return ET.tostring(root, encoding="unicode")

    @classmethod
    def from_xml(cls, source: str | Path, size: tuple[int, int] = (50, 50), **kwargs: Any) -> VirtualRetina:
        """A model from a Virtual Retina parameter file (a path, or the XML text itself) for ``size``
        (H×W) videos. Cells come from each spiking channel's ``<all-units>`` (offsets in degrees from
        the image centre), else its ``<square-array>`` (a grid of spacing 1/density, a size of 0 fills
        the image) or ``<circular-array>`` (the same grid within the diameter). ``kwargs`` go to the
        constructor (``channel_weights``, ``initial_luminance``, …)."""
        text = str(source)
        if not text.lstrip().startswith("<"):
            text = Path(source).read_text()
        root = ET.fromstring(text)
        retina = root if root.tag == "retina" else root.find("retina")
        if retina is None:
            raise ValueError("no <retina> element in the Virtual Retina file")
        for ignored in ("log-polar-scheme", "basic-microsaccade-generator"):
            if retina.find(ignored) is not None or root.find(ignored) is not None:
                warnings.warn(f"<{ignored}> is not modelled and is ignored", stacklevel=2)
        linear = retina.find("outer-plexiform-layer/linear-version")
        if linear is None:
            raise ValueError("only the <outer-plexiform-layer><linear-version> OPL is supported")
        if float(linear.get("leaky-heat-equation", "0")):
            warnings.warn("leaky-heat-equation=1: approximated by separable Gaussian × exponential filters "
                          "(as convis does)", stacklevel=2)
        found = {"retina": retina, "linear-version": linear, "undershoot": linear.find("undershoot"),
                 "contrast-gain-control": retina.find("contrast-gain-control")}
        parameters: dict[str, float] = {}
        for name, (element, attribute, *_rest) in RETINA_PARAMETERS.items():
            node = found.get(element)
            if node is not None and node.get(attribute) is not None:
                parameters[name] = float(node.get(attribute))
        if found["undershoot"] is None:
            parameters["undershoot_weight"] = 0.0
        if found["contrast-gain-control"] is None:  # no CGC: V_Bip follows I_OPL (λ_in = g0_A, λ_A = 0)
            parameters.update(bipolar_amplification=1.0, bipolar_leak=1.0, adaptation_amplification=0.0)
        ppd = parameters.get("pixels_per_degree", RETINA_PARAMETERS["pixels_per_degree"][4])
        h, w = int(size[0]), int(size[1])
        centre_y, centre_x = (h - 1) / 2, (w - 1) / 2
        layers, cells, cell_layers, ids = [], [], [], []
        for index, layer in enumerate(retina.findall("ganglion-layer")):
            spiking = layer.find("spiking-channel")
            values: dict[str, Any] = {"name": layer.get("name", f"layer {index}")}
            for name, (element, attribute, *_rest) in GANGLION_PARAMETERS.items():
                node = layer if element == "ganglion-layer" else spiking
                if node is not None and node.get(attribute) is not None:
                    values[name] = float(node.get(attribute))
            layers.append(values)
            positions, unit_ids = _units_of(spiking, (h, w), ppd) if spiking is not None else ([[centre_y, centre_x]], [None])
            cells += positions
            cell_layers += [index] * len(positions)
            ids += unit_ids
        if not layers:
            raise ValueError("no <ganglion-layer> in the Virtual Retina file")
        if all(i is not None for i in ids):  # cells in mvaspike-id order (to_xml writes the cell index)
            order = sorted(range(len(ids)), key=lambda k: ids[k])
            cells, cell_layers = [cells[k] for k in order], [cell_layers[k] for k in order]
        return cls(size=(h, w), cells=cells, cell_layers=cell_layers, ganglion_layers=layers, **parameters, **kwargs)


def _units_of(spiking: ET.Element, size: tuple[int, int], ppd: float) -> tuple[list[list[float]], list[int | None]]:
    """Cell positions ``[[y, x], …]`` (pixels) of one spiking channel and their mvaspike ids."""
    h, w = size
    centre_y, centre_x = (h - 1) / 2, (w - 1) / 2
    units = spiking.find("all-units")
    if units is not None and units.findall("unit"):
        listed = units.findall("unit")
        positions = [[centre_y + float(u.get("y-offset__deg", 0)) * ppd, centre_x + float(u.get("x-offset__deg", 0)) * ppd]
                     for u in listed]
        return positions, [int(u.get("mvaspike-id")) if u.get("mvaspike-id") is not None else None for u in listed]
    square, circle = spiking.find("square-array"), spiking.find("circular-array")
    if square is not None:
        density = float(square.get("uniform-density__inv-deg", 1.0))
        extent_x = float(square.get("size-x__deg", 0)) or w / ppd
        extent_y = float(square.get("size-y__deg", 0)) or h / ppd
        radius = None
    elif circle is not None:
        density = float(circle.get("fovea-density__inv-deg", 1.0))
        diameter = float(circle.get("diameter__deg", 0)) or min(h, w) / ppd
        extent_x = extent_y = diameter
        radius = diameter / 2
    else:
        return [[centre_y, centre_x]], [None]
    spacing = ppd / density  # pixels between neighbouring cells
    ny, nx = max(1, int(round(extent_y * density))), max(1, int(round(extent_x * density)))
    positions = []
    for i in range(ny):
        for j in range(nx):
            y = centre_y + (i - (ny - 1) / 2) * spacing
            x = centre_x + (j - (nx - 1) / 2) * spacing
            inside = radius is None or math.hypot(y - centre_y, x - centre_x) <= radius * ppd + 1e-9
            if inside and 0 <= y <= h - 1 and 0 <= x <= w - 1:
                positions.append([y, x])
    positions = positions or [[centre_y, centre_x]]
    return positions, [None] * len(positions)


# ----------------------------------------------------------------------------- demo and builders
DEMO_PARAMETERS: dict[str, float] = {
    # 100 frames/s, 20 px/deg: σ_C = 1.2 px, σ_S = 3 px on 16–32 px videos of contrast-coded input.
    "dt": 0.01, "pixels_per_degree": 20.0, "input_luminosity_range": 1.0,
    "sigma_center": 0.06, "tau_center": 0.02, "n_center": 2, "sigma_surround": 0.15, "tau_surround": 0.01,
    "opl_amplification": 1.0, "opl_relative_weight": 0.8, "undershoot_weight": 0.5, "undershoot_tau": 0.08,
    "bipolar_amplification": 50.0, "bipolar_leak": 50.0, "adaptation_sigma": 0.1, "adaptation_tau": 0.03,
    "adaptation_amplification": 50.0,
}
# Ganglion rates of ~10 Hz at rest and ~100 Hz for a preferred spot of contrast 1; the LIF (τ_m =
# 50 ms) is silent at rest (10/20 < 1) and fires for drives above 20 Hz.
DEMO_LAYER: dict[str, float] = {"transient_tau": 0.05, "transient_weight": 0.6, "linear_threshold": 0.0,
                                "value_at_threshold": 10.0, "amplification": 200.0, "sigma_pool": 0.0,
                                "g_leak": 20.0, "sigma_v": 0.0, "refr_mean": 0.003, "refr_stdev": 0.0,
                                "random_init": 0.0}


def demo_virtual_retina(n_cells: int = 8, size: Sequence[int] = (16, 16), seed: int = 0, channels: int = 2) -> VirtualRetina:
    """A demo population with known ground truth: cells alternate ON (even index) and OFF (odd),
    at integer pixel positions drawn uniformly in the inner 60 % of the image (one generator seeded
    with ``seed``); ``channels`` input channels weighted equally. Parameters: ``DEMO_PARAMETERS`` and
    ``DEMO_LAYER`` (deterministic spiking)."""
    g = torch.Generator().manual_seed(int(seed))
    h, w = int(size[0]), int(size[1])
    ys = torch.randint(int(round(0.2 * (h - 1))), int(round(0.8 * (h - 1))) + 1, (n_cells,), generator=g)
    xs = torch.randint(int(round(0.2 * (w - 1))), int(round(0.8 * (w - 1))) + 1, (n_cells,), generator=g)
    layers = [{"name": "ON", "sign": 1.0, **DEMO_LAYER}, {"name": "OFF", "sign": -1.0, **DEMO_LAYER}]
    return VirtualRetina(size=(h, w), cells=torch.stack([ys, xs], 1).tolist(), cell_layers=[i % 2 for i in range(n_cells)],
                         ganglion_layers=layers, channel_weights=[1.0 / channels] * channels, **DEMO_PARAMETERS)


def save_virtual_retina(model: VirtualRetina, path: str | Path) -> None:
    """Write ``model.describe()`` as JSON to ``path`` (readable by :func:`load_virtual_retina`)."""
    Path(path).write_text(json.dumps(model.describe(), indent=1))


def load_virtual_retina(description: str | Path, conventions: str | None = None) -> VirtualRetina:
    """Pipeline builder: the ``VirtualRetina`` described by the JSON file ``description`` (from
    :func:`save_virtual_retina`), or by a Virtual Retina XML file (``*.xml``, 50×50 px); use as
    ``{builder: mei_core.models.virtual_retina.load_virtual_retina, builder_kwargs: {description: path}}``.
    ``conventions`` (``"paper"``, ``"convis"``, ``"convis_gain_control"``; see :class:`VirtualRetina`)
    overrides the description's (XML: ``"paper"``)."""
    path = Path(description)
    if path.suffix.lower() == ".xml":
        return VirtualRetina.from_xml(path, conventions=conventions or "paper")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"cannot read the Virtual Retina description {str(description)!r}: {error}") from error
    if conventions is not None:
        data = {**data, "conventions": conventions}
    try:
        return VirtualRetina.from_description(data)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{str(description)!r} is not a Virtual Retina description: missing or bad {error}") from error
