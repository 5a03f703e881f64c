import copy
import subprocess
import sys
import textwrap

import pytest
from quality import at_least, at_most
import torch

from mei_core import MEIConfigError, batched_gradient_ascent, default_preset, gradient_ascent
from mei_core.components import Stopper
from mei_core.engine import optimize, step_callback
from mei_core.method import build_method
from mei_core.models.ensemble import ConstrainedOutputModel
from mei_core.objectives import UnitObjective

from helpers import LinearNeurons, correlation, gabor, small_cnn


def quick_method(iterations=30, **extra):
    method = default_preset(norm=8.0, iterations=iterations)
    method.update(extra)
    return method


@pytest.mark.quality
def test_default_preset_recovers_the_filter_of_a_linear_gabor_neuron():
    true_filter = gabor()
    model = ConstrainedOutputModel(LinearNeurons(true_filter[None]), 0)
    mei, score, _ = gradient_ascent(model, default_preset(), seed=3, shape=(1, 1, 24, 24))
    at_least("r", correlation(mei, true_filter), 0.99)
    assert score == pytest.approx((mei.flatten() @ true_filter.flatten()).item(), rel=1e-5)


@pytest.mark.quality
def test_batched_items_each_find_their_own_units_filter():
    filters = torch.stack([gabor(theta=t, phase=p) for t, p in [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]])
    objective = UnitObjective(LinearNeurons(filters), units=[0, 1, 2, 1])
    result = batched_gradient_ascent(objective, default_preset(), seeds=[0, 1, 2, 3], shape=(1, 24, 24))
    for row, unit in enumerate([0, 1, 2, 1]):
        at_least(f"row {row}: r", correlation(result.meis[row], filters[unit]), 0.99)


def test_num_iterations_takes_exactly_that_many_optimizer_steps():
    steps = []

    class CountingSGD(torch.optim.SGD):
        def step(self, closure=None):
            steps.append(1)
            return super().step(closure)

    config = quick_method(iterations=7)
    config["optimizer"] = {"path": "tests_counting_sgd.CountingSGD", "kwargs": {"lr": 0.1}}
    module = type(sys)("tests_counting_sgd")
    module.CountingSGD = CountingSGD
    sys.modules["tests_counting_sgd"] = module
    try:
        result = batched_gradient_ascent(UnitObjective(small_cnn(), [0]), config, seeds=[0], shape=(1, 24, 24))
    finally:
        del sys.modules["tests_counting_sgd"]
    assert len(steps) == 7
    assert result.n_iterations == [7]
    assert result.stop_reasons == ["num_iterations"]


class FifthStepStopper(Stopper):
    """Stops every item at step 5, declares so, and notes the steps it is asked at."""

    earliest_stop = 5

    def __init__(self):
        self.asked_at = []

    def __call__(self, state):
        self.asked_at.append(state.i_iter)
        return state.i_iter >= 5, "fifth step"


def fifth_step_run(model, callback=None):
    method = build_method(quick_method(transform={"path": "Jitter", "kwargs": {"max_jitter": 2}}))
    method.stopper = FifthStepStopper()
    token = step_callback.set(callback)
    try:
        return optimize(UnitObjective(model, [1, 2]), method, [0, 1], (1, 24, 24)), method.stopper
    finally:
        step_callback.reset(token)


def test_a_stopper_that_declares_its_first_stop_is_asked_only_from_then_unless_the_state_is_read():
    model = small_cnn()
    unread, stopper = fifth_step_run(model)
    assert stopper.asked_at == [5]  # no State was built for steps 0-4
    assert unread.n_iterations == [5, 5] and unread.stop_reasons == ["fifth step", "fifth step"]
    # a callback reads a State every step: the stopper is asked every step and its answer is in the State
    seen = []
    read, stopper = fifth_step_run(model, lambda state: seen.append((state.i_iter, state.stopper_output)))
    assert stopper.asked_at == [0, 1, 2, 3, 4, 5]
    assert seen == [(i, "fifth step") for i in range(6)]
    # building the State or not changes no result
    assert torch.equal(read.meis, unread.meis) and torch.equal(read.scores, unread.scores)
    assert read.n_iterations == unread.n_iterations and read.stop_reasons == unread.stop_reasons


