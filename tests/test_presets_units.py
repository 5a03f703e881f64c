"""Every preset in the stimulus's own units (issue 19, item 3), and the preset registry's doc table.

One known population (``tests/unit_systems.py``) seen in display levels 0–255, in 0–1 and in
z-scores, each with its true ``input_stats``: every preset gives each neuron's filter r within 0.05
of the default's, with the MEI on the stimulus mean (a black MEI correlates with a zero-mean filter
too), or refuses with the reason. The population is the truth itself, so r differs between CPU code
paths by < 0.001 (checked with ``ATEN_CPU_CAPABILITY=default``); margins are ≥ 0.02.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mei_core import presets
from mei_core.cmaes import cma_es
from mei_core.errors import MEIConfigError
from mei_core.methods import batched_gradient_ascent, default_preset
from mei_core.objectives import UnitObjective
from mei_core.pipeline.method_entries import method_config, method_fn_of
from quality import at_least
from unit_systems import DISPLAY, FRACTION, UNIT_SYSTEMS, Z_SCORES, InUnits, UnitScores, UnitSystem, known_population, score_meis

torch.set_num_threads(1)

SHAPE = (1, 16, 16)
POPULATION = known_population(size=SHAPE[-1])
NEURONS = list(range(POPULATION.n_neurons))
#: a centred MEI sits within this many stds of the mean (walker2019's grey is level 128 of 255, 0.18
#: std above the mean 120, by design); a black one sits 2.67 below
CENTRED_STDS = 0.5
REPO = Path(__file__).resolve().parents[1]


def run(system: UnitSystem, name: str, **params: object) -> UnitScores:
    """Preset ``name`` on the population in ``system``'s units, one MEI per neuron (seed 0)."""
    stats = {"input_shape": list(SHAPE), "input_stats": system.input_stats}
    accepted = presets.PRESETS.entry(name, "preset").parameters
    config = presets.preset(name, **{k: v for k, v in stats.items() if k in accepted}, **params)
    method = cma_es if presets.preset_method_fn(name) == "mei_core.cmaes.cma_es" else batched_gradient_ascent
    meis = method(UnitObjective(InUnits(POPULATION, system), NEURONS), config, [0] * len(NEURONS), SHAPE).meis
    return score_meis(meis, NEURONS, system, POPULATION)


def by_hand_norm(system: UnitSystem) -> float:
    """The norm a user of ``system`` would write by hand: the default's, in those units."""
    return presets.contrast_budget(SHAPE, system.input_stats)["norm"]


PRESETS_IN_UNITS = {
    # fewer steps/generations than the presets' own where the result had already converged
    "fixed_budget": lambda system: run(system, "fixed_budget", norm=by_hand_norm(system)),
    "cma_es": lambda system: run(system, "cma_es", max_generations=60),
    "walker2019": lambda system: run(system, "walker2019"),  # 300 steps: its ramps stretched, contrast still low
}


@pytest.fixture(scope="module")
def defaults() -> dict[str, UnitScores]:
    return {system.name: run(system, "default", iterations=100) for system in UNIT_SYSTEMS}  # 100 = 200 within 0.004


@pytest.mark.quality
@pytest.mark.parametrize("system", UNIT_SYSTEMS, ids=lambda s: s.name)
def test_the_default_is_the_same_mei_in_every_unit_system(system: UnitSystem, defaults: dict[str, UnitScores]) -> None:
    scores, z = defaults[system.name], defaults[Z_SCORES.name]
    torch.testing.assert_close(scores.filter_r, z.filter_r, atol=1e-3, rtol=0)
    at_least("min filter r", scores.filter_r.min(), 0.95)
    assert float(scores.offset_stds.abs().max()) < 1e-3


