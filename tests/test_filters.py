"""Tests of the convis-like filter toolbox: closed-form impulse and step responses, Gaussian
profiles, named kernels, nonlinearities, state carried across chunks and calls, batch independence,
the pipeline builder and fitting."""

from __future__ import annotations

import math

import pytest
from quality import at_least, at_most
import torch

from mei_core.models.filters import (
    CellReadout,
    Conv3dFilter,
    Nonlinearity,
    Parallel,
    Sequential,
    SpatialGaussian,
    Sum,
    TemporalHighPass,
    TemporalLowPass,
    build_filter_model,
    spatial_gaussian_blur,
    temporal_kernel,
    virtual_retina_nonlinearity,
)

torch.set_num_threads(1)


def _trace(values) -> torch.Tensor:
    """A 1×1×T×1×1 video."""
    return torch.as_tensor(values, dtype=torch.float32).view(1, 1, -1, 1, 1)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_lowpass_cascade_step_is_the_gamma_cdf_and_impulse_tends_to_the_gamma_kernel(n: int) -> None:
    tau, frames = 4.0, 80
    t = torch.arange(1, frames + 1, dtype=torch.float64)  # frame k ends at t = k + 1 (dt = 1)
    cdf = 1 - torch.exp(-t / tau) * sum((t / tau) ** m / math.factorial(m) for m in range(n))
    with torch.no_grad():
        step = TemporalLowPass(tau, n)(_trace([1.0] * frames))[0, 0, :, 0, 0].double()
    assert torch.max(torch.abs(step - cdf)) < 1e-6
    # one frame of unit area: the gamma kernel t^(n−1) e^(−t/τ)/((n−1)! τ^n), to O(dt²) at mid-frame
    for dt in (0.5, 0.25):
        steps = int(frames / dt)
        with torch.no_grad():
            impulse = TemporalLowPass(tau, n, dt=dt)(_trace([1.0 / dt] + [0.0] * (steps - 1)))[0, 0, :, 0, 0].double()
        mid = (torch.arange(steps, dtype=torch.float64) + 0.5) * dt
        gamma = mid ** (n - 1) * torch.exp(-mid / tau) / (math.factorial(n - 1) * tau ** n)
        error = torch.max(torch.abs(impulse - gamma)) / gamma.max()
        assert error < 0.01 * (dt / 0.5) ** 2 + 1e-6, (dt, error)


def test_highpass_step_keeps_one_minus_weight_at_dc() -> None:
    t = torch.arange(1, 61, dtype=torch.float64)
    with torch.no_grad():
        y = TemporalHighPass(5.0, weight=0.8)(_trace([1.0] * 60))[0, 0, :, 0, 0].double()
    assert torch.max(torch.abs(y - (1 - 0.8 * (1 - torch.exp(-t / 5.0))))) < 1e-6


def test_gaussian_blur_has_the_gaussian_profile_unit_gain_and_replicated_edges() -> None:
    image = torch.zeros(1, 1, 1, 41, 41)
    image[..., 20, 20] = 1.0
    with torch.no_grad():
        blurred = SpatialGaussian(3.0)(image)[0, 0, 0]
    y, x = torch.meshgrid(torch.arange(41.0) - 20, torch.arange(41.0) - 20, indexing="ij")
    closed = torch.exp(-(x * x + y * y) / 18.0) / (2 * math.pi * 9.0)
    assert torch.max(torch.abs(blurred - closed)) < 2e-4 * closed.max()  # sampled, truncated at 4σ, unit sum
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    ramp = torch.arange(10.0).expand(1, 10, 10).contiguous()  # a linear ramp stays one inside
    torch.testing.assert_close(spatial_gaussian_blur(ramp, 1.0)[..., 4:6, 4:6], ramp[..., 4:6, 4:6])  # radius 4 px
    torch.testing.assert_close(spatial_gaussian_blur(torch.full((1, 8, 8), 2.5), 4.0), torch.full((1, 8, 8), 2.5))


def test_conv3d_filter_impulse_response_is_its_named_kernel() -> None:
    layer = Conv3dFilter(length=12, radius=2, temporal={"shape": "gamma", "tau": 2.0, "n": 3},
                         spatial={"shape": "dog", "sigma_center": 1.0, "sigma_surround": 2.0, "surround_weight": 0.5})
    impulse = torch.zeros(1, 1, 12, 9, 9)
    impulse[0, 0, 0, 4, 4] = 1.0
    with torch.no_grad():
        response = layer(impulse)[0, 0, :, 2:7, 2:7]
    t = torch.arange(12, dtype=torch.float64)
    gamma = t ** 2 * torch.exp(-t / 2.0) / (2 * 2.0 ** 3)
    torch.testing.assert_close(temporal_kernel("gamma", 12, tau=2.0, n=3), gamma)
    r2 = (torch.arange(-2.0, 3.0)[:, None] ** 2 + torch.arange(-2.0, 3.0)[None, :] ** 2).double()
    g1, g2 = torch.exp(-r2 / 2), torch.exp(-r2 / 8)
    dog = g1 / g1.sum() - 0.5 * g2 / g2.sum()
    torch.testing.assert_close(response.double(), gamma[:, None, None] * dog.flip(0, 1), atol=1e-6, rtol=1e-5)


