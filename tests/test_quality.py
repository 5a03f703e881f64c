"""Saying when an MEI is wrong: input_stats from a sample, the plan-time check of stated statistics
against the members, the label-free quality columns and their flags, the summary's suspect counts,
and cell types from a lab's own ground truth (mei_core/pipeline/quality.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mei_core.errors import MEIConfigError
from mei_core.pipeline import quality
from mei_core.pipeline.plan import prepare
from quality import at_least

torch.set_num_threads(1)

DISPLAY = {"mean": [120.0], "std": [45.0], "range": [0.0, 255.0]}
README_EXAMPLE = {"mean": [0.0], "std": [1.0], "range": [-1.9, 2.4]}

# A lab's model trained on display levels 0–255: a batch norm standardises the stimulus (its running
# statistics are those of the training stimuli), then linear filters and a positive output.
LAB = '''
import math
import torch


class DisplayLevelModel(torch.nn.Module):
    def __init__(self, n_neurons=4, size=12, mean=120.0, std=45.0):
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(1)
        self.norm.running_mean.fill_(mean)
        self.norm.running_var.fill_(std ** 2)
        coords = torch.arange(size) - (size - 1) / 2
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        filters = []
        for k in range(n_neurons):
            theta = k * math.pi / n_neurons
            along = xx * math.cos(theta) + yy * math.sin(theta)
            filters.append(torch.exp(-(xx**2 + yy**2) / 18.0) * torch.cos(2 * math.pi * along / 5.0))
        filters = torch.stack(filters)
        self.register_buffer("filters", filters / filters.flatten(1).norm(dim=1)[:, None, None])

    def forward(self, x):
        drive = torch.einsum("bhw,nhw->bn", self.norm(x)[:, 0], self.filters)
        return torch.nn.functional.elu(drive) + 1.0


def build(n_neurons=4, size=12):
    return DisplayLevelModel(n_neurons, size).eval()
'''


def lab_project(folder, input_stats, n_neurons=4, size=12):
    """A project whose one member is the lab's display-level model (no checkpoint: built by code)."""
    (folder / "lab").mkdir(parents=True, exist_ok=True)
    (folder / "lab" / "display_lab.py").write_text(LAB)
    return {
        "device": "cpu", "threads": 1, "shard_size": 4, "seeds": [0, 1], "pythonpath": ["lab"],
        "ensembles": {"display": {
            "input_shape": [1, size, size], "outputs": n_neurons, "input_stats": input_stats,
            "members": [{"builder": "display_lab.build", "builder_kwargs": {"n_neurons": n_neurons, "size": size}, "files": ["lab/display_lab.py"]}],
        }},
        "objectives": {"display": {"neurons": "all"}},
        "methods": {"default": {"preset": "default", "params": {"iterations": 40}}},
    }


def display_sample(n=200, size=12, seed=0):
    """Training stimuli of the lab: 1/f noise at display levels (mean 120, std 45, within 0–255)."""
    return quality.pink_noise(n, [1, size, size], DISPLAY, seed=seed).numpy()


# --------------------------------------------------------------------------- input_stats from a sample


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".zarr"])
def test_input_stats_from_a_sample_are_its_per_channel_mean_std_and_range(tmp_path, suffix):
    sample = np.random.default_rng(0).normal([[[[10.0]], [[-2.0]]]], [[[[3.0]], [[0.5]]]], size=(50, 2, 4, 6)).astype(np.float32)
    path = tmp_path / f"sample{suffix}"
    if suffix == ".npy":
        np.save(path, sample)
    elif suffix == ".npz":
        np.savez(path, stimuli=sample)
    else:
        import zarr

        zarr.create_array(str(path), shape=sample.shape, chunks=(7, 2, 4, 6), dtype="float32")[:] = sample
    stats = quality.sample_stats(path, [2, 4, 6], "ensembles.e.input_stats.from", chunk=16)
    per_channel = np.moveaxis(sample.astype(np.float64), 1, 0).reshape(2, -1)
    np.testing.assert_allclose(stats["mean"], per_channel.mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], per_channel.std(1), rtol=1e-9)
    assert stats["range"] == [[float(per_channel[c].min()), float(per_channel[c].max())] for c in range(2)]


