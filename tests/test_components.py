"""Every component, on real values, one row at a time and in a batch."""


import pytest
import torch

from mei_core.components import Step
from mei_core.initial import FromArray, RandomNormal, RandomNormalNullChannel, RandomUniform
from mei_core.models.ensemble import BatchedConstrainedOutputModel, ConstrainedOutputModel, EnsembleModel
from mei_core.postprocessors import (
    ChangeNorm, ChangeNormJointlyClipRangeSeparately, ChangeStd, ClipRange, GaussianBlurInput,
    PNormConstraintAndClip, TemporalGaussianLowPass,
)
from mei_core.preconditioners import DivideByMeanOfAbsolute, FourierSmoothing, GaussianBlur, MultiplyBy
from mei_core.regularizers import L1L2, LpNorm, OpacityPenalty, Similarity, TotalVariation
from mei_core.stoppers import EarlyStopper, EvaluationThreshold, LossRange, NumIterations
from mei_core.trackers import EvaluationObjective
from mei_core.streams import RowStreams
from mei_core.transforms import AlphaBlend, ChangeRange, Compose, Jitter, PadJitter, RandomCrop, RandomRotation, RandomScale, Resize


def step(n_rows, i_iter=0, seeds=None, row_items=None):
    row_items = torch.arange(n_rows) if row_items is None else torch.as_tensor(row_items)
    n_items = int(row_items.max()) + 1
    seeds = list(range(n_items)) if seeds is None else seeds
    return Step.of_seeds(seeds, row_items, i_iter)


def one(x, i):
    return x[i : i + 1]


# ------------------------------------------------------------------ initial guesses

def test_random_normal_is_the_seeded_standard_normal():
    torch.manual_seed(4)
    expected = torch.randn(2, 1, 5, 5)
    assert torch.equal(RandomNormal()((2, 1, 5, 5), torch.Generator().manual_seed(4)), expected)


def test_random_uniform_stays_in_its_range_and_null_channel_is_constant():
    draw = RandomUniform(-2, 3)((4, 2, 8, 8), torch.Generator().manual_seed(0))
    assert draw.min() >= -2 and draw.max() < 3 and draw.std() > 1
    nulled = RandomNormalNullChannel(1, null_value=0.5)((3, 2, 4, 4), torch.Generator().manual_seed(0))
    assert torch.all(nulled[:, 1] == 0.5) and nulled[:, 0].std() > 0.5