@pytest.mark.quality
@pytest.mark.parametrize("name", list(PRESETS_IN_UNITS))
@pytest.mark.parametrize("system", UNIT_SYSTEMS, ids=lambda s: s.name)
def test_each_preset_recovers_the_filters_within_0_05_of_the_default_centred_on_the_mean(
        system: UnitSystem, name: str, defaults: dict[str, UnitScores]) -> None:
    scores, default = PRESETS_IN_UNITS[name](system), defaults[system.name]
    below = scores.filter_r - default.filter_r
    if name == "cma_es":
        # a search is chaotic: a cma version or a CPU acts like another seed. Over 4 seeds × cma 4.0.0
        # and 4.5.0 the median was −0.008 … +0.012 from the default's (spread 0.017: the bound lies 3×
        # that below the worst), while one of 56 searches ended 0.10 below on one cell: the median is
        # judged, and at most 2 of 7 cells may fall more than 0.05 below (p ≈ 2e-4 at that rate)
        at_least("median filter r − the default's", below.median(), -0.06)
        assert int((below < -0.05).sum()) <= 2, below
    else:  # gradient presets: deterministic, every cell within 0.05
        at_least("min filter r − the default's", below.min(), -0.05)
    assert float(scores.offset_stds.abs().max()) < CENTRED_STDS, scores.offset_stds
    # the true cell is driven: the wrong-units MEIs drove the true cells at 0-0.52 of the right run's
    # (fixed_budget and cma_es have the default's budget, walker2019 none: 0.72-1.2 of the default's drive)
    at_least("min true drive ÷ the default's", (scores.true_drive / default.true_drive).min(), 0.6)


@pytest.mark.quality
def test_sinzlab_default_runs_on_z_scores_and_refuses_other_units_with_the_reason(defaults: dict[str, UnitScores]) -> None:
    scores = run(Z_SCORES, "sinzlab_default", num_iterations=200)
    at_least("min filter r − the default's", (scores.filter_r - defaults[Z_SCORES.name].filter_r).min(), -0.05)
    for system in (DISPLAY, FRACTION):
        with pytest.raises(MEIConfigError) as refused:
            run(system, "sinzlab_default")
        message = str(refused.value)
        assert message.startswith("input_stats: preset 'sinzlab_default' assumes z-scored stimuli"), message
        assert f"mean {system.mean:g} and std {system.std:g}" in message and "'default'" in message
    # without input_stats it is sinzlab's config as documented (bitwise: tests/test_compat_sinzlab.py)
    assert presets.sinzlab_default() == presets.sinzlab_default(input_stats=Z_SCORES.input_stats)


def test_the_old_pixel_unit_traps_are_gone() -> None:
    """The issue's black MEIs: fixed_budget and cma_es_preset centred on 0 in 0–255 units."""
    centred = presets.fixed_budget(norm=by_hand_norm(DISPLAY), input_stats=DISPLAY.input_stats)
    assert centred["initial"]["kwargs"]["array"] == 120.0 and centred["postprocessing"][0]["kwargs"]["mean"] == 120.0
    assert (centred["postprocessing"][0]["kwargs"]["x_min"], centred["postprocessing"][0]["kwargs"]["x_max"]) == (0.0, 255.0)
    # the step is in stimulus stds: 0.5 std per pixel, whatever the units
    assert centred["optimizer"]["kwargs"]["lr"] == pytest.approx(0.5 * 45.0)
    # pixel units without input_stats: refused, not centred on 0
    with pytest.raises(MEIConfigError, match=r"^input_stats: fixed_budget without input_stats centres on 0"):
        default_preset(norm=200.0, x_min=0.0, x_max=255.0)
    with pytest.raises(MEIConfigError, match=r"^x_min: the clip \[0.0, 1.0\] of channel 0 excludes its mean 120"):
        presets.fixed_budget(x_min=0.0, x_max=1.0, input_stats=DISPLAY.input_stats)
    cma = presets.preset("cma_es", input_shape=list(SHAPE), input_stats=DISPLAY.input_stats)
    assert cma["parameterisation"] == ["Gabor", {"path": "AddMean", "kwargs": {"mean": 120.0}}]
    assert cma["postprocessing"][0]["kwargs"]["norm"] == pytest.approx(by_hand_norm(DISPLAY))


def test_add_mean_puts_the_decoded_contrast_on_each_channels_mean_for_images_and_videos() -> None:
    from mei_core.parameterisations import AddMean

    video = AddMean([1.0, -2.0])(torch.zeros(2, 2, 3, 4, 4))  # B×C×T×H×W
    assert bool(video[:, 0].eq(1.0).all()) and bool(video[:, 1].eq(-2.0).all())
    torch.testing.assert_close(AddMean(120.0)(torch.ones(1, 1, 4, 4)), torch.full((1, 1, 4, 4), 121.0))
    with pytest.raises(ValueError, match="2 means for 3 channels"):
        AddMean([1.0, 2.0])(torch.zeros(1, 3, 4, 4))