def test_a_video_sample_gives_statistics_over_time_and_space(tmp_path):
    videos = np.arange(2 * 3 * 5 * 2 * 2, dtype=np.float32).reshape(2, 3, 5, 2, 2)
    np.save(tmp_path / "videos.npy", videos)
    stats = quality.sample_stats(tmp_path / "videos.npy", [3, 5, 2, 2], "k")
    assert stats["mean"] == [float(videos[:, c].mean()) for c in range(3)]


@pytest.mark.parametrize("content, message", [
    (np.zeros((5, 1, 12, 10)), "has shape [5, 1, 12, 10]; expected [N, 1, 12, 12]"),
    (np.full((5, 1, 12, 12), np.nan), "non-finite values (first in stimulus 0)"),
    (np.ones((5, 1, 12, 12)), "is constant in channel 0"),
    ("not an array", "cannot read"),
])
def test_a_bad_sample_is_refused_naming_the_key_and_the_file(tmp_path, content, message):
    path = tmp_path / "sample.npy"
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)
    with pytest.raises(MEIConfigError, match="ensembles.display.input_stats.from") as error:
        prepare(lab_project(tmp_path, {"from": "sample.npy"}), tmp_path, write=False, jobs_run_here=False)
    assert message in str(error.value) and "sample.npy" in str(error.value)


def test_from_a_sample_the_plan_derives_the_presets_and_records_the_file_in_the_manifest_spec(tmp_path):
    np.save(tmp_path / "sample.npy", display_sample())
    plan = prepare(lab_project(tmp_path, {"from": "sample.npy"}), tmp_path, jobs_run_here=False)
    spec = json.loads((tmp_path / plan.paths.member_spec("display", "members")).read_text())
    recorded = spec["input_stats"]
    assert recorded["from"] == "sample.npy" and recorded["n_stimuli"] == 200 and len(recorded["sha256"]) == 64
    assert recorded["mean"][0] == pytest.approx(120.0, abs=2.0) and recorded["std"][0] == pytest.approx(45.0, rel=0.05)
    method = json.loads((tmp_path / plan.paths.method_spec("display", "default")).read_text())
    clip = method["config"]["postprocessing"][0]["kwargs"]
    assert (clip["mean"], clip["x_min"], clip["x_max"]) == (recorded["mean"][0], recorded["range"][0], recorded["range"][1])
    assert "sample.npy" in plan.member_files("display", "members")  # a changed sample is assembled again


# --------------------------------------------------------------------------- the plan-time check


def test_the_readme_example_stats_are_refused_at_plan_time_for_a_model_of_display_levels(tmp_path):
    with pytest.raises(MEIConfigError) as error:
        prepare(lab_project(tmp_path, README_EXAMPLE), tmp_path, write=False, jobs_run_here=False)
    message = str(error.value)
    assert message.startswith("ensembles.display.input_stats: implausible for ensembles.display.members[0]")
    # the stated std is 1/45 of the training std (a little less: the noise is clipped to the stated range)
    assert "first batch norm (norm) with 0.0215× the std it saw in training" in message and "check: warn" in message


def test_with_check_warn_the_wrong_stats_are_warned_about_and_the_plan_goes_on(tmp_path, capsys):
    prepare(lab_project(tmp_path, {**README_EXAMPLE, "check": "warn"}), tmp_path, write=False, jobs_run_here=False)
    assert "warning: ensembles.display.input_stats: implausible" in capsys.readouterr().err


def test_the_training_stimuli_statistics_pass_the_check_and_tenfold_wrong_ones_do_not():
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1)).eval()
    model[0].running_mean.fill_(120.0)
    model[0].running_var.fill_(45.0**2)
    right = quality.stats_check(model, [1, 12, 12], DISPLAY)
    assert right.problem is None and right.bn_std_ratio == pytest.approx(1.0, abs=0.02)
    for std in (4.5, 450.0):  # ×0.1 and ×10 of the training std
        assert quality.stats_check(model, [1, 12, 12], {"mean": [120.0], "std": [std]}).problem is not None
    without_bn = quality.stats_check(torch.nn.Flatten(), [1, 12, 12], README_EXAMPLE)
    assert without_bn.problem is None and without_bn.bn_layer is None  # not decidable: the flags judge the MEIs


# --------------------------------------------------------------------------- per-MEI columns


