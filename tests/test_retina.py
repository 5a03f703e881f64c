"""Tests of the Virtual-Retina-style model: shapes, ON/OFF and centre-surround responses, chunking,
repeated backward passes, per-sample independence, spiking gradients, fitting, description round trip,
pipeline builders and the MEI direction check."""

from __future__ import annotations

import json

import pytest
from quality import at_least, at_most
import torch

from mei_core.models.retina import RetinaModel, builder, fit_parameters, load_retina, save_description

torch.set_num_threads(1)

SIZE = (16, 16)


def _model(n_cells: int = 4, frames_kernel: int = 12, seed: int = 0, **kwargs) -> RetinaModel:
    return RetinaModel.random(n_cells, size=SIZE, channels=2, frames_kernel=frames_kernel, seed=seed, **kwargs)


def _video(batch: int = 2, frames: int = 24, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, 2, frames, *SIZE, generator=g)


def _smooth_video(batch: int = 2, frames: int = 40, seed: int = 0, scale: float = 10.0) -> torch.Tensor:
    """Blocky 4×4-pixel noise: it drives DoG cells strongly (white pixel noise averages out)."""
    g = torch.Generator().manual_seed(seed)
    coarse = scale * torch.randn(batch, 2, frames, SIZE[0] // 4, SIZE[1] // 4, generator=g)
    return coarse.repeat_interleave(4, 3).repeat_interleave(4, 4)


def _spot(model: RetinaModel, cell: int, radius: float, contrast: float, frames: int = 24) -> torch.Tensor:
    """A disc of ``contrast`` (both channels, all frames) centred on ``cell``: 1×C×T×H×W."""
    cx, cy = model.center[cell].detach().tolist()
    y = torch.arange(SIZE[0], dtype=torch.float32)[:, None]
    x = torch.arange(SIZE[1], dtype=torch.float32)[None, :]
    disc = ((x - cx) ** 2 + (y - cy) ** 2 <= radius**2).float()
    return (contrast * disc).expand(1, model.channels, frames, *SIZE).contiguous()


def test_output_shapes_causal_and_valid() -> None:
    x = _video(batch=3, frames=20)
    assert _model()(x).shape == (3, 20, 4)
    assert _model()(x, data_key="session").shape == (3, 20, 4)
    valid = _model(padding="valid")
    assert valid(x).shape == (3, 20 - 12 + 1, 4)
    assert _model().spatial_filter(1).shape == (2, *SIZE)
    assert _model().temporal_kernel(1).shape == (12,)
    with pytest.raises(ValueError):
        _model()(torch.zeros(1, 3, 5, *SIZE))


def test_on_and_off_polarity() -> None:
    model = _model()
    for cell, on in ((0, True), (1, False)):  # random() alternates ON (even) and OFF (odd)
        radius = 1.5 * float(model.log_sigma_center[cell].detach().exp())
        with torch.no_grad():
            bright = model(_spot(model, cell, radius, 1.0))[0, :, cell].mean()
            dark = model(_spot(model, cell, radius, -1.0))[0, :, cell].mean()
        assert (bright > dark) if on else (dark > bright), (cell, bright, dark)


def test_surround_suppression() -> None:
    model = _model()
    for cell in (0, 1):
        sign = 1.0 if cell == 0 else -1.0
        radius = 1.5 * float(model.log_sigma_center[cell].detach().exp())
        with torch.no_grad():
            centre = model(_spot(model, cell, radius, sign))[0, :, cell].max()
            large = model(_spot(model, cell, 100.0, sign))[0, :, cell].max()
        assert large < centre, (cell, centre, large)


@pytest.mark.parametrize("padding", ["causal", "valid"])
def test_chunked_equals_one_shot(padding: str) -> None:
    model = _model(padding=padding)
    x = _smooth_video()
    weak = RetinaModel.from_description(model.describe())
    with torch.no_grad():
        full = model(x)
        weak.log_gain_control_strength -= 30.0
        assert torch.max(torch.abs(weak(x) - full)) > 0.5  # the gain-control state matters here
        for chunk in (1, 5, 7, 40):
            chunked = model.run_in_chunks(x, chunk)
            assert chunked.shape == full.shape
            assert torch.max(torch.abs(chunked - full)) <= 1e-5


def test_chunked_state_is_detached_and_repeatable() -> None:
    model = _model()
    x = _video(frames=20)
    for _ in range(2):  # a graph kept across chunks or calls would fail on the second backward
        out = model.run_in_chunks(x, 6)
        out.sum().backward()
    assert model.log_gain.grad is not None


def test_two_forward_backward_passes_give_same_gradients() -> None:
    model = _model()
    x = _video(frames=20, scale=2.0)
    grads = []
    for _ in range(2):
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        model(xi).pow(2).mean().backward()
        grads.append([xi.grad.clone()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_batch_row_alone_equals_inside_batch() -> None:
    model = _model()
    x = _video(batch=4, frames=20, scale=2.0)
    with torch.no_grad():
        batched = model(x)
        for i in range(4):
            torch.testing.assert_close(model(x[i:i + 1])[0], batched[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["poisson", "deterministic"])
def test_spikes_keep_rate_gradient(mode: str) -> None:
    model = _model()
    model.spike_mode = mode
    x = _video(frames=20, scale=2.0).requires_grad_(True)
    out = model(x, spikes=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, out.round()) and (out >= 0).all()  # counts
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the gradient is the rate path's
    x2 = x.detach().clone().requires_grad_(True)
    model(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_poisson_spikes_need_a_generator() -> None:
    with pytest.raises(ValueError):
        _model()(_video(frames=5), spikes=True)


@pytest.mark.quality
def test_fit_parameters_reduces_loss() -> None:
    truth = _model(n_cells=3, seed=1)
    model = RetinaModel.from_description(truth.describe())
    with torch.no_grad():  # perturb the fitted parameters away from the truth
        model.log_gain += 0.7
        model.threshold -= 0.5
        model.surround_weight *= 0.3
    x = _video(batch=4, frames=20, scale=2.0)
    with torch.no_grad():
        y = truth(x)
    history = fit_parameters(model, x, y, epochs=30, lr=0.05, seed=0,
                             parameters=["log_gain", "threshold", "surround_weight"])
    assert len(history) == 30
    at_most("last/first loss", history[-1] / history[0], 0.2)
    poisson = fit_parameters(RetinaModel.from_description(model.describe()), x, y, epochs=3, lr=0.01,
                             seed=0, loss="poisson", batch_size=2)
    assert len(poisson) == 3 and all(torch.isfinite(torch.tensor(poisson)))


def test_describe_round_trip(tmp_path) -> None:
    model = _model(n_cells=5, seed=3)
    description = model.describe()
    json.dumps(description)  # JSON-able
    assert [c["type"] for c in description["cells"]] == ["ON", "OFF", "ON", "OFF", "ON"]
    copy = RetinaModel.from_description(json.loads(json.dumps(description)))
    for (name, a), (_, b) in zip(model.state_dict().items(), copy.state_dict().items()):
        assert torch.equal(a, b), name
    x = _video(frames=15)
    with torch.no_grad():
        assert torch.equal(model(x), copy(x))
    path = tmp_path / "retina.json"
    save_description(model, path)
    with torch.no_grad():
        assert torch.equal(load_retina(str(path))(x), model(x))
        assert torch.equal(builder(description=str(path))(x), model(x))
    assert builder(n_cells=3, size=SIZE).n_cells == 3


def test_builder_only_pipeline_member(tmp_path) -> None:
    from mei_core.pipeline.ensembles import load_member

    path = tmp_path / "retina.json"
    save_description(_model(), path)
    member = load_member({"builder": "mei_core.models.retina.load_retina",
                          "builder_kwargs": {"description": str(path)}}, "test")
    assert member(torch.zeros(1, 2, 12, *SIZE)).shape == (1, 12, 4)


@pytest.mark.quality
def test_mei_direction_matches_spatial_filter() -> None:
    model = _model(n_cells=4, frames_kernel=12, seed=2)
    for p in model.parameters():
        p.requires_grad_(False)
    norm = 0.5  # small: gain control ≈ 1 and softplus ≈ linear, so the MEI is the linear filter
    for cell in (0, 1):
        x = _video(batch=1, frames=24, seed=5)
        x = (x * norm / x.norm()).requires_grad_(True)
        for _ in range(30):
            objective = model(x)[0, 10:20, cell].mean()
            (grad,) = torch.autograd.grad(objective, x)
            with torch.no_grad():
                x += 0.5 * norm * grad / grad.norm()
                x *= norm / x.norm()
        # the stimulus' dominant spatial component (C×H×W) over frames
        frames = x.detach()[0].permute(1, 0, 2, 3).reshape(24, -1)
        _, _, vh = torch.linalg.svd(frames, full_matrices=False)
        profile, truth = vh[0], model.spatial_filter(cell).reshape(-1)
        corr = torch.corrcoef(torch.stack([profile, truth]))[0, 1].abs()
        at_least(f"cell {cell}: r", corr, 0.8)