def test_a_method_entry_with_preset_cma_es_runs_cma_es_with_the_ensembles_stats() -> None:
    ensemble = {"input_shape": list(SHAPE), "input_stats": DISPLAY.input_stats}
    entry = {"preset": "cma_es", "params": {"parameterisation": "DoG"}}
    assert method_fn_of("cma", entry, "mei_core.methods.batched_gradient_ascent") == "mei_core.cmaes.cma_es"
    assert method_fn_of("plain", {"preset": "default"}, "mei_core.methods.batched_gradient_ascent") == "mei_core.methods.batched_gradient_ascent"
    config = method_config("cma", entry, ensemble, "v1")
    assert config["parameterisation"][0] == "DoG" and config["postprocessing"][0]["kwargs"]["mean"] == 120.0
    # sinzlab_default takes the ensemble's stats when stated (and refuses them here), runs without them
    with pytest.raises(MEIConfigError, match=r"^methods.sz on ensemble 'v1': input_stats: preset 'sinzlab_default' assumes z-scored"):
        method_config("sz", {"preset": "sinzlab_default"}, ensemble, "v1")
    assert method_config("sz", {"preset": "sinzlab_default"}, {"input_shape": list(SHAPE)}, "v1") == presets.sinzlab_default()
    with pytest.raises(MEIConfigError, match=r"^ensembles.v1.input_stats: required by preset 'cma_es'"):
        method_config("cma", entry, {"input_shape": list(SHAPE)}, "v1")


def test_config_readme_holds_exactly_the_preset_table_generated_from_the_registry() -> None:
    from mei_core.pipeline.docs import TABLES, _block

    text = (REPO / "config" / "README.md").read_text()
    found = _block("presets").search(text)
    assert found, "config/README.md: no presets block"
    assert found.group(2) == TABLES["presets"]() + "\n" == presets.PRESETS.markdown_table() + "\n"


LAB_IN_UNITS = '''
import numpy as np
import torch


class LinearNeuronsInUnits(torch.nn.Module):
    """A lab's model of display levels: linear neurons with known filters on z-scored inputs."""

    def __init__(self, filters, mean, std):
        super().__init__()
        self.register_buffer("filters", torch.as_tensor(np.load(filters)["filters"], dtype=torch.float32).flatten(1))
        self.mean, self.std = mean, std

    def forward(self, x):
        return ((x - self.mean) / self.std).flatten(1) @ self.filters.T


def build(filters, mean, std):
    return LinearNeuronsInUnits(filters, mean, std)
'''


@pytest.mark.slow
def test_the_workflow_runs_preset_cma_es_in_display_units_and_refuses_sinzlab_default_there(tmp_path: Path) -> None:
    import json

    import numpy as np
    import pandas as pd
    from workflow_support import snakemake, write_config

    folder = tmp_path / "project"
    (folder / "lab").mkdir(parents=True)
    (folder / "lab" / "lab_units.py").write_text(LAB_IN_UNITS)
    filters = torch.stack([POPULATION.primary[i] for i in (0, 1, 2)])[:, None].numpy()  # the simple cells' Gabors
    np.savez(folder / "filters.npz", filters=filters)
    member = {"builder": "lab_units.build", "files": ["filters.npz"],
              "builder_kwargs": {"filters": "filters.npz", "mean": DISPLAY.mean, "std": DISPLAY.std}}
    config = {
        "device": "cpu", "threads": 1, "shard_size": 4, "seeds": [0], "pythonpath": ["lab"],
        "ensembles": {"display": {"input_shape": list(SHAPE), "outputs": 3, "members": [member], "input_stats": DISPLAY.input_stats,
                                  "ground_truth": {"kind": "filters", "file": "filters.npz"}}},
        "objectives": {"display": {"neurons": "all"}},
        "methods": {"default": {"preset": "default", "params": {"iterations": 60}},
                    "cma": {"preset": "cma_es"}},
    }
    write_config(folder, config)
    snakemake(folder)
    spec = json.loads((folder / "resources" / "methods" / "display" / "cma.json").read_text())
    assert spec["method_fn"] == "mei_core.cmaes.cma_es" and spec["config"]["postprocessing"][0]["kwargs"]["mean"] == 120.0
    validation = pd.read_parquet(folder / "results" / "validation.parquet").set_index(["method", "neuron_id"])["filter_correlation"]
    assert len(validation) == 6
    at_least("median filter r of cma_es − the default's", (validation["cma"] - validation["default"]).median(), -0.05)  # a search: judged by its median
    config["methods"] = {"sz": {"preset": "sinzlab_default"}}
    write_config(folder, config)
    refused = snakemake(folder, "-n", check=False)
    assert refused.returncode != 0
    assert "methods.sz on ensemble 'display': input_stats: preset 'sinzlab_default' assumes z-scored stimuli" in refused.stdout + refused.stderr