def test_from_array_broadcasts_and_adds_per_seed_noise():
    start = FromArray([[1.0, 2.0], [3.0, 4.0]])((2, 1, 2, 2), torch.Generator().manual_seed(0))
    assert start[1, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    noisy = FromArray([[0.0, 0.0], [0.0, 0.0]], noise_std=1.0)
    assert not torch.equal(noisy((1, 1, 2, 2), torch.Generator().manual_seed(0)), noisy((1, 1, 2, 2), torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="does not fit"):
        FromArray([1.0, 2.0, 3.0])((1, 1, 2, 2), torch.Generator())


# ------------------------------------------------------------------ stoppers

class FakeState:
    def __init__(self, i_iter, progress, evaluation=None, sign=1.0):
        self.i_iter = i_iter
        self.progress = torch.as_tensor(progress, dtype=torch.float32)
        self.evaluation_per_item = self.progress if evaluation is None else torch.as_tensor(evaluation)
        self.sign = sign


def test_num_iterations_stops_at_n():
    stopper = NumIterations(3)
    assert [stopper(FakeState(i, [0.0]))[0] for i in range(5)] == [False, False, False, True, True]
    # it declares that step, so the engine need not call it before (stoppers that watch progress cannot)
    assert stopper.earliest_stop == 3
    assert EarlyStopper().earliest_stop is None and LossRange().earliest_stop is None


def test_early_stopper_stops_each_item_after_its_own_patience():
    stopper = EarlyStopper(patience=2, min_delta=0.1, max_iterations=100)
    # item 0 keeps improving; item 1 stalls from step 1 on
    history = [[0.0, 0.0], [1.0, 0.05], [2.0, 0.05], [3.0, 0.05]]
    decisions = [stopper(FakeState(i, p))[0].tolist() for i, p in enumerate(history)]
    assert decisions == [[False, False], [False, False], [False, True], [False, True]]
    assert stopper(FakeState(4, [4.0, 0.0]))[1][1] == "no_improvement"
    assert EarlyStopper(patience=5, max_iterations=2)(FakeState(2, [0.0]))[1] == ["max_iterations"]


def test_evaluation_threshold_respects_the_direction():
    maximise = EvaluationThreshold(1.0)(FakeState(0, [0.5, 1.5]))
    assert maximise[0].tolist() == [False, True] and maximise[1][1] == "threshold"
    minimise = EvaluationThreshold(-1.0)(FakeState(0, [-0.5, -1.5], sign=-1.0))
    assert minimise[0].tolist() == [False, True]


def test_loss_range_stops_when_the_recent_losses_are_flat():
    stopper = LossRange(n_runs=3, threshold=0.01)
    losses = [[5.0, 5.0], [4.0, 5.0], [3.0, 5.001], [2.0, 5.0]]
    decisions = [stopper(FakeState(i, [-l for l in loss]))[0].tolist() for i, loss in enumerate(losses)]
    assert decisions == [[False, False], [False, False], [False, True], [False, True]]


# ------------------------------------------------------------------ transforms

def test_jitter_shifts_each_row_by_its_own_stream_independent_of_the_batch():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    jitter = Jitter(2)
    batched = jitter(x, step(2, seeds=[10, 20]))
    alone = jitter(one(x, 1), Step.of_seeds([20]))
    assert torch.equal(batched[1:2], alone)
    # a circular shift keeps the pixel values
    assert sorted(batched[0].flatten().tolist()) == sorted(x[0].flatten().tolist())
    assert jitter.random and torch.equal(jitter.at_evaluation(x), x)


def test_jitter_is_torch_roll_of_each_row_by_the_shift_drawn_from_its_stream():
    x = torch.randn(6, 2, 7, 9, generator=torch.Generator().manual_seed(0))
    where = step(6, i_iter=3, seeds=[5, 6, 7, 8, 9, 10])
    shifts = -where.integers(Jitter.stream, 2, (5, 7), low=(-2, -3))  # minus the draws Jitter((2, 3)) makes
    jittered = Jitter((2, 3))(x, where)
    for row in range(6):
        dy, dx = shifts[row].tolist()
        assert torch.equal(jittered[row], torch.roll(x[row], (dy, dx), (-2, -1)))
    assert shifts[:, 0].abs().max() <= 2 and shifts[:, 1].abs().max() <= 3 and len(set(map(tuple, shifts.tolist()))) > 2


def test_random_draws_of_a_row_depend_on_its_seed_row_and_step_alone():
    # item 7 (seed 30) has rows 1 and 2; alone, in a batch, and as a processed subset it draws the same
    batch = RowStreams([10, 30, 20], torch.tensor([0, 1, 1, 2]))
    alone = RowStreams([30], torch.tensor([0, 0]))
    for i_iter in (0, 31, 32, 100):  # across steps drawn by one hash evaluation and by the next
        whole = batch.integers(4, 3, 1000, i_iter)
        assert torch.equal(whole[1:3], alone.integers(4, 3, 1000, i_iter))
        assert torch.equal(batch.integers(4, 3, 1000, i_iter, rows=torch.tensor([2, 3])), whole[2:4])
        assert torch.equal(batch.uniform(4, 3, i_iter)[1:3], alone.uniform(4, 3, i_iter))
    # a fresh stream object asked for step 100 first gives the same numbers (draws are counter-based)
    assert torch.equal(RowStreams([30], torch.tensor([0, 0])).integers(4, 3, 1000, 100), alone.integers(4, 3, 1000, 100))
    assert torch.equal(batch.integers(4, 3, 1000, 5, low=-500), batch.integers(4, 3, 1000, 5) - 500)
    # wide draws (a white-noise image per row) are made a step at a time: the same numbers again
    wide = batch.normal(4, 5000, 33)
    assert torch.equal(wide[1:3], alone.normal(4, 5000, 33)) and wide.shape == (4, 5000)
    assert torch.equal(RowStreams([30], torch.tensor([0, 0])).normal(4, 5000, 33), wide[1:3])
    first = batch.integers(4, 1, 2**30, 0)[:, 0].tolist()
    assert len(set(first)) == 4  # rows of one item differ too
    assert batch.integers(4, 1, 2**30, 1)[:, 0].tolist() != first and batch.integers(5, 1, 2**30, 0)[:, 0].tolist() != first


def test_a_row_draws_the_same_numbers_however_many_steps_its_batch_draws_at_once():
    # a lone row draws thousands of steps in one hash evaluation, a row among 1024 only 32
    alone = RowStreams([30], torch.tensor([0]))
    crowd = RowStreams(list(range(1000, 1005)) + [30] + list(range(2000, 2018)), torch.arange(24).repeat_interleave(43)[:1024])
    row = 5 * 43  # the first row of the item with seed 30
    for i_iter in (0, 31, 32, 33, 100, 2047, 2048, 2049, 5000):
        assert torch.equal(crowd.integers(4, 2, 1000, i_iter)[row], alone.integers(4, 2, 1000, i_iter)[0])
        assert torch.equal(crowd.uniform(4, 3, i_iter)[row], alone.uniform(4, 3, i_iter)[0])
    (start, end, _), *_ = alone._chunks.values()
    (crowd_start, crowd_end, _), *_ = crowd._chunks.values()
    assert end - start == 2048 and crowd_end - crowd_start == 32


def test_the_fast_int32_hash_gives_the_bits_of_the_reference_hash():
    from mei_core.streams import _as_int32, _hash32_int32, _hash_int

    values = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 0x9E3779B9, 123456789]
    fast = _hash32_int32(_as_int32(torch.tensor(values)))  # relies on int32 products wrapping
    assert (fast.long() & 0xFFFFFFFF).tolist() == [_hash_int(v) for v in values]


def test_random_draws_are_uniform_and_independent_of_the_neighbouring_seed():
    streams = RowStreams(list(range(2000)), torch.arange(2000))
    draws = torch.cat([streams.integers(0, 5, 5, i) for i in range(4)]).flatten()  # 40k draws in 0..4
    counts = torch.bincount(draws, minlength=5).float()
    assert draws.min() == 0 and draws.max() == 4 and (counts / counts.sum() - 0.2).abs().max() < 0.01
    u = RowStreams(list(range(20000)), torch.arange(20000)).uniform(1, 2, 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    # consecutive seeds (as a shard's items have) and the two draws of a row are uncorrelated (|r| < 4σ)
    assert abs(torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0]]))[0, 1].item()) < 0.03
    assert abs(torch.corrcoef(u.T)[0, 1].item()) < 0.03