def test_score_is_the_objective_of_the_returned_mei():
    model = small_cnn()
    objective = UnitObjective(model, [3, 5])
    config = quick_method(iterations=12)
    config["transform"] = {"path": "Jitter", "kwargs": {"max_jitter": 2}}
    result = batched_gradient_ascent(objective, config, seeds=[0, 1], shape=(1, 24, 24))
    with torch.no_grad():
        direct = model(result.meis)[[0, 1], [3, 5]]
    torch.testing.assert_close(result.scores, direct, rtol=1e-5, atol=1e-6)


def test_initial_guess_equals_sinzlabs_global_seeded_draw():
    config = quick_method(iterations=0)
    result = batched_gradient_ascent(UnitObjective(small_cnn(), [0, 0]), config, seeds=[11, 12], shape=(1, 24, 24))
    for row, seed in enumerate([11, 12]):
        torch.manual_seed(seed)
        expected = torch.randn(1, 1, 24, 24)
        # with zero iterations the returned MEI is the initial guess itself
        assert torch.equal(result.meis[row : row + 1], expected)


def batch_invariance_config():
    config = quick_method(iterations=25)
    config["transform"] = {"path": "Jitter", "kwargs": {"max_jitter": 2}}
    config["stopper"] = {"path": "EarlyStopper", "kwargs": {"patience": 3, "min_delta": 0.05, "max_iterations": 25}}
    return config


def test_an_item_in_a_batch_of_sixteen_others_equals_the_item_alone():
    model = small_cnn(n_units=20)
    config = batch_invariance_config()
    alone = batched_gradient_ascent(UnitObjective(model, [4]), config, seeds=[7], shape=(1, 24, 24))
    units = [4] + [u % 20 for u in range(5, 21)]
    seeds = [7] + list(range(100, 116))
    batch = batched_gradient_ascent(UnitObjective(model, units), config, seeds=seeds, shape=(1, 24, 24))
    difference = (batch.meis[0] - alone.meis[0]).norm() / alone.meis[0].norm()
    assert difference.item() <= 1e-4
    assert batch.n_iterations[0] == alone.n_iterations[0]
    assert batch.stop_reasons[0] == alone.stop_reasons[0]
    assert batch.scores[0].item() == pytest.approx(alone.scores[0].item(), rel=1e-4)
    # the early stopper really stopped items at different steps, so freezing was exercised
    assert len(set(batch.n_iterations)) > 1


def test_identical_runs_are_bitwise_identical_across_processes(tmp_path):
    script = textwrap.dedent(
        """
        import hashlib, sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, "tests")
        from helpers import small_cnn
        from test_engine import batch_invariance_config
        from mei_core import batched_gradient_ascent
        from mei_core.objectives import UnitObjective
        result = batched_gradient_ascent(UnitObjective(small_cnn(), [1, 2, 3]), batch_invariance_config(), [5, 6, 7], (1, 24, 24))
        print(hashlib.sha256(result.meis.numpy().tobytes()).hexdigest())
        """
    )
    digests = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64


def test_stopped_items_are_frozen_and_keep_their_own_iteration_count():
    filters = torch.stack([gabor(), 0.05 * gabor(theta=1.2)])
    objective = UnitObjective(LinearNeurons(filters), [0, 1])
    config = quick_method()
    config["stopper"] = {"path": "EvaluationThreshold", "kwargs": {"threshold": 2.0, "max_iterations": 40}}
    result = batched_gradient_ascent(objective, config, seeds=[0, 1], shape=(1, 24, 24))
    assert result.stop_reasons == ["threshold", "max_iterations"]
    assert result.n_iterations[0] < 40 and result.n_iterations[1] == 40
    assert result.scores[0].item() >= 2.0
    expected = (result.meis.flatten(1) * filters.flatten(1)).sum(1)
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-5)


def test_the_callers_config_is_never_mutated():
    config = batch_invariance_config()
    before = copy.deepcopy(config)
    gradient_ascent(ConstrainedOutputModel(small_cnn(), 0), config, seed=0, shape=(1, 1, 24, 24))
    assert config == before


