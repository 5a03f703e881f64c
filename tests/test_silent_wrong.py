"""No silent wrong answer (issue 20, cases 8 and 9 where they live in the library): a value that
would come out as a plausible wrong number, or a failure without a word, ends in an error naming the
key, file and module instead, or in a correct result."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from mei_core import MEIConfigError, batched_gradient_ascent, default_preset
from mei_core.config import import_object
from mei_core.objectives import UnitObjective
from mei_core.objectives.kinds import integer_column
from mei_core.pipeline.plan import check_folder, check_method_fn


def column(tmp_path: Path, text: str) -> pd.DataFrame:
    (tmp_path / "neurons.csv").write_text(text)
    return pd.read_csv(tmp_path / "neurons.csv")


def test_an_id_beyond_64_bits_is_refused_naming_file_row_and_column_instead_of_wrapping_around(tmp_path):
    frame = column(tmp_path, "neuron_id,output_unit\n1,0\n99999999999999999999,1\n")
    with pytest.raises(MEIConfigError, match=r"objectives.tiny.neurons: '.*neurons.csv' row 2, column 'neuron_id': 99999999999999999999 does not fit a 64-bit integer"):
        integer_column(frame, "neuron_id", tmp_path / "neurons.csv", "objectives.tiny.neurons")


def test_an_id_past_float_precision_is_read_exactly_and_whole_floats_still_count_as_integers(tmp_path):
    frame = column(tmp_path, "neuron_id,output_unit\n9007199254740993,0\n-3,1.0\n")
    assert integer_column(frame, "neuron_id", Path("n.csv"), "k").tolist() == [9007199254740993, -3]  # 2⁵³ + 1, not 2⁵³
    assert integer_column(frame, "output_unit", Path("n.csv"), "k").tolist() == [0, 1]


class _Lab:
    """Lab modules that end the process at import."""

    EXITS = "import sys\nprint('no GPU on this node', file=sys.stderr)\nsys.exit(3)\n"
    PARSES = "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--lr', type=float)\nARGS = parser.parse_args()\ndef build(): pass\n"


@pytest.fixture
def lab(tmp_path, monkeypatch):
    (tmp_path / "lab_exits.py").write_text(_Lab.EXITS)
    (tmp_path / "lab_parses.py").write_text(_Lab.PARSES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["snakemake", "--cores", "2"])
    yield
    for name in ("lab_exits", "lab_parses"):
        sys.modules.pop(name, None)


def test_a_module_calling_sys_exit_at_import_is_named_with_its_code(lab):
    with pytest.raises(MEIConfigError) as error:
        import_object("lab_exits.build", "ensembles.tiny.members[0].builder")
    assert str(error.value).startswith("ensembles.tiny.members[0].builder: module 'lab_exits' called sys.exit at import after writing 'no GPU on this node', exit code 3")


def test_a_module_parsing_the_command_line_at_import_is_named_not_snakemakes_usage(lab, capsys):
    with pytest.raises(MEIConfigError) as error:
        import_object("lab_parses.build", "methods.fast.method_fn")
    assert str(error.value).startswith("methods.fast.method_fn: module 'lab_parses' parses the command line at import (argparse said 'usage: snakemake")
    assert "usage:" not in capsys.readouterr().err  # not printed as if Snakemake's own usage


def wrong_method_fn(objective, config):
    return None


def test_a_method_fn_that_cannot_take_the_jobs_arguments_is_refused_at_plan_time_naming_the_key():
    with pytest.raises(MEIConfigError, match=r"methods.fast.method_fn: lab.wrong\(objective, config\) cannot be called as method_fn\(objective, config, seeds, shape, device\): too many positional arguments"):
        check_method_fn(wrong_method_fn, "lab.wrong", "methods.fast.method_fn")
    check_method_fn(batched_gradient_ascent, "mei_core.methods.batched_gradient_ascent", "methods.fast.method_fn")


def test_results_pointing_at_a_file_is_refused_naming_the_key(tmp_path):
    (tmp_path / "results.txt").write_text("not a folder")
    with pytest.raises(MEIConfigError, match=r"results: 'results.txt/run1' needs a folder, but '.*results.txt' is a file"):
        check_folder(tmp_path, "results.txt/run1", "results")
    check_folder(tmp_path, "new/results", "results")  # a folder still to be made is fine


def test_a_lightning_checkpoint_without_omegaconf_says_to_install_it(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from mei_core.pipeline.ensembles import _state_dict

    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": OmegaConf.create({"lr": 0.1})}, tmp_path / "lightning.ckpt")
    monkeypatch.setitem(sys.modules, "omegaconf", None)  # as on an install without it
    with pytest.raises(MEIConfigError) as error:
        _state_dict(tmp_path / "lightning.ckpt", None, "ensembles.tiny.members[0].checkpoint")
    assert "`pip install omegaconf`" in str(error.value) and "add_safe_globals" not in str(error.value)


class NaNFromTheStart(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :2] * float("nan")


def test_a_run_shorter_than_the_finite_check_that_is_nan_says_non_finite():
    result = batched_gradient_ascent(UnitObjective(NaNFromTheStart(), [0, 1]), default_preset(norm=8.0, iterations=5), seeds=[0, 1], shape=(1, 8, 8))
    assert result.stop_reasons == ["non_finite", "non_finite"]


def test_a_hand_edited_plan_record_is_not_trusted_by_jobs(tmp_path, capsys):
    import json

    from mei_core.pipeline.plan import prepare
    from workflow_support import make_project, tiny_config

    folder = make_project(tmp_path / "project")
    planned = prepare(tiny_config(), folder)
    record_path = folder / planned.paths.plan_record()
    record = json.loads(record_path.read_text())
    record["plan"]["methods_of_ensemble"]["tiny"] = ["fast"]  # a subset of the methods
    record_path.write_text(json.dumps(record))
    in_job = prepare(tiny_config(), folder, in_job=True)
    assert in_job.methods_of_ensemble["tiny"] == ["fast", "slow"]
    assert "was changed after it was recorded" in capsys.readouterr().err


def test_targets_validation_with_several_meis_per_item_scores_each_mei_against_its_own_targets():
    import numpy as np
    import xarray as xr

    from mei_core.hashing import canonical_json
    from mei_core.models.ensemble import EnsembleModel
    from mei_core.objectives.kinds import ValidationContext
    from mei_core.objectives.targets import TargetsKind

    class Identity(torch.nn.Module):  # inputs S×L = neurons × layers: activations are the inputs
        def forward(self, x):
            return x

    # 2 items × 2 MEIs of 3 neurons × 1 layer; item 7 targets neuron 1 at 0.5
    meis = np.zeros((1, 1, 2, 2, 3, 1), np.float32)
    meis[0, 0, 1, 0, 1, 0], meis[0, 0, 1, 1, 1, 0] = 0.5, 0.25  # item 7: MEI 0 hits the target, MEI 1 misses by 0.25
    store = xr.Dataset({"mei": (("method", "seed", "neuron", "mei_index", "neuron_in", "layer"), meis)},
                       coords={"method": ["m"], "seed": [0], "neuron": [3, 7], "mei_index": [0, 1]})
    objectives = pd.DataFrame({"neuron_id": [3, 7], "output_unit": [0, 1], "data_key": [None, None], "kind": ["targets"] * 2,
                               "kwargs": [canonical_json({"targets": [[0, 0, 0.0]]}), canonical_json({"targets": [[0, 1, 0.5]]})]})
    table = pd.DataFrame({"method": ["m"] * 4, "seed": [0] * 4, "neuron_id": [3, 3, 7, 7], "mei_index": [0, 1, 0, 1]})
    model = EnsembleModel(Identity())
    context = ValidationContext(manifest={"name": "fly"}, meis=store, objectives=objectives, table=table,
                                load_ensemble=lambda group: model if group == "members" else None)
    validated = TargetsKind().validate(context)
    assert validated["target_rmse"].tolist() == [0.0, 0.0, 0.0, 0.25]
    assert sorted(set(context.extra_tables["activations"]["mei_index"])) == [0, 1]