def test_the_random_transforms_of_one_method_draw_from_different_streams():
    jitter, crop = Jitter(1), RandomCrop(4, 4)
    Compose([jitter, crop])
    assert jitter.stream == Jitter.stream and crop.stream != jitter.stream


def test_pad_jitter_shifts_in_padding_and_crops_back():
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5).repeat(40, 1, 1, 1)
    where = step(40, seeds=list(range(40)))
    shifted = PadJitter(pad=2, max_jitter=2, value=-1.0)(x, where)
    shifts = 2 - where.integers(PadJitter.stream, 2, (5, 5), low=(0, 0))  # the window starts at pad − shift
    for row in range(40):
        dy, dx = shifts[row].tolist()
        expected = torch.full((5, 5), -1.0)  # the shifted image over a padded canvas
        expected[max(dy, 0) : 5 + min(dy, 0), max(dx, 0) : 5 + min(dx, 0)] = x[row, 0, max(-dy, 0) : 5 - max(dy, 0), max(-dx, 0) : 5 - max(dx, 0)]
        assert torch.equal(shifted[row, 0], expected)
    reflected = PadJitter(pad=1, max_jitter=1, mode="reflect")(x, where)
    assert reflected.shape == x.shape and reflected.min() >= 1  # reflect padding brings in image pixels only
    assert torch.equal(PadJitter(2, 2).at_evaluation(x), x)