def test_trackers_record_only_every_interval_steps():
    config = quick_method(iterations=10)
    config["objectives"] = {
        "evaluation": {"path": "EvaluationObjective", "kwargs": {"interval": 3}},
        "snapshots": {"path": "PostProcessedInputObjective", "kwargs": {"interval": 5}},
    }
    _, _, output = gradient_ascent(ConstrainedOutputModel(small_cnn(), 2), config, seed=0, shape=(1, 1, 24, 24))
    assert output["evaluation"]["times"] == [0, 3, 6, 9]
    assert output["snapshots"]["times"] == [0, 5, 10]
    assert output["snapshots"]["values"][0].shape == (1, 1, 24, 24)
    evaluations = torch.cat(output["evaluation"]["values"])
    assert evaluations[-1] > evaluations[0]


def test_diverse_meis_differ_more_with_the_similarity_penalty():
    model = small_cnn(n_units=4)
    def mean_pairwise_correlation(meis):
        c = torch.corrcoef(meis.flatten(1))
        return c[~torch.eye(len(c), dtype=bool)].mean().item()
    plain = quick_method(iterations=40, n_meis=3)
    diverse = quick_method(iterations=40, n_meis=3, regularization={"path": "Similarity", "kwargs": {"weight": 5.0}})
    a = batched_gradient_ascent(UnitObjective(model, [1, 1, 1]), plain, seeds=[0], shape=(1, 24, 24))
    b = batched_gradient_ascent(UnitObjective(model, [1, 1, 1]), diverse, seeds=[0], shape=(1, 24, 24))
    assert a.meis.shape == (3, 1, 24, 24) and a.row_items.tolist() == [0, 0, 0]
    assert mean_pairwise_correlation(b.meis) < mean_pairwise_correlation(a.meis) - 0.1


def test_minimising_gives_an_inhibitory_mei_anticorrelated_with_the_filter():
    true_filter = gabor()
    model = ConstrainedOutputModel(LinearNeurons(true_filter[None]), 0)
    mei, score, _ = gradient_ascent(model, quick_method(iterations=100, direction="minimize"), seed=0, shape=(1, 1, 24, 24))
    assert correlation(mei, true_filter) <= -0.99
    assert score < 0


@pytest.mark.quality
def test_transparency_meis_blend_with_the_background_and_keep_the_alpha_channel():
    true_filter = gabor()
    model = ConstrainedOutputModel(LinearNeurons(true_filter[None]), 0)
    config = {
        "initial": {"path": "RandomNormal", "kwargs": {"std": 0.1}},
        "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.2}},
        "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 60}},
        "transform": {"path": "AlphaBlend", "kwargs": {"background": 0.0}},
        "regularization": {"path": "OpacityPenalty", "kwargs": {"weight": 1.0}},
        "precondition": {"path": "DivideByMeanOfAbsolute"},
        "postprocessing": {"path": "ClipRange", "kwargs": {"x_min": -3, "x_max": 3}},
    }
    mei, score, _ = gradient_ascent(model, config, seed=0, shape=(1, 2, 24, 24))
    assert mei.shape == (1, 2, 24, 24)
    alpha = torch.sigmoid(mei[0, 1])
    envelope = true_filter.abs()
    # opaque where the filter matters, transparent in its periphery
    at_least("opacity centre − periphery", alpha[envelope > 0.5].mean() - alpha[envelope < 0.05].mean(), 0.2)
    assert score > 0


def test_a_bad_method_fails_before_any_work_with_the_slot_named():
    config = quick_method()
    del config["stopper"]
    with pytest.raises(MEIConfigError, match=r"config\.stopper: required slot is missing"):
        batched_gradient_ascent(UnitObjective(small_cnn(), [0]), config, seeds=[0], shape=(1, 24, 24))


def test_optimising_leaves_no_gradients_on_the_users_model():
    model = small_cnn()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    batched_gradient_ascent(UnitObjective(model, [0, 1]), quick_method(iterations=3), seeds=[0, 1], shape=(1, 24, 24))
    assert all(parameter.grad is None for parameter in model.parameters())


# ------------------------------------------------------------------ vectorised randomness, no host sync

def every_random_transform_config(**extra):
    config = batch_invariance_config()
    config["transform"] = [
        {"path": "PadJitter", "kwargs": {"pad": 2, "max_jitter": 2}},
        {"path": "RandomRotation", "kwargs": {"max_degrees": 10.0}},
        {"path": "RandomScale", "kwargs": {"min_scale": 0.9, "max_scale": 1.1}},
        {"path": "Jitter", "kwargs": {"max_jitter": 1}},
    ]
    config.update(extra)
    return config