def test_noise_is_drawn_with_the_stated_mean_and_std_per_channel_and_clipped_to_the_range():
    noise = quality.pink_noise(64, [2, 16, 16], {"mean": [5.0, -1.0], "std": [2.0, 0.5]}).double()
    np.testing.assert_allclose(noise.mean((0, 2, 3)), [5.0, -1.0], atol=1e-5)
    np.testing.assert_allclose(noise.std((0, 2, 3)), [2.0, 0.5], rtol=0.01)
    clipped = quality.pink_noise(8, [1, 16, 16], {"mean": [0.0], "std": [1.0], "range": [-0.5, 0.5]})
    assert clipped.min() == -0.5 and clipped.max() == 0.5


def test_baselines_of_a_row_in_a_batch_equal_those_of_the_row_alone():
    from mei_core.objectives import UnitObjective

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 5), torch.nn.Flatten(), torch.nn.LazyLinear(6)).eval()
    model(torch.zeros(1, 1, 12, 12))
    objective = UnitObjective(model, units=[0, 1, 2, 3, 4, 5])
    sample = quality.pink_noise(10, [1, 12, 12], DISPLAY, seed=3).numpy()
    contrast = np.array([30.0, 60.0, 90.0, 120.0, 150.0, 180.0], dtype=np.float32)
    together = quality.baseline_responses(objective, np.arange(6), [1, 12, 12], DISPLAY, "cpu", contrast, max_batch=7, sample=sample)
    alone = quality.baseline_responses(objective, np.array([4]), [1, 12, 12], DISPLAY, "cpu", contrast[4:5], sample=sample)
    for name in ("mean_response", "noise_response", "sample_best"):
        np.testing.assert_allclose(together[name][4], alone[name][0], rtol=1e-5)


def test_clip_fraction_counts_the_pixels_at_either_bound():
    meis = np.array([[[[0.0, 255.0], [100.0, 120.0]]], [[[10.0, 20.0], [30.0, 40.0]]]], dtype=np.float32)
    np.testing.assert_array_equal(quality.clip_fraction(meis, DISPLAY), [0.5, 0.0])
    # without a range the bounds are the default preset's mean ± 3 std
    # without a range the bounds are the default preset's mean ± 3 std: [-15, 255]
    np.testing.assert_array_equal(quality.clip_fraction(meis, {"mean": [120.0], "std": [45.0]}), [0.25, 0.0])


def test_seed_agreement_is_high_for_shifted_copies_and_low_for_unrelated_noise():
    y, x = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    grating = np.cos(2 * np.pi * x / 4.0)[None]
    shifted = np.cos(2 * np.pi * x / 4.0 + np.pi / 2)[None]  # the same grating a quarter cycle on
    noise = np.random.default_rng(0).normal(size=(2, 1, 16, 16))
    meis = np.stack([np.stack([grating, noise[0]]), np.stack([shifted, noise[1]])])  # seeds × MEIs × C×H×W
    agreement = quality.seed_agreement(meis)
    assert agreement[:, 0].min() > 0.99 and agreement[:, 1].max() < 0.3
    assert np.isnan(quality.seed_agreement(meis[:1])).all()  # one seed: nothing to agree with


def test_each_flag_names_the_rule_that_an_mei_breaks():
    table = {"gain": np.array([3.0, 1.1, np.nan, 3.0]), "sample_ratio": np.array([1.5, 0.5, np.nan, 1.2]),
             "clip_fraction": np.array([0.0, 0.9, 0.0, 0.0]), "seed_agreement": np.array([0.9, 0.9, np.nan, 0.1])}
    assert list(quality.quality_flags(table)) == ["", "low_gain,below_sample,at_clip", "", "seeds_disagree"]


def test_the_summary_counts_suspect_meis_by_flag_per_ensemble_and_method(tmp_path):
    from mei_core.pipeline.results import summary

    path = tmp_path / "scores.parquet"
    pd.DataFrame({"ensemble": ["e"] * 4 + ["f"], "method": ["m"] * 5, "status": ["ok", "suspect", "suspect", "non_finite", "ok"],
                  "quality_flags": ["", "low_gain", "low_gain,at_clip", "", ""]}).to_parquet(path)
    text = summary(str(path))
    assert text.startswith("5 MEIs, 3 not ok (2 suspect)")
    by_flag = text.split("suspect MEIs by quality flag")[1].splitlines()
    row = next(line.split() for line in by_flag if line.startswith("e "))
    header = next(line.split() for line in by_flag if "at_clip" in line)
    assert dict(zip(header[1:], map(int, row[2:]))) == {"at_clip": 1, "low_gain": 2}


