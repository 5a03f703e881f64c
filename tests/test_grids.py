"""Grid expansion (issue 20, case 1): each method of a grid runs the values its name says, names
round-trip the values and are safe file names, and combinations that run one config are refused."""

from __future__ import annotations

import numpy as np
import pytest

from mei_core.errors import MEIConfigError
from mei_core.pipeline.method_entries import expand_grids
from workflow_support import make_project, method, planned_outputs, snakemake, tiny_config, write_config


def test_a_nested_grid_key_sets_its_own_value_in_every_combination():
    entry = {"config": {"optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 1.0}}},
             "grid": {"config.optimizer.kwargs.lr": [0.1, 0.01],
                      "config.optimizer": [{"path": "torch.optim.SGD", "kwargs": {}}, {"path": "torch.optim.Adam", "kwargs": {}}]}}
    methods, grids = expand_grids({"sweep": entry})
    optimizers = {name: methods[name]["config"]["optimizer"] for name in methods}
    assert optimizers == {
        "sweep[lr=0.1,optimizer=#0]": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        "sweep[lr=0.1,optimizer=#1]": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.1}},
        "sweep[lr=0.01,optimizer=#0]": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.01}},
        "sweep[lr=0.01,optimizer=#1]": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.01}},
    }
    assert grids["sweep[lr=0.01,optimizer=#1]"]["values"]["config.optimizer"] == {"path": "torch.optim.Adam", "kwargs": {}}
    assert entry["grid"]["config.optimizer"][0] == {"path": "torch.optim.SGD", "kwargs": {}}  # the config is left as written


def test_names_round_trip_close_numbers_and_tell_strings_from_numbers():
    methods, _ = expand_grids({"s": {"grid": {"params.norm_factor": [0.1, 0.10000001, "0.1"]}}})
    assert list(methods) == ["s[norm_factor=0.1]", "s[norm_factor=0.10000001]", "s[norm_factor='0.1']"]


def test_keys_with_one_last_part_are_named_by_enough_of_their_path():
    methods, _ = expand_grids({"s": {"grid": {"config.optimizer.kwargs.lr": [0.1], "config.scheduler.kwargs.lr": [0.5]}}})
    assert list(methods) == ["s[optimizer.kwargs.lr=0.1,scheduler.kwargs.lr=0.5]"]


def test_a_value_listed_twice_is_refused_naming_the_grid():
    with pytest.raises(MEIConfigError, match=r"methods\.s\.grid: gives a second method named 's\[lr=0\.1\]'"):
        expand_grids({"s": {"grid": {"config.optimizer.kwargs.lr": [0.1, 0.1]}}})


def test_a_grid_over_file_paths_plans_methods_with_safe_names(tmp_path):
    folder = make_project(tmp_path / "project")
    for name, value in (("a", 0.5), ("b", -0.5)):
        (folder / "inits" / name).mkdir(parents=True)
        np.save(folder / "inits" / name / "start.npy", np.full((1, 12, 12), value, np.float32))
    config = tiny_config()
    fast = method(6)
    fast["config"]["initial"] = {"path": "FromArray", "kwargs": {"noise_std": 0.1}}
    fast["grid"] = {"config.initial.kwargs.array": ["inits/a/start.npy", "inits/b/start.npy"]}
    config["methods"] = {"fast": fast}
    write_config(folder, config)
    planned = planned_outputs(folder)
    assert sorted(planned["generate_meis"]) == [f"resources/meis/tiny/fast[array=#{k}]/seed0/shard{i}.npz" for k in (0, 1) for i in (0, 1)]
    assert not list((folder / "resources").rglob("start.npy*"))  # no spec written into a folder named by a value


def test_grid_members_that_run_one_config_are_refused_before_any_job(tmp_path):
    folder = make_project(tmp_path / "project")
    config = tiny_config()
    config["ensembles"]["tiny"]["input_stats"] = {"mean": [0.0], "std": [1.0]}
    # the overrides replace the learning rate and the norm that the preset derives from norm_factor
    config["methods"] = {"sweep": {"preset": "default", "grid": {"params.norm_factor": [0.1, 0.5]},
                                   "config": {"optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 0.5}},
                                              "postprocessing": [{"path": "ChangeNorm", "kwargs": {"norm": 6.0}}]}}}
    write_config(folder, config)
    result = snakemake(folder, "--dry-run", check=False)
    assert result.returncode != 0
    assert ("methods.sweep.grid: sweep[norm_factor=0.1] and sweep[norm_factor=0.5] run the same config on ensemble 'tiny'"
            in result.stdout + result.stderr)
    assert not (folder / "resources" / "methods").exists()  # refused before any spec is written