def test_random_scale_zooms_each_row_about_its_centre():
    ramp = torch.arange(9, dtype=torch.float32).view(1, 1, 1, 9).expand(3, 1, 7, 9)
    assert torch.allclose(RandomScale(1.0, 1.0)(ramp, step(3)), ramp, atol=1e-5)
    doubled = RandomScale(2.0, 2.0)(ramp, step(3))
    # magnified twice: the ramp's slope halves, the centre column stays (bilinear is exact on a ramp)
    assert torch.allclose(doubled[:, 0, 3, 2:7], torch.tensor([3.0, 3.5, 4.0, 4.5, 5.0]).expand(3, 5), atol=1e-5)
    scales = RandomScale(0.5, 1.5)
    scaled = scales(ramp, step(3, seeds=[1, 2, 3]))
    expected = 0.5 + step(3, seeds=[1, 2, 3]).uniform(RandomScale.stream, 1)[:, 0]
    slopes = scaled[:, 0, 3, 5] - scaled[:, 0, 3, 4]
    assert torch.allclose(slopes, 1 / expected, atol=1e-4)
    assert torch.equal(scales.at_evaluation(ramp), ramp)


def test_random_rotation_turns_each_row_by_its_own_angle_on_non_square_images():
    height, width = 9, 15
    ramp = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width).expand(4, 2, height, width)
    where = step(4, seeds=[3, 4, 5, 6])
    rotated = RandomRotation(30.0)(ramp, where)
    angle = torch.deg2rad((2 * where.uniform(RandomRotation.stream, 1)[:, 0] - 1) * 30.0)
    y, x = torch.meshgrid(torch.arange(height) - (height - 1) / 2, torch.arange(width) - (width - 1) / 2, indexing="ij")
    # output pixel (y, x) shows the input at the rotated point: its column, on a ramp
    expected = (width - 1) / 2 + torch.cos(angle)[:, None, None] * x - torch.sin(angle)[:, None, None] * y
    inner = (slice(None), 0, slice(3, 6), slice(5, 10))
    assert torch.allclose(rotated[inner], expected[:, 3:6, 5:10], atol=1e-4)
    assert torch.equal(rotated[:, 0], rotated[:, 1])  # channels share their row's rotation
    assert angle.abs().max() <= torch.deg2rad(torch.tensor(30.0)) and len(set(angle.tolist())) == 4
    assert torch.allclose(RandomRotation(0.0)(ramp, where), ramp, atol=1e-5)


def test_random_crop_crops_to_size_and_centres_at_evaluation():
    x = torch.arange(1 * 1 * 6 * 8, dtype=torch.float32).reshape(1, 1, 6, 8)
    crop = RandomCrop(4, 4)
    assert crop(x, step(1)).shape == (1, 1, 4, 4)
    many = x.expand(30, 1, 6, 8)
    where = step(30, i_iter=2, seeds=list(range(30)))
    offsets = where.integers(RandomCrop.stream, 2, (3, 5))
    crops = crop(many, where)
    for row in range(30):
        oy, ox = offsets[row].tolist()
        assert torch.equal(crops[row], x[0, :, oy : oy + 4, ox : ox + 4])
    assert len(set(map(tuple, offsets.tolist()))) > 5
    assert torch.equal(crop.at_evaluation(x), x[..., 1:5, 2:6])
    with pytest.raises(ValueError, match="larger than the input"):
        RandomCrop(10, 10)(x, step(1))