# --------------------------------------------------------------------------- cell types of a lab's ground truth


def test_cell_types_of_a_filters_file_reach_the_validation_table(tmp_path):
    import xarray as xr

    from mei_core.pipeline.ground_truth import FiltersGroundTruth

    filters = np.random.default_rng(1).normal(size=(3, 1, 4, 4))
    meis = xr.Dataset({"mei": (("method", "seed", "neuron", "channel", "y", "x"), filters[None, None])},
                      coords={"method": ["m"], "seed": [0], "neuron": [10, 11, 12]})
    table = pd.DataFrame({"method": ["m"] * 3, "seed": [0] * 3, "neuron_id": [10, 11, 12], "output_unit": [2, 0, 1], "mei_index": [0] * 3})
    path = str(tmp_path / "truth.npz")
    np.savez(path, filters=filters[[1, 2, 0]], cell_type=np.array(["simple", "complex", "dog"]))
    validated = FiltersGroundTruth().validate(path, meis, table, None)
    assert list(validated["cell_type"]) == ["dog", "simple", "complex"]
    np.testing.assert_allclose(validated["filter_correlation"], 1.0, atol=1e-6)


def test_a_cell_type_array_of_the_wrong_length_is_refused_naming_the_file(tmp_path):
    from mei_core.pipeline.ground_truth import FiltersGroundTruth

    np.savez(tmp_path / "truth.npz", filters=np.zeros((3, 1, 4, 4)), cell_type=np.array(["a", "b"]))
    with pytest.raises(MEIConfigError, match=r"ensembles.e.ground_truth.file: 'cell_type' must hold one string per unit \(3\)"):
        FiltersGroundTruth().check(str(tmp_path / "truth.npz"), [1, 4, 4], 3, "ensembles.e.ground_truth.file")


# --------------------------------------------------------------------------- through the workflow


@pytest.fixture(scope="module")
def right_and_wrong(tmp_path_factory):
    """One run, two ensembles of the same display-level model: ``right`` with input_stats from a
    sample of its training stimuli (and a filters ground truth with cell types), ``wrong`` with the
    README's old example statistics, let past the check (``check: warn``)."""
    import importlib.util

    from workflow_support import snakemake, write_config

    folder = tmp_path_factory.mktemp("quality") / "project"
    folder.mkdir(parents=True)
    config = lab_project(folder, {"from": "sample.npy"})
    np.save(folder / "sample.npy", display_sample())
    spec = importlib.util.spec_from_file_location("display_lab", folder / "lab" / "display_lab.py")
    lab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab)
    filters = lab.build().filters.numpy()[:, None]
    np.savez(folder / "truth.npz", filters=filters, cell_type=np.array(["simple", "simple", "complex", "complex"]))
    right = config["ensembles"].pop("display")
    config["ensembles"] = {"right": {**right, "ground_truth": {"kind": "filters", "file": "truth.npz"}},
                           "wrong": {**right, "input_stats": {**README_EXAMPLE, "check": "warn"}}}
    config["objectives"] = {"right": {"neurons": "all"}, "wrong": {"neurons": "all"}}
    write_config(folder, config)
    result = snakemake(folder)
    return folder, result, lab.build()


