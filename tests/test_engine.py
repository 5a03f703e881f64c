import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from mei_core import MEIConfigError, batched_gradient_ascent, default_preset, gradient_ascent
from mei_core.models.ensemble import ConstrainedOutputModel
from mei_core.objectives import UnitObjective

from helpers import LinearNeurons, correlation, gabor, small_cnn


def quick_method(iterations=30, **extra):
    method = default_preset(norm=8.0, iterations=iterations)
    method.update(extra)
    return method


def test_default_preset_recovers_the_filter_of_a_linear_gabor_neuron():
    true_filter = gabor()
    model = ConstrainedOutputModel(LinearNeurons(true_filter[None]), 0)
    mei, score, _ = gradient_ascent(model, default_preset(), seed=3, shape=(1, 1, 24, 24))
    assert correlation(mei, true_filter) >= 0.99
    assert score == pytest.approx((mei.flatten() @ true_filter.flatten()).item(), rel=1e-5)


def test_batched_items_each_find_their_own_units_filter():
    filters = torch.stack([gabor(theta=t, phase=p) for t, p in [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]])
    objective = UnitObjective(LinearNeurons(filters), units=[0, 1, 2, 1])
    result = batched_gradient_ascent(objective, default_preset(), seeds=[0, 1, 2, 3], shape=(1, 24, 24))
    for row, unit in enumerate([0, 1, 2, 1]):
        assert correlation(result.meis[row], filters[unit]) >= 0.99


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
    assert alpha[envelope > 0.5].mean() > alpha[envelope < 0.05].mean() + 0.2
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