def test_change_range_maps_into_bounds_and_resize_scales():
    squashed = ChangeRange(-2, 5)(torch.tensor([[-100.0, 0.0, 100.0]]).view(1, 1, 1, 3), step(1))
    assert squashed.flatten().tolist() == pytest.approx([-2.0, 1.5, 5.0])
    assert Resize(scale_factor=2)(torch.ones(2, 1, 3, 4), step(2)).shape == (2, 1, 6, 8)
    assert torch.allclose(Resize(size=(5, 5))(torch.full((1, 1, 3, 3), 2.0), step(1)), torch.full((1, 1, 5, 5), 2.0))
    assert Resize(size=(4, 6))(torch.ones(2, 2, 7, 3, 3), step(2)).shape == (2, 2, 7, 4, 6)


def test_alpha_blend_mixes_image_and_background_by_opacity():
    x = torch.zeros(1, 2, 1, 2)
    x[0, 0] = 3.0
    x[0, 1] = torch.tensor([[100.0, -100.0]])  # opaque, transparent
    blended = AlphaBlend(background=1.0)(x, step(1))
    assert blended.shape == (1, 1, 1, 2)
    assert blended.flatten().tolist() == pytest.approx([3.0, 1.0])


# ------------------------------------------------------------------ regularizers

def test_total_variation_counts_neighbour_differences_per_row():
    x = torch.stack([torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [2.0, 2.0]])])[:, None]
    assert TotalVariation(weight=0.5)(x, step(2)).tolist() == [1.0, 2.0]


def test_lp_norm_and_l1l2_per_row():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]]).view(2, 1, 1, 2)
    assert LpNorm(p=2, weight=2.0)(x, step(2)).tolist() == pytest.approx([10.0, 2.0])
    assert L1L2(l1=1.0, l2=1.0)(x, step(2)).tolist() == pytest.approx([3.5 + 12.5, 0.5 + 0.5])


def test_similarity_penalises_only_rows_of_the_same_item():
    a = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    b = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    x = torch.cat([a, a, b])
    penalty = Similarity(weight=2.0)(x, step(3, row_items=[0, 0, 1]))
    assert penalty.tolist() == pytest.approx([2.0, 2.0, 0.0], abs=1e-5)


def test_opacity_penalty_is_the_mean_alpha():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 1] = 100.0
    assert OpacityPenalty(weight=3.0)(x, step(1)).item() == pytest.approx(3.0)


# ------------------------------------------------------------------ preconditioners

def test_gaussian_blur_is_per_row_keeps_constants_and_decays_its_sigma():
    g = torch.randn(3, 2, 10, 10, generator=torch.Generator().manual_seed(0))
    blur = GaussianBlur(sigma=2.0, decay_factor=0.5, min_sigma=0.3)
    batched = blur(g, step(3))
    assert torch.allclose(batched[2:3], blur(g[2:3], step(1)), atol=1e-6)
    assert torch.allclose(blur(torch.full((1, 1, 6, 6), 3.0), step(1)), torch.full((1, 1, 6, 6), 3.0), atol=1e-6)
    assert batched.std() < g.std()
    assert torch.equal(blur(g, step(3, i_iter=3)), g)  # sigma 0.25 is under min_sigma


def test_fourier_smoothing_passes_constants_and_damps_fine_detail():
    checkerboard = ((torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2 - 1).float().view(1, 1, 8, 8)
    constant = torch.ones(1, 1, 8, 8)
    smooth = FourierSmoothing(exponent=1.0)
    assert torch.allclose(smooth(constant, step(1)), constant, atol=1e-6)
    assert smooth(checkerboard, step(1)).abs().max() < 0.2


def test_divide_by_mean_of_absolute_normalises_every_row_on_its_own():
    g = torch.stack([torch.full((1, 3, 3), 0.01), torch.full((1, 3, 3), -50.0)])
    normalised = DivideByMeanOfAbsolute()(g, step(2))
    assert normalised.abs().flatten(1).mean(1).tolist() == pytest.approx([1.0, 1.0])
    assert normalised[1].max() < 0


def test_multiply_by_decays_geometrically():
    assert MultiplyBy(const=2.0, decay_factor=0.5)(torch.ones(1, 1, 1, 1), step(1, i_iter=2)).item() == 0.5


# ------------------------------------------------------------------ postprocessors

def test_change_norm_sets_every_rows_norm():
    x = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.1, 1, 10, 100]).view(4, 1, 1, 1)
    assert ChangeNorm(3.0)(x, step(4)).flatten(1).norm(dim=1).tolist() == pytest.approx([3.0] * 4, rel=1e-5)