def test_nonlinearities_take_their_documented_values() -> None:
    x = torch.tensor([-2.0, 0.5, 3.0]).view(1, 1, 3, 1, 1)
    values = {kind: Nonlinearity(kind, threshold=0.5, gain=2.0, slope=3.0, i0=1.5)(x).flatten().tolist()
              for kind in Nonlinearity.KINDS}
    assert values["rectify"] == pytest.approx([0.0, 0.0, 5.0])
    assert values["softplus"] == pytest.approx([2 * math.log1p(math.exp(-2.5)), 2 * math.log(2), 2 * math.log1p(math.exp(2.5))])
    assert values["sigmoid"] == pytest.approx([2 / (1 + math.exp(7.5)), 1.0, 2 / (1 + math.exp(-7.5))])
    assert values["square"] == pytest.approx([12.5, 0.0, 12.5])
    assert values["virtual_retina"] == pytest.approx([1.5 / (1 + 3 * 2.5 / 1.5), 1.5, 1.5 + 3 * 2.5])
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        Nonlinearity("tanh")
    v = torch.linspace(-3, 3, 61, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(virtual_retina_nonlinearity(v, 2.0, 0.0, 4.0).sum(), v)
    assert torch.isfinite(grad).all() and grad[30] == pytest.approx(4.0) and (grad > 0).all()


def _lnln() -> Sequential:
    stages = [{"length": 6, "radius": 2, "out_channels": 2, "temporal": {"shape": "gamma", "tau": 1.5, "n": 2},
               "spatial": {"shape": "gaussian", "sigma": 1.0}},
              {"length": 4, "radius": 1, "temporal": {"shape": "exponential", "tau": 2.0}, "spatial": {"shape": "delta"}}]
    return build_filter_model([[5, 5], [3, 7]], kind="LNLN", channels=2, stages=stages,
                              nonlinearities=[{"kind": "softplus"}, {"kind": "rectify", "threshold": 0.1}])


def _composite() -> Sequential:
    branches = Parallel(Sequential(TemporalLowPass(2.0, 2), Nonlinearity("square")),
                        Sum(TemporalHighPass(3.0, 0.9), SpatialGaussian(1.0)))
    return Sequential(SpatialGaussian(0.8), branches, CellReadout([[4, 4], [2, 6]], channel_of_cell=[0, 1]))


@pytest.mark.parametrize("make", [_lnln, _composite], ids=["LNLN", "parallel-sum"])
def test_cascades_chunk_carry_and_batch_like_one_run(make) -> None:
    model = make()
    x = torch.randn(3, 2 if make is _lnln else 1, 25, 10, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)
        assert full.shape == (3, 25, 2)
        for chunk in (1, 4, 25):
            assert torch.max(torch.abs(model.run_in_chunks(x, chunk) - full)) <= 1e-5
        for i in range(3):
            torch.testing.assert_close(model(x[i:i + 1])[0], full[i], rtol=0, atol=1e-6)
        model.carry_state = True  # convis' behaviour: each call continues where the last stopped
        pieces = torch.cat([model(x[:, :, :10]), model(x[:, :, 10:])], dim=1)
        assert torch.max(torch.abs(pieces - full)) <= 1e-5
        model.reset_state()
        torch.testing.assert_close(model(x[:, :, :10]), full[:, :10])
        model.carry_state = False


def test_carried_state_is_detached_between_calls() -> None:
    model = _lnln()
    model.carry_state = True
    x = torch.randn(1, 2, 12, 10, 10, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    for _ in range(2):  # a graph kept from the first call would fail the second backward
        model(x).sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.quality
def test_builder_default_is_an_openretina_member_and_fits() -> None:
    from mei_core.models.retina import fit_parameters

    truth = build_filter_model([[6, 6], [4, 8]], channels=2)
    model = build_filter_model([[6, 6], [4, 8]], channels=2)
    with torch.no_grad():
        model.members[0].members[1].threshold.fill_(1.0)  # the LN cascade's nonlinearity
    x = torch.randn(2, 2, 15, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = truth(x, data_key="ignored")
    assert y.shape == (2, 15, 2)
    history = fit_parameters(model, x, y, epochs=60, lr=0.05, parameters=["members.0.members.1.threshold"])
    at_most("last/first loss", history[-1] / history[0], 0.01)  # measured 0.0014
    at_most("|fitted threshold − 0|", abs(model.members[0].members[1].threshold.item()), 0.05)  # measured 0.023