@pytest.mark.slow
@pytest.mark.quality
def test_a_run_records_its_sample_stats_flags_the_wrong_stats_meis_and_counts_them(right_and_wrong):
    import xarray as xr

    from mei_core.pipeline.paths import Paths

    folder, result, model = right_and_wrong
    output = result.stdout + result.stderr
    assert "warning: ensembles.wrong.input_stats: implausible for ensembles.wrong.members[0]" in output
    manifest = json.loads((folder / Paths("results", "resources").manifest("right", "members")).read_text())
    assert manifest["input_stats"]["from"] == "sample.npy" and manifest["input_stats"]["mean"][0] == pytest.approx(120.0, abs=2.0)

    scores = pd.read_parquet(folder / "results" / "scores.parquet")
    right, wrong = (scores[scores["ensemble"] == e].sort_values(["seed", "neuron_id"]) for e in ("right", "wrong"))
    assert (right["quality_flags"] == "").all() and (right["status"] == "ok").all()  # the correct run: nothing flagged
    assert (right["gain"] > 1.5 * quality.GAIN_MIN).all() and (right["sample_ratio"] > 1.2).all()
    meis = {e: np.asarray(xr.open_zarr(folder / "results" / f"{e}.zarr")["mei"].sel({"method": "default"}).values) for e in ("right", "wrong")}
    with torch.no_grad():  # the truth is the model itself: its response at each MEI
        drive = {e: model(torch.from_numpy(m.reshape(-1, 1, 12, 12))).numpy().reshape(2, 4, 4)[:, np.arange(4), np.arange(4)].reshape(-1)
                 for e, m in meis.items()}
    weak = drive["wrong"] < 0.5 * drive["right"]
    assert weak.sum() >= 6  # black MEIs: the model's neurons hardly respond
    at_least("flagged share of the weak MEIs", (wrong["quality_flags"].to_numpy()[weak] != "").mean(), 0.9)
    assert (wrong.loc[wrong["quality_flags"] != "", "status"] == "suspect").all()
    assert "suspect MEIs by quality flag" in output and "low_gain" in output.split("suspect MEIs by quality flag")[1]

    validation = pd.read_parquet(folder / "results" / "validation.parquet")
    typed = validation[validation["ensemble"] == "right"]
    assert typed.groupby("cell_type")["filter_correlation"].median().to_dict().keys() == {"simple", "complex"}


def test_the_flag_table_of_config_readme_is_the_one_the_rules_generate():
    from workflow_support import REPO

    assert quality.flag_table_markdown() in (REPO / "config" / "README.md").read_text()


def test_figures_are_drawn_around_the_stimulus_mean_on_its_own_range():
    from mei_core.pipeline.report import _display_order, stimulus_limits

    assert stimulus_limits(DISPLAY, np.zeros(1)) == (-15.0, 120.0, 255.0)  # grey = 120, symmetric to reach 255
    assert stimulus_limits({"mean": [0.45], "std": [0.18]}, np.zeros(1)) == pytest.approx((-0.09, 0.45, 0.99))  # ± 3 std
    assert stimulus_limits(None, np.array([-2.0, 0.5])) == (-2.0, 0.0, 2.0)  # no statistics: symmetric about 0
    # with cell types each type starts a new line of the grid
    slots = _display_order(np.array([5, 6, 7]), {5: "simple", 6: "dog", 7: "simple"}, columns=4)
    assert slots == [(0, 5), (1, 7), (4, 6)]


@pytest.mark.slow
def test_a_changed_stimulus_sample_reruns_its_ensemble_and_nothing_else(right_and_wrong, tmp_path):
    from workflow_support import copy_project, planned_outputs

    folder = copy_project(right_and_wrong[0], tmp_path / "copy")
    np.save(folder / "sample.npy", display_sample(seed=1))  # other training stimuli: other statistics
    planned = planned_outputs(folder)
    assert {"assemble_ensemble", "generate_meis"} <= set(planned)
    rerun = [f for rule in ("assemble_ensemble", "generate_meis") for f in planned[rule]]
    assert any("/right/" in f for f in rerun) and not any("/wrong/" in f for f in rerun)


def test_without_a_batch_norm_a_rate_model_warns_about_a_contrast_far_from_its_training_one(capsys):
    # rates of linear filters (unit-std stimuli drive them about one unit) through a softplus
    filters = torch.randn(3, 144, generator=torch.Generator().manual_seed(0)) / 4.0
    rates = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3, bias=False), torch.nn.Softplus()).eval()
    rates[1].weight.data.copy_(filters)
    plausible = quality.stats_check(rates, [1, 12, 12], {"mean": [0.0], "std": [1.0]})
    tiny = quality.stats_check(rates, [1, 12, 12], {"mean": [0.0], "std": [0.01]})
    assert plausible.problem is None and tiny.response_cv < quality.RESPONSE_CV_RANGE[0] < plausible.response_cv
    quality.judge_stats([("member", tiny)], "refuse", "ensembles.e.input_stats")  # a warning, even with check: refuse
    assert "warning: ensembles.e.input_stats: implausible for member: the model has no batch norm" in capsys.readouterr().err