def test_an_item_gets_the_same_diverse_meis_in_batches_of_any_composition_with_every_random_transform():
    model = small_cnn(n_units=20)
    config = every_random_transform_config(n_meis=2)
    alone = batched_gradient_ascent(UnitObjective(model, [4]), config, seeds=[7], shape=(1, 24, 24))
    # unit 4 with seed 7 as the middle item of three, then as the last of seven beside unit 4 with other seeds
    for units, seeds, item in (([9, 4, 13], [3, 7, 7], 1), ([4, 4, 1, 2, 3, 5, 4], [8, 9, 1, 2, 3, 4, 7], 6)):
        batch = batched_gradient_ascent(UnitObjective(model, units), config, seeds=seeds, shape=(1, 24, 24))
        torch.testing.assert_close(batch.meis[2 * item : 2 * item + 2], alone.meis, rtol=1e-4, atol=1e-5)
        assert batch.n_iterations[item] == alone.n_iterations[0]
        assert batch.stop_reasons[item] == alone.stop_reasons[0]
        torch.testing.assert_close(batch.scores[2 * item : 2 * item + 2], alone.scores, rtol=1e-4, atol=1e-5)
    assert not torch.equal(alone.meis[0], alone.meis[1])  # the two rows of the item drew differently


def test_how_often_stops_are_checked_changes_no_result_and_items_freeze_where_they_stopped():
    model = small_cnn(n_units=20)
    units, seeds = [1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5]
    results = {
        every: batched_gradient_ascent(UnitObjective(model, units), batch_invariance_config() | {"stop_check_every": every}, seeds, (1, 24, 24))
        for every in (1, 7, 50)
    }
    reference = results[1]
    assert len(set(reference.n_iterations)) > 1 and min(reference.n_iterations) < 20  # stops at different steps
    for result in results.values():
        # checks drop stopped rows at different steps, so rows share forward passes of different
        # sizes: equal to the batch-invariance tolerance (convolution kernels depend on batch size)
        torch.testing.assert_close(result.meis, reference.meis, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(result.scores, reference.scores, rtol=1e-4, atol=1e-5)
        assert result.n_iterations == reference.n_iterations and result.stop_reasons == reference.stop_reasons
    # an item stopped at step s returns x_s: run it with NumIterations(s) and compare
    item = reference.n_iterations.index(min(reference.n_iterations))
    fixed = batch_invariance_config()
    fixed["stopper"] = {"path": "NumIterations", "kwargs": {"num_iterations": reference.n_iterations[item]}}
    exact = batched_gradient_ascent(UnitObjective(model, [units[item]]), fixed, [seeds[item]], (1, 24, 24))
    torch.testing.assert_close(reference.meis[item], exact.meis[0], rtol=1e-4, atol=1e-5)


class SyncCounter:
    """Counts the tensor → host reads (bool, item, tolist, nonzero) made while it is active."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("__bool__", "item", "tolist", "nonzero", "__int__", "__float__", "__index__"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


class SmallVideoModel(torch.nn.Module):
    """``B×1×T×12×12`` → ``B×(T−2)×6``: a 3-D convolution (its layer ``conv``) and a linear readout."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = torch.nn.Conv3d(1, 4, 3, padding=(0, 1, 1))
            self.readout = torch.nn.Linear(4 * 12 * 12, 6)

    def forward(self, x):
        hidden = torch.nn.functional.elu(self.conv(x))  # B×4×T'×12×12
        return torch.nn.functional.softplus(self.readout(hidden.transpose(1, 2).flatten(2)))


def sync_test_objective(kind):
    """An objective over three items, and its input shape (the video kinds: openretina's objectives)."""
    from mei_core.objectives import ContrastiveNeuronObjective, IncreaseObjective, InnerNeuronObjective, SliceMeanReducer

    if kind == "unit":
        return UnitObjective(small_cnn(n_units=20), [1, 2, 3]), (1, 24, 24)
    video, shape = SmallVideoModel(), (1, 6, 12, 12)
    if kind == "increase":
        return IncreaseObjective(video, [[0, 1], 2, 5], response_reducer=SliceMeanReducer(0, 1, 2)), shape
    if kind == "contrastive":
        return ContrastiveNeuronObjective(video, [[0, 1], [2], [5]], [[0, 1], [2], [3, 4], [5]]), shape
    return InnerNeuronObjective(video, "conv", [0, 3, 1]), shape


@pytest.mark.parametrize("kind", ["unit", "increase", "contrastive", "inner"])
def test_the_loop_reads_tensors_on_the_host_only_at_stop_checks(monkeypatch, kind):
    config = batch_invariance_config()
    config["stopper"] = {"path": "EarlyStopper", "kwargs": {"patience": 1000, "max_iterations": 60}}
    config["stop_check_every"] = 20
    objective, shape = sync_test_objective(kind)
    batched_gradient_ascent(objective, config, seeds=[0, 1, 2], shape=shape)  # warm: the unit range check runs once
    counter = SyncCounter(monkeypatch)
    result = batched_gradient_ascent(objective, config, seeds=[0, 1, 2], shape=shape)
    monkeypatch.undo()
    assert result.n_iterations == [60, 60, 60]
    # 61 steps with Jitter, an early stopper and a postprocessing chain: checks at steps 19, 39 and 59
    # (one read each; at step 60 the iteration limit stops every item without a read), then the two
    # reads of the stop records at the end
    assert counter.count == 3 + 2


def test_a_batch_too_large_for_memory_is_split_and_gives_the_same_meis(caplog):
    from mei_core.engine import simulated_memory_rows

    model = small_cnn(n_units=20)
    config = every_random_transform_config(n_meis=2)
    units, seeds = [1, 2, 3, 4, 5, 6, 7], [5, 6, 7, 8, 9, 10, 11]
    whole = batched_gradient_ascent(UnitObjective(model, units), config, seeds, (1, 24, 24))
    token = simulated_memory_rows.set(5)
    try:
        split = batched_gradient_ascent(UnitObjective(model, units), config, seeds, (1, 24, 24))
    finally:
        simulated_memory_rows.reset(token)
    assert "out of memory with 14 rows per forward pass: continuing with 6" in caplog.text
    assert "with 6 rows per forward pass: continuing with 2" in caplog.text  # an item's two rows stay together
    torch.testing.assert_close(split.meis, whole.meis, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert split.n_iterations == whole.n_iterations and split.stop_reasons == whole.stop_reasons
    chunked = batched_gradient_ascent(UnitObjective(model, units), config | {"max_batch": 4}, seeds, (1, 24, 24))
    torch.testing.assert_close(chunked.meis, whole.meis, rtol=1e-5, atol=1e-6)


def test_out_of_memory_on_a_single_item_is_raised():
    from mei_core.engine import simulated_memory_rows

    token = simulated_memory_rows.set(0)
    try:
        with pytest.raises(torch.OutOfMemoryError, match="simulated: 1 rows"):
            batched_gradient_ascent(UnitObjective(small_cnn(), [0, 1]), quick_method(iterations=2), [0, 1], (1, 24, 24))
    finally:
        simulated_memory_rows.reset(token)


# ------------------------------------------------------------------ precision

@pytest.mark.quality
def test_bf16_forward_finds_gabor_filters_as_well_as_float32():
    filters = torch.stack([gabor(theta=0.4 * k, phase=0.7 * k) for k in range(8)])
    model = LinearNeurons(filters)
    median_r = {}
    for precision in ("float32", "tf32", "bf16"):
        config = quick_method(iterations=100, precision=precision)
        result = batched_gradient_ascent(UnitObjective(model, list(range(8))), config, seeds=list(range(8)), shape=(1, 24, 24))
        median_r[precision] = torch.tensor([correlation(result.meis[k], filters[k]) for k in range(8)]).median().item()
        # scores are float32 objectives of the returned MEIs whatever the forward's precision
        torch.testing.assert_close(result.scores, (result.meis.flatten(1) * filters.flatten(1)).sum(1), rtol=1e-5, atol=1e-5)
    at_least("float32 median r", median_r["float32"], 0.99)
    at_most("|bf16 − float32| median r", abs(median_r["bf16"] - median_r["float32"]), 0.01)
    assert median_r["tf32"] == median_r["float32"]  # TF32 is a CUDA switch: the same arithmetic on the CPU


def test_an_unknown_precision_is_refused_with_the_key_named():
    with pytest.raises(MEIConfigError, match=r"config\.precision: must be one of float32, tf32, bf16, got 'fp16'"):
        batched_gradient_ascent(UnitObjective(small_cnn(), [0]), quick_method(precision="fp16"), [0], (1, 24, 24))
