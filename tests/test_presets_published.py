"""The published presets (mei_core.presets: hoefling2024, walker2019, mds, sinzlab_default), each
against the formulas of the code it comes from; < 30 s."""

from __future__ import annotations

import numpy as np
import pytest
from quality import at_least, at_most
import torch

from helpers import small_cnn
from mei_core import presets
from mei_core.components import Step
from mei_core.errors import MEIConfigError
from mei_core.method import build_method, project_initial
from mei_core.methods import batched_gradient_ascent
from mei_core.objectives import IncreaseObjective, SliceMeanReducer, UnitObjective
from openretina_like import SessionModel

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- hoefling2024


def openretina_cli_mei(model: torch.nn.Module, neuron: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """openretina 1.1.1's CLI MEI (``cli/visualize_model_neurons.py`` with ``optimize_stimulus``),
    written out: the start ``0.1·randn`` projected by ``ChangeNormJointlyClipRangeSeparately``, then
    10 × (objective, range penalty, SGD lr 100 step, the same projection)."""
    ranges, norm = presets.HOEFLING2024_RANGES, presets.HOEFLING2024_NORM

    def project(x: torch.Tensor) -> torch.Tensor:
        x_norm = torch.linalg.vector_norm(x.view(len(x), -1), dim=-1)
        renorm = x * (norm / x_norm).view(len(x), *[1] * (x.dim() - 1))
        return torch.stack([torch.clamp(renorm[:, i], min=lo, max=hi) for i, (lo, hi) in enumerate(ranges)], dim=1)

    stimulus = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    stimulus.data = project(stimulus.data * 0.1)
    optimizer = torch.optim.SGD([stimulus], lr=100.0)
    for _ in range(10):
        responses = model(stimulus, data_key="session_a").squeeze(0)  # T'×N
        objective = responses[:, [neuron]].mean(dim=-1).narrow(0, 10, 10).mean(dim=0)
        loss = -objective
        penalty = 0.0
        for i, (lo, hi) in enumerate(ranges):
            penalty += torch.sum(torch.relu(lo - stimulus[:, i]))
            penalty += torch.sum(torch.relu(stimulus[:, i] - hi))
        penalty += torch.relu(torch.norm(stimulus) - norm)
        loss += penalty * 0.1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stimulus.data = project(stimulus.data)
    return stimulus.detach()


def test_hoefling2024_is_bitwise_openretinas_cli_loop_from_the_same_seed():
    torch.manual_seed(0)
    model = SessionModel(n_neurons=3, channels=2, frames_kernel=5, size=8).eval()
    shape = (2, 30, 8, 8)  # T' = 26 frames: the objective's window 10–20 lies inside
    for neuron, seed in ((0, 7), (2, 11)):
        objective = IncreaseObjective(model, [neuron], data_key="session_a", response_reducer=SliceMeanReducer(axis=0, start=10, length=10))
        ours = batched_gradient_ascent(objective, presets.preset("hoefling2024"), seeds=[seed], shape=shape)
        theirs = openretina_cli_mei(model, neuron, seed, shape)
        assert ours.n_iterations == [10]
        assert torch.equal(ours.meis, theirs), (ours.meis - theirs).abs().max()
    # both items in one batch: the same MEIs up to this model's own batch dependence (its forward of
    # two rows differs from two forwards of one row in the last bit)
    both = IncreaseObjective(model, [0, 2], data_key="session_a", response_reducer=SliceMeanReducer(axis=0, start=10, length=10))
    batched = batched_gradient_ascent(both, presets.preset("hoefling2024"), seeds=[7, 11], shape=shape).meis
    theirs = torch.cat([openretina_cli_mei(model, 0, 7, shape), openretina_cli_mei(model, 2, 11, shape)])
    torch.testing.assert_close(batched, theirs, rtol=0, atol=2e-6)
    # without the initial projection the loop starts elsewhere and ends elsewhere
    unprojected = batched_gradient_ascent(both, {**presets.preset("hoefling2024"), "project_initial": False}, seeds=[7, 11], shape=shape).meis
    assert (unprojected - theirs).abs().max() > 0.1


# ------------------------------------------------------------------------------- walker2019


def walker_deepdraw(model: torch.nn.Module, unit: int, start: torch.Tensor, low: float, high: float, iterations: int) -> torch.Tensor:
    """cajal/inception_loop2019's ``deepdraw`` with ``make_step`` (one octave, no jitter, no norm), in
    the model's z-units: the gradient through their ``fft_smooth`` (precond 0.1), a step of
    ``step_size_i / mean|g| · step_gain / 255`` (step_gain 0.1), a clip to the display range and a
    scipy blur of the image, with step size 3 → 0.125 and sigma 1.5 → 0.01 ramped linearly.
    (Their ``torch.irfft(onesided=False)`` of the masked spectrum is the real part of the inverse.)"""
    from scipy.ndimage import gaussian_filter

    def fft_smooth(grad: torch.Tensor, factor: float = 0.1) -> torch.Tensor:
        h, w = grad.shape[-2:]
        tw = np.minimum(np.arange(0, w), np.arange(w - 1, -1, -1), dtype=np.float32)
        th = np.minimum(np.arange(0, h), np.arange(h - 1, -1, -1), dtype=np.float32)
        t = 1 / np.maximum(1.0, (tw[None, :] ** 2 + th[:, None] ** 2) ** factor)
        return torch.fft.ifft2(torch.fft.fft2(grad) * torch.from_numpy(t / t.mean())).real

    src = start.clone().requires_grad_(True)
    for i in range(iterations):
        sigma = 1.5 + (0.01 - 1.5) * i / iterations
        step_size = 3.0 + (0.125 - 3.0) * i / iterations
        if src.grad is not None:
            src.grad.zero_()
        model(src)[:, unit].mean().backward()
        grad = fft_smooth(src.grad)
        src.data += (step_size / (grad.abs().mean() + 1e-12)) * (0.1 / 255) * grad
        src.data = torch.clamp(src.data, low, high)
        blurred = np.stack([[gaussian_filter(channel, sigma, order=0) for channel in image] for image in src.data.numpy()])
        src.data.copy_(torch.from_numpy(blurred))
    return src.detach()


@pytest.mark.quality
@pytest.mark.parametrize("shape", [(36, 64)])
def test_walker2019_equals_their_deepdraw_from_the_same_start_over_their_1000_steps(shape):
    model = small_cnn(size=shape)
    stats = {"mean": [0.0], "std": [1.0], "range": [-1.5, 2.5]}  # z-units; the display's 0…255 is the range
    config = presets.preset("walker2019", input_shape=[1, *shape], input_stats=stats)
    method = build_method(config)
    start = project_initial(method, method.initial((1, 1, *shape), torch.Generator().manual_seed(5)), Step.of_seeds([5]))
    # grey level 128 of 255 plus noise of 8 levels, clipped
    assert abs(start.mean().item() - (-1.5 + 4.0 * 128 / 255)) < 0.01 and abs(start.std().item() - 4.0 * 8 / 255) < 0.02
    ours = batched_gradient_ascent(UnitObjective(model, [3]), config, seeds=[5], shape=(1, *shape))
    theirs = walker_deepdraw(model, 3, start, -1.5, 2.5, iterations=1000)
    # their mask's index units and one-off negative frequencies, and scipy's float64 blur passes:
    # what is left is float32 rounding in a different order of the same operations
    changes = torch.stack([(ours.meis - start).flatten(), (theirs - start).flatten()])
    at_least("r of changes, ours/theirs", torch.corrcoef(changes)[0, 1], 0.99999)
    at_most("max |ours − theirs| ÷ display range", (ours.meis - theirs).abs().max() / 4.0, 1e-6)  # measured 4.5e-8
    assert ours.scores.item() > model(start)[0, 3].item() + 0.01


def test_walker2019_without_a_range_clips_at_the_default_presets_bounds():
    config = presets.walker2019([1, 8, 8], {"mean": [0.5], "std": [2.0]})
    clip = config["postprocessing"][0]["kwargs"]
    assert (clip["x_min"], clip["x_max"]) == (0.5 - presets.CLIP_STDS * 2.0, 0.5 + presets.CLIP_STDS * 2.0)
    assert config["optimizer"]["kwargs"]["lr"] == 0.1 / 255 * 2.0  # step_gain/255 per z-unit of their model
    assert config["stopper"]["kwargs"]["num_iterations"] == 1000
    sigma_end = build_method(config).postprocessors[1].sigma_at(999)
    assert sigma_end == pytest.approx((1.5 + (0.01 - 1.5) * 999 / 1000,) * 2)
    with pytest.raises(MEIConfigError, match=r"^iterations: must be a positive integer, got 0"):
        presets.walker2019([1, 8, 8], {"mean": [0.5], "std": [2.0]}, iterations=0)
    with pytest.raises(MEIConfigError, match=r"^input_stats\.range"):
        presets.walker2019([1, 8, 8], {"mean": [0.5], "std": [2.0], "range": [1.0, 0.0]})


# -------------------------------------------------------------------------------------- mds


class ClusterRetina(torch.nn.Module):
    """Six linear-nonlinear video neurons (``B×2×T×8×8`` → ``B×T'×6``) in three colour clusters:
    green (0, 1), UV (2, 3) and both (4, 5). A bright green-and-UV stimulus drives every cluster;
    only a stimulus that is green *and dark in UV* drives the green cluster alone."""

    def __init__(self, size: int = 8, frames: int = 10):
        super().__init__()
        coords = torch.arange(size) - (size - 1) / 2
        spatial = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 2.0**2))
        temporal = torch.linspace(0.2, 1.0, frames)
        colours = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7], [0.6, 0.8]])
        weight = colours[:, :, None, None, None] * temporal[:, None, None] * spatial
        self.register_buffer("weight", weight / weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drive = torch.nn.functional.conv3d(x, self.weight)  # B×6×T'×1×1
        return torch.nn.functional.softplus(drive.flatten(2).transpose(1, 2))


CLUSTERS = [[0, 1], [2, 3], [4, 5]]
WINDOW = {"slice_mean": {"start": 10, "length": 10}}


def cluster_table(kind: str, kwargs: dict) -> list[dict]:
    import json

    return [{"neuron_id": k, "output_unit": k, "data_key": None, "kind": kind, "kwargs": json.dumps(kwargs)} for k in range(len(CLUSTERS))]


def openretina_mds_notebook(model: torch.nn.Module, cluster: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """openretina's ``most_discriminative_stimulus.ipynb`` loop written out: start ``0.1·randn`` with
    norm 30 and the per-channel clip, 10 SGD steps (lr 100) on the contrastive objective (temperature
    1.6, frames 10–20), each followed by the clip and the zero-padded temporal low-pass."""
    ranges, norm = presets.MDS_RANGES, presets.MDS_NORM

    def clip(x: torch.Tensor) -> torch.Tensor:
        renorm = x * (norm / torch.linalg.vector_norm(x.view(len(x), -1), dim=-1)).view(len(x), 1, 1, 1, 1)
        return torch.stack([torch.clamp(renorm[:, i], lo, hi) for i, (lo, hi) in enumerate(ranges)], dim=1)

    taps = torch.arange(5).float() - 2
    kernel = torch.exp(-(taps**2) / (2 * 0.5**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 5, 1, 1).repeat(2, 1, 1, 1, 1)
    stimulus = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    stimulus.data = clip(stimulus.data * 0.1)
    optimizer = torch.optim.SGD([stimulus], lr=100.0)
    for _ in range(10):
        per_neuron = model(stimulus).squeeze(0)[10:20].mean(0)
        scores = torch.stack([per_neuron[CLUSTERS[cluster]].mean()] + [per_neuron[c].mean() for i, c in enumerate(CLUSTERS) if i != cluster])
        objective = scores[0] / 1.6 - torch.logsumexp(scores / 1.6, dim=0) + torch.log(torch.tensor(float(len(scores))))
        optimizer.zero_grad()
        (-objective).backward()
        optimizer.step()
        stimulus.data = torch.nn.functional.conv3d(clip(stimulus.data), kernel, padding="same", groups=2)
    return stimulus.detach()


@pytest.mark.quality
def test_the_mds_of_a_cluster_drives_it_above_the_others_where_its_mei_does_not():
    from mei_core.objectives import build_objective

    model, shape = ClusterRetina(), (2, 30, 8, 8)
    mds = build_objective(model, cluster_table("contrastive", {"clusters": CLUSTERS, "reducer": WINDOW}))
    mei = build_objective(model, cluster_table("increase", {"neurons": {str(k): c for k, c in enumerate(CLUSTERS)}, "reducer": WINDOW}))
    discriminative = batched_gradient_ascent(mds, presets.preset("mds"), seeds=[0, 1, 2], shape=shape).meis
    exciting = batched_gradient_ascent(mei, presets.preset("mds"), seeds=[0, 1, 2], shape=shape).meis

    def responses(stimuli: torch.Tensor) -> torch.Tensor:  # stimulus × cluster, mean over frames 10–20
        per_neuron = model(stimuli)[:, 10:20].mean(1)
        return torch.stack([per_neuron[:, c].mean(1) for c in CLUSTERS], dim=1)

    def selectivity(table: torch.Tensor) -> torch.Tensor:  # own cluster ÷ the strongest other, per stimulus
        others = table.masked_fill(torch.eye(len(table), dtype=torch.bool), float("-inf")).max(1).values
        return table.diagonal() / others

    on_mds, on_mei = responses(discriminative), responses(exciting)
    at_least("min MDS selectivity", selectivity(on_mds).min(), 1.3)
    # the green cluster's MDS darkens UV: the green-and-UV cluster answers it with a fifth of the
    # green cluster's response, whereas the green MEI drives both to within a factor 1.5
    at_least("green MDS selectivity", selectivity(on_mds)[0], 4)
    at_most("green MEI selectivity", selectivity(on_mei)[0], 1.5)
    assert (selectivity(on_mds) > selectivity(on_mei)).all()
    # the preset is openretina's MDS notebook loop (up to float rounding in the low-pass kernel)
    for cluster, seed in ((0, 0), (2, 2)):
        torch.testing.assert_close(discriminative[cluster : cluster + 1], openretina_mds_notebook(model, cluster, seed, shape), rtol=0, atol=1e-5)


# -------------------------------------------------------------------------- sinzlab_default


def test_sinzlab_default_is_the_translation_of_sinzlabs_documented_config():
    from mei_core.compat.sinzlab import translate

    documented = {  # sinzlab/mei README.md, "Quickstart" (its "device" is ours to choose)
        "initial": {"path": "mei.initial.RandomNormal"},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": 1000}},
        "objectives": [{"path": "mei.objectives.EvaluationObjective", "kwargs": {"interval": 10}}],
    }
    config = presets.preset("sinzlab_default")
    assert config == translate(documented)
    assert config["stopper"]["kwargs"]["num_iterations"] == 1001  # sinzlab steps once more than it says
    short = presets.preset("sinzlab_default", num_iterations=19, lr=0.05)
    result = batched_gradient_ascent(UnitObjective(small_cnn(), [0, 1]), short, seeds=[0, 1], shape=(1, 24, 24))
    assert result.n_iterations == [20, 20] and result.traces["EvaluationObjective"].steps == [0, 10, 20]
    start = torch.randn((1, 1, 24, 24), generator=torch.Generator().manual_seed(0))  # sinzlab's RandomNormal from the seed
    assert result.scores[0] > small_cnn()(start)[0, 0]
    with pytest.raises(MEIConfigError, match=r"^num_iterations: must be a positive integer, got -1"):
        presets.preset("sinzlab_default", num_iterations=-1)