def test_pnorm_constraint_shrinks_only_rows_above_the_norm():
    x = torch.stack([torch.tensor([[3.0, 4.0]]), torch.tensor([[0.3, 0.4]])])[:, None]  # norms 5 and 0.5
    constrained = PNormConstraintAndClip(norm_value=1.0, x_max=0.7)(x, step(2))
    assert constrained[0].flatten().tolist() == pytest.approx([0.6, 0.7])  # 0.8 clipped to 0.7
    assert constrained[1].flatten().tolist() == pytest.approx([0.3, 0.4])


def test_clip_and_change_std_and_blurring_the_input():
    x = torch.tensor([[-5.0, 0.0, 5.0, 1.0]]).view(1, 1, 2, 2)
    assert ClipRange(-1, 2)(x, step(1)).flatten().tolist() == [-1.0, 0.0, 2.0, 1.0]
    changed = ChangeStd(2.0)(x, step(1))
    assert changed.std().item() == pytest.approx(2.0) and changed.mean().item() == pytest.approx(x.mean().item())
    noisy = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    assert GaussianBlurInput(sigma=1.0)(noisy, step(2)).std() < 0.6 * noisy.std()


def test_joint_norm_with_per_channel_clip_and_temporal_low_pass():
    video = torch.randn(2, 2, 10, 3, 3, generator=torch.Generator().manual_seed(0))
    processed = ChangeNormJointlyClipRangeSeparately([[-0.5, 0.5], [-2.0, 2.0]], norm=5.0)(video, step(2))
    assert processed[:, 0].abs().max() <= 0.5 and processed[:, 1].abs().max() <= 2.0
    flicker = torch.tensor([1.0, -1.0] * 20).view(1, 1, 40, 1, 1).expand(1, 1, 40, 2, 2)
    low_passed = TemporalGaussianLowPass(sigma=2.0)(flicker, step(1))
    assert low_passed[:, :, 10:-10].abs().max() < 1e-3  # away from the replicate-padded ends


# ------------------------------------------------------------------ trackers and models

def test_tracker_copies_to_the_host_only_at_its_interval():
    tracker = EvaluationObjective(interval=2)

    class S:
        def __init__(self, i):
            self.i_iter, self.evaluation = i, torch.tensor([float(i)])

    for i in range(5):
        tracker(S(i))
    assert tracker.steps == [0, 2, 4] and [v.item() for v in tracker.values] == [0.0, 2.0, 4.0]


def test_ensembles_average_or_stack_and_constrained_models_select_units():
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    mean = EnsembleModel(a, b)(x)
    assert torch.allclose(mean, (a(x) + b(x)) / 2)
    assert EnsembleModel(a, b, reduce="stack")(x).shape == (2, 5, 4)
    assert torch.allclose(ConstrainedOutputModel(a, 2)(x), a(x)[:, 2])
    assert ConstrainedOutputModel(a, [0, 3])(x).shape == (5, 2)
    per_row = BatchedConstrainedOutputModel(a, units=[0, 1, 2, 3, 0])
    assert torch.allclose(per_row(x), a(x)[torch.arange(5), torch.tensor([0, 1, 2, 3, 0])])
    assert torch.allclose(per_row(x[[1, 3]], row_units=per_row.units[[1, 3]]), a(x)[[1, 3], [1, 3]])
    with pytest.raises(IndexError, match="unit 9 out of range"):
        BatchedConstrainedOutputModel(a, units=[9])(x[:1])


