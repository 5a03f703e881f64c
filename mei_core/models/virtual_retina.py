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

- every exponential cascade is stepped exactly (zero-order hold, :mod:`mei_core.models.filters`): a
  unit step gives the continuous step response at the frame ends to float precision. Virtual Retina
  uses ``y_t = c y_{t−1} + (1 − c) x_t`` per stage, which is the same for one stage and first-order
  close for cascades;
- the bipolar ODE is stepped by exponential Euler with ``g_A`` frozen over the step —
  ``V_t = E + (V_{t−1} − E) e^{−g dt}``, ``E = λ_in I_OPL,t / g`` (Virtual Retina's ``CondCellMap``
  does the same; exact for constant ``I``, ``g``, stable for any ``g dt``). ``g_A`` at step ``t``
  uses ``V`` up to ``t − 1`` (the causal feedback of Virtual Retina);
- the LIF membrane is stepped as an exact Ornstein–Uhlenbeck update, ``V_m ← I/g + (V_m − I/g) e^{−g
  dt} + σ_V √(1 − e^{−2 g dt}) ξ``, so ``σ_V`` is the stationary s.d. of the free membrane;
- Gaussians are separable sampled kernels of unit sum (radius ``4σ``), edges replicated (Virtual
  Retina blurs recursively with Deriche's filter; convis convolves).

Time loops run over frames only; each step acts on whole ``B×H×W`` maps. Every op and random draw
is per batch item (one ``torch.Generator`` per item), so an item alone equals the same item in a
batch. The state (all filter states, ``V``, ``g_A``, membranes, refractory clocks) can be carried:
``run_in_chunks(x, chunk)`` equals one run; the state is detached between chunks.

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
from typing import Any

import torch
from torch import Tensor, nn

from .filters import (
    blur_with,
    exponential_cascade_coefficients,
    run_exponential_cascade,
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


class VirtualRetina(nn.Module):
    """Virtual Retina on ``H×W`` videos with ``N`` ganglion cells at ``(y, x)`` pixel positions.

    ``forward(x)`` maps ``B×C×T×H×W`` to ``B×T×N`` ganglion rates (Hz), or spikes per frame with
    ``spikes=True``. Continuous parameters of the OPL, the gain control and the ganglion layers are
    ``nn.Parameter``s (fit them with :func:`mei_core.models.retina.fit_parameters`); ``dt``, ``ppd``,
    the input range, ``n_C`` and the spiking parameters are fixed.
    """

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
        **parameters: float,
    ) -> None:
        super().__init__()
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
        all-zero state), as Virtual Retina starts from a uniform screen."""
        b, (h, w) = x.shape[0], self.size
        n_layers = self.sign.shape[0]
        lum = self.initial_luminance
        with torch.no_grad():
            amp = float(self.opl_amplification.detach()) / self.input_luminosity_range
            centre_dc = (1.0 - float(self.undershoot_weight.detach())) * lum
            current = amp * (1.0 - float(self.opl_relative_weight.detach())) * centre_dc
            v_bip = self._bipolar_steady_state(current)
        full = lambda *shape, value: x.new_full(shape, value)  # noqa: E731
        return {
            "center": full(self.n_center + 1, b, 1, h, w, value=lum),
            "undershoot": full(1, b, 1, h, w, value=lum),
            "surround": full(1, b, 1, h, w, value=centre_dc),
            "v_bip": full(b, h, w, value=v_bip),
            "adaptation": full(b, h, w, value=float(self.adaptation_amplification.detach()) * v_bip * v_bip),
            "transient": full(1, b, n_layers, h, w, value=v_bip),
            "membrane": x.new_zeros(b, self.n_cells),
            "refractory": x.new_zeros(b, self.n_cells),
            "started": x.new_zeros(b),
        }

    # ------------------------------------------------------------------------- stages
    def _luminance(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.channels or tuple(x.shape[3:]) != self.size:
            raise ValueError(f"expected a B×C×T×H×W video with C={self.channels}, H×W={self.size}, got {tuple(x.shape)}")
        return torch.einsum("bcthw,c->bthw", x, self.channel_weights.to(x.dtype)).unsqueeze(1)  # B×1×T×H×W

    def _opl(self, lum: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        new = dict(state)
        blurred = spatial_gaussian_blur(lum, self._pixels(self.sigma_center))
        tau_c, stages = self._center_stages()
        phi, gamma = exponential_cascade_coefficients(tau_c, stages, self.dt)
        centre, new["center"] = run_exponential_cascade(blurred, state["center"], phi, gamma)
        phi, gamma = exponential_cascade_coefficients(self.undershoot_tau.clamp_min(_TINY), 1, self.dt)
        slow, new["undershoot"] = run_exponential_cascade(centre, state["undershoot"], phi, gamma)
        centre = centre - self.undershoot_weight * slow
        spread = spatial_gaussian_blur(centre, self._pixels(self.sigma_surround))
        phi, gamma = exponential_cascade_coefficients(self.tau_surround.clamp_min(_TINY), 1, self.dt)
        surround, new["surround"] = run_exponential_cascade(spread, state["surround"], phi, gamma)
        amp = self.opl_amplification / self.input_luminosity_range
        return amp * (centre - self.opl_relative_weight * surround), new

    def _bipolar(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``current``: B×1×T×H×W → V_Bip B×T×H×W."""
        v, adaptation = state["v_bip"], state["adaptation"]
        decay = torch.exp(-self.dt / self.adaptation_tau.clamp_min(_TINY))
        blur_rows, blur_cols = spatial_blur_matrices(self.size, self._pixels(self.adaptation_sigma))
        # With λ_A = 0 and no gradient wanted for it, g_A ≡ g0_A: skip the per-frame blur.
        feedback = bool(self.adaptation_amplification.detach() != 0) or (
            torch.is_grad_enabled() and self.adaptation_amplification.requires_grad)
        drive = self.bipolar_amplification * current[:, 0]
        outputs = []
        for frame in drive.unbind(1):
            g = self.bipolar_leak + (blur_with(adaptation, blur_rows, blur_cols) if feedback else 0.0)
            g = g.clamp_min(_TINY) if isinstance(g, Tensor) else g
            target = frame / g
            v = target + (v - target) * torch.exp(-g * self.dt)
            adaptation = decay * adaptation + (1.0 - decay) * self.adaptation_amplification * v * v
            outputs.append(v)
        new = dict(state)
        new["v_bip"], new["adaptation"] = v, adaptation
        return torch.stack(outputs, dim=1) if outputs else drive, new

    def _ganglion(self, v_bip: Tensor, state: dict[str, Tensor], maps: dict[str, Tensor] | None = None
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        """V_Bip B×T×H×W → ganglion rates B×T×N (Hz); ``maps`` (if given) receives the pooled maps."""
        n_layers = self.sign.shape[0]
        per_layer = v_bip.unsqueeze(1).expand(-1, n_layers, -1, -1, -1)  # B×L×T×H×W
        tau = self.transient_tau.clamp_min(_TINY).view(n_layers, 1, 1)
        phi, gamma = exponential_cascade_coefficients(tau, 1, self.dt)
        slow, transient_state = run_exponential_cascade(per_layer, state["transient"], phi, gamma)
        view = (1, n_layers, 1, 1, 1)
        transient = per_layer - self.transient_weight.view(view) * slow
        rates = virtual_retina_nonlinearity(self.sign.view(view) * transient, self.value_at_threshold.view(view),
                                            self.linear_threshold.view(view), self.amplification.view(view))
        pooled = torch.stack([spatial_gaussian_blur(rates[:, i], self._pixels(self.sigma_pool[i]))
                              for i in range(n_layers)], dim=1)
        if maps is not None:
            maps["ganglion"] = pooled
        # Each layer's map is read at its own cells only; the columns are then put back in cell order.
        columns, order = [], []
        for i in range(n_layers):
            members = torch.nonzero(self.cell_layers == i).flatten()
            if members.numel():
                columns.append(sample_at(pooled[:, i], self.cells[members]))  # B×T×N_i
                order.append(members)
        out = torch.cat(columns, dim=-1)[..., torch.argsort(torch.cat(order))]  # B×T×N
        new = dict(state)
        new["transient"] = transient_state
        return out, new

    def _spikes(self, rates: Tensor, state: dict[str, Tensor], generators: Sequence[torch.Generator] | None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """Rates B×T×N (Hz) → spikes B×T×N (0/1) from the noisy LIF, per item generators."""
        b = rates.shape[0]
        layer = self.cell_layers
        g_leak, sigma_v = self.g_leak[layer], self.sigma_v[layer]
        refr_mean, refr_stdev = self.refr_mean[layer], self.refr_stdev[layer]
        noisy = bool((sigma_v > 0).any() or (refr_stdev > 0).any() or (self.random_init[layer] > 0).any())
        if noisy and (generators is None or len(generators) != b):
            raise ValueError("noisy spiking needs one torch.Generator per batch item (generators=[...])")
        membrane, refractory, started = state["membrane"], state["refractory"], state["started"]
        if noisy and bool((started == 0).any()):
            start = torch.stack([torch.rand(self.n_cells, generator=g) for g in generators]).to(rates)
            init = torch.where(self.random_init[layer] > 0, start, torch.zeros_like(start))
            membrane = torch.where(started[:, None] == 0, init, membrane)
        started = torch.ones_like(started)
        decay = torch.exp(-g_leak * self.dt)
        spread = sigma_v * torch.sqrt(1.0 - decay * decay)
        outputs = []
        rests = rates / g_leak  # B×T×N: the membrane's target for each frame's drive
        for t in range(rates.shape[1]):
            rest = rests[:, t]
            v = rest + (membrane - rest) * decay
            if noisy:
                draws = torch.stack([torch.randn(2, self.n_cells, generator=g) for g in generators]).to(rates)
                v = v + spread * draws[:, 0]
                refr_draw = refr_mean + refr_stdev * draws[:, 1]
            else:
                refr_draw = refr_mean.expand(b, -1)
            free = refractory < 0.5 * self.dt
            v = torch.where(free, v, torch.zeros_like(v))
            if torch.is_grad_enabled():
                spike = spike_with_surrogate(v - 1.0, self.surrogate, self.surrogate_beta) * free.to(v.dtype)
            else:  # the same values without the autograd Function's per-call overhead
                spike = ((v >= 1.0) & free).to(v.dtype)
            fired = spike.detach() > 0
            # Reset and refractory clocks are not differentiated (the usual detached reset).
            membrane = torch.where(fired, torch.zeros_like(v), v)
            refractory = torch.where(fired, refr_draw.clamp_min(0.0), refractory - self.dt)
            outputs.append(spike)
        new = dict(state)
        new["membrane"], new["refractory"], new["started"] = membrane, refractory, started
        return (torch.stack(outputs, dim=1) if outputs else rates), new

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
        current, state = self._opl(self._luminance(x), state)
        v_bip, state = self._bipolar(current, state)
        rates, state = self._ganglion(v_bip, state)
        use_spikes = self.spikes if spikes is None else spikes
        if use_spikes:
            return self._spikes(rates, state, generators)
        return rates, state

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """The maps of each stage for ``x`` (``B×C×T×H×W``) from a fresh state: ``opl`` (I_OPL,
        ``B×T×H×W``), ``bipolar`` (V_Bip, ``B×T×H×W``), ``ganglion`` (pooled N(sign·T_G V_Bip) per
        ganglion layer, ``B×L×T×H×W``, Hz) and ``rates`` (``B×T×N``)."""
        state = self.initial_state(x)
        current, state = self._opl(self._luminance(x), state)
        v_bip, state = self._bipolar(current, state)
        maps: dict[str, Tensor] = {}
        rates, _ = self._ganglion(v_bip, state, maps)
        return {"opl": current[:, 0], "bipolar": v_bip, "ganglion": maps["ganglion"], "rates": rates}

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


def load_virtual_retina(description: str | Path) -> VirtualRetina:
    """Pipeline builder: the ``VirtualRetina`` described by the JSON file ``description`` (from
    :func:`save_virtual_retina`), or by a Virtual Retina XML file (``*.xml``, 50×50 px); use as
    ``{builder: mei_core.models.virtual_retina.load_virtual_retina, builder_kwargs: {description: path}}``."""
    path = Path(description)
    if path.suffix.lower() == ".xml":
        return VirtualRetina.from_xml(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"cannot read the Virtual Retina description {str(description)!r}: {error}") from error
    try:
        return VirtualRetina.from_description(data)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{str(description)!r} is not a Virtual Retina description: missing or bad {error}") from error