def test_the_unit_selector_reuses_its_gather_index_only_for_outputs_of_the_same_shape():
    select = BatchedConstrainedOutputModel(torch.nn.Identity(), units=[0, 1, 2]).select
    row_units = torch.tensor([3, 0])  # the same tensor every call, as the engine passes it
    for shape in [(2, 4), (2, 4), (2, 3, 4), (2, 5, 4), (2, 5, 6)]:  # B×N, then videos B×T×N
        output = torch.randn(shape)
        assert torch.equal(select(output, row_units), torch.stack([output[0, ..., 3], output[1, ..., 0]]))


# ------------------------------------------------------------------ videos (B×C×T×H×W)

VIDEO_COMPONENTS = [
    Jitter(1), RandomCrop(4, 4), PadJitter(1, 1), RandomScale(0.8, 1.2), RandomRotation(20.0), ChangeRange(-1, 1), Resize(scale_factor=2),
    GaussianBlur(sigma=1.0), FourierSmoothing(), DivideByMeanOfAbsolute(), MultiplyBy(2.0),
    ChangeNorm(3.0), ClipRange(-1, 1), PNormConstraintAndClip(1.0), ChangeStd(1.0), GaussianBlurInput(1.0),
    TemporalGaussianLowPass(1.0), ChangeNormJointlyClipRangeSeparately([[-1, 1], [-2, 2]], norm=4.0),
]


@pytest.mark.parametrize("component", VIDEO_COMPONENTS, ids=lambda c: type(c).__name__)
def test_every_spatial_component_takes_videos_row_by_row(component):
    video = torch.randn(3, 2, 5, 6, 6, generator=torch.Generator().manual_seed(0))
    batched = component(video, step(3, seeds=[4, 5, 6]))
    alone = component(video[2:3], Step.of_seeds([6]))
    assert batched.dim() == 5 and batched.shape[:3] == (3, 2, 5)
    torch.testing.assert_close(batched[2:3], alone, atol=1e-5, rtol=1e-5)


def test_spatial_components_refuse_inputs_that_are_neither_images_nor_videos():
    with pytest.raises(ValueError, match=r"needs images B×C×H×W or videos B×C×T×H×W"):
        GaussianBlur(sigma=1.0)(torch.randn(2, 10), step(2))
    with pytest.raises(ValueError, match="temporal filtering needs videos"):
        TemporalGaussianLowPass(1.0)(torch.randn(2, 1, 4, 4), step(2))
    assert TotalVariation(temporal_weight=1.0)(torch.randn(2, 1, 3, 4, 4), step(2)).shape == (2,)


def test_the_hoefling_2024_preset_runs_on_a_video_model():
    from mei_core import batched_gradient_ascent
    from mei_core.presets import hoefling2024 as hoefling_2024_preset
    from mei_core.objectives import IncreaseObjective, SliceMeanReducer

    model = torch.nn.Sequential(torch.nn.Conv3d(2, 3, (3, 3, 3)), torch.nn.Flatten(3), torch.nn.Softplus())

    class TimeFirst(torch.nn.Module):
        def forward(self, x, data_key=None):
            return model(x).mean(3).transpose(1, 2)  # B×T'×3

    objective = IncreaseObjective(TimeFirst(), [0, 2], response_reducer=SliceMeanReducer(axis=0, start=10, length=10))
    result = batched_gradient_ascent(objective, hoefling_2024_preset(), seeds=[0, 1], shape=(2, 24, 8, 8))
    norms = result.meis.flatten(1).norm(dim=1)
    assert result.n_iterations == [10, 10] and torch.all(norms <= 30.0 + 1e-3)
    assert result.meis[:, 0].min() >= -0.654 - 1e-6 and result.meis[:, 1].min() >= -0.913 - 1e-6
