"""Bad inputs are refused before any job, by the same checks the Snakefile runs at parse time
(`check_config_file`, `validate_config`, `prepare`), with a message naming the key, file, row or
column, and nothing written before (spec files, manifests) is changed or lost."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mei_core import MEIConfigError
from mei_core.pipeline.configfile import check_config_file, validate_config
from mei_core.pipeline.plan import prepare

from workflow_support import make_project, tiny_config

USER_MODULE = '''
def failing_builder(**kwargs):
    raise RuntimeError("the lab's builder broke")


def not_a_model(**kwargs):
    return [1, 2, 3]
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A planned project (spec files written) whose files the bad configs must leave untouched."""
    folder = make_project(tmp_path_factory.mktemp("bad_inputs") / "project")
    (folder / "lab").mkdir()
    (folder / "lab" / "user_builders.py").write_text(USER_MODULE)
    torch.save([1, 2, 3], folder / "models" / "a_list.pt")
    np.save(folder / "small_backgrounds.npy", np.zeros((3, 8, 8), np.float32))  # 8×8: the inputs are 12×12
    (folder / "models" / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    for name, frame in {
        "half_unit.csv": pd.DataFrame({"neuron_id": [0, 1], "output_unit": [0.5, 1.0]}),
        "word_id.csv": pd.DataFrame({"neuron_id": ["zero", "1"], "output_unit": [0, 1]}),
        "empty_cell.csv": pd.DataFrame({"neuron_id": [0, 1], "output_unit": [0, None]}),
        "header_only.csv": pd.DataFrame({"neuron_id": [], "output_unit": []}),
        "duplicates.csv": pd.DataFrame({"neuron_id": [3, 3], "output_unit": [0, 1]}),
        "no_units.csv": pd.DataFrame({"neuron_id": [0, 1]}),
        "far_unit.csv": pd.DataFrame({"neuron_id": [0, 1], "output_unit": [0, 7]}),
        "bad_targets.csv": pd.DataFrame({"item": [0], "layer": [0], "neuron": [1], "value": ["high"]}),
    }.items():
        frame.to_csv(folder / name, index=False)
    prepare(good_config(), folder)
    return folder


def good_config() -> dict:
    config = tiny_config()
    config["pythonpath"] = ["lab"]
    return config


def change(path: str, value) -> Callable[[dict], None]:
    """Set a dotted key (list indices as numbers) of the config to ``value``."""

    def apply(config: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = config
        for key in parents:
            target = target[key]
        target[last] = value

    return apply


def delete(path: str) -> Callable[[dict], None]:
    def apply(config: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = config
        for key in parents:
            target = target[key]
        del target[last]

    return apply


MEMBER = "ensembles.tiny.members.0"
STOPPER = "methods.fast.config.stopper"
CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    # top level
    "unknown top-level key": (change("shardsize", 3), "config key shardsize: unknown key"),
    "shard size as a word": (change("shard_size", "three"), "config key shard_size: 'three' is not of type 'integer'"),
    "no seeds": (change("seeds", []), "config key seeds: [] should be non-empty"),
    "negative seed": (change("seeds", [-1]), "config key seeds[0]: -1 is less than the minimum of 0"),
    "seed beyond int64": (change("seeds", [2**64]), "config key seeds[0]: 18446744073709551616 is greater than the maximum"),
    "repeated seed": (change("seeds", [1, 1]), "config key seeds: [1, 1] has non-unique elements"),
    "unknown device": (change("device", "gpu"), "config key device: 'gpu' is not one of"),
    "zero threads": (change("threads", 0), "config key threads: 0 is less than the minimum of 1"),
    "missing pythonpath folder": (change("pythonpath", ["nowhere"]), "pythonpath[0]: folder 'nowhere' not found (resolved to"),
    # members
    "missing checkpoint": (change(f"{MEMBER}.checkpoint", "models/nope.pt"), "ensembles.tiny.members[0].checkpoint: file 'models/nope.pt' not found (resolved to"),
    "checkpoint and torchscript": (change(f"{MEMBER}.torchscript", "models/m.ts"), "config key ensembles.tiny.members[0]: expected exactly one source"),
    "no member source": (lambda c: c["ensembles"]["tiny"]["members"].__setitem__(0, {"dataset_id": "x"}), "config key ensembles.tiny.members[0]: expected exactly one source"),
    "builder module missing": (change(f"{MEMBER}.builder", "nowhere_pkg.build"), "ensembles.tiny.members[0].builder: module 'nowhere_pkg' not found"),
    "builder attribute missing": (change(f"{MEMBER}.builder", "user_builders.nothing"), "ensembles.tiny.members[0].builder: module 'user_builders' has no attribute 'nothing'"),
    "builder raises": (change(f"{MEMBER}.builder", "user_builders.failing_builder"), "ensembles.tiny.members[0].builder: user_builders.failing_builder failed: RuntimeError: the lab's builder broke"),
    "builder returns no model": (change(f"{MEMBER}.builder", "user_builders.not_a_model"), "ensembles.tiny.members[0].builder: user_builders.not_a_model returned a list, not a torch.nn.Module"),
    "checkpoint holds a list": (change(f"{MEMBER}.checkpoint", "models/a_list.pt"), "ensembles.tiny.members[0].checkpoint: 'models/a_list.pt' holds a list, not a state_dict"),
    "corrupt checkpoint": (change(f"{MEMBER}.checkpoint", "models/corrupt.pt"), "ensembles.tiny.members[0].checkpoint: cannot load 'models/corrupt.pt' weights-only"),
    "wrong architecture": (change(f"{MEMBER}.builder_kwargs.channels", 4), "ensembles.tiny.members[0].checkpoint: 'models/member_1.pt' does not fit mei_core.demo.v1.build_demo_cnn"),
    "misspelt builder kwarg": (change(f"{MEMBER}.builder_kwargs.n_neuron", 5), "ensembles.tiny.members[0].builder: mei_core.demo.v1.build_demo_cnn failed: TypeError: DemoCNN.__init__() got an unexpected keyword argument 'n_neuron'"),
    "exponent string in builder kwargs": (change(f"{MEMBER}.builder_kwargs.init_seed", "1.0e1"), "ensembles.tiny.members[0].builder_kwargs.init_seed: '1.0e1' is a string that looks like a number"),
    "wrong output count": (change("ensembles.tiny.outputs", 6), "ensembles.tiny.members[0]: the member has 5 outputs but ensembles.tiny.outputs is 6"),
    "wrong input shape": (change("ensembles.tiny.input_shape", [1, 3, 3]), "ensembles.tiny.members[0]: the member fails on an input of shape [1, 1, 3, 3]"),
    "two datasets": (change(f"{MEMBER}.dataset_id", "another"), "ensembles.tiny: members declare different dataset_id values"),
    "missing ground truth": (change("ensembles.tiny.ground_truth", {"kind": "v1", "file": "truth.json"}), "ensembles.tiny.ground_truth.file: file 'truth.json' not found"),
    # objectives
    "missing neuron file": (change("objectives.tiny.neurons", {"file": "nope.csv"}), "objectives.tiny.neurons.file: 'nope.csv' not found (resolved to"),
    "neuron file without units": (change("objectives.tiny.neurons", {"file": "no_units.csv"}), "objectives.tiny.neurons.file: 'no_units.csv' lacks column(s) ['output_unit']"),
    "half a unit": (change("objectives.tiny.neurons", {"file": "half_unit.csv"}), "half_unit.csv' row 1, column 'output_unit': 0.5 is not an integer"),
    "a word for an id": (change("objectives.tiny.neurons", {"file": "word_id.csv"}), "word_id.csv' row 1, column 'neuron_id': 'zero' is not an integer"),
    "an empty cell": (change("objectives.tiny.neurons", {"file": "empty_cell.csv"}), "empty_cell.csv' row 2, column 'output_unit': nan is not an integer"),
    "header-only neuron file": (change("objectives.tiny.neurons", {"file": "header_only.csv"}), "objectives.tiny: no items"),
    "duplicate neuron ids": (change("objectives.tiny.neurons", {"file": "duplicates.csv"}), "objectives.tiny.neurons.file: neuron_id 3 appears twice"),
    "unit out of range in a file": (change("objectives.tiny.neurons", {"file": "far_unit.csv"}), "output unit 7 out of range: the ensemble has 5 outputs"),
    "unit out of range in a list": (change("objectives.tiny.neurons", [0, 9]), "objectives.tiny.neurons: output unit 9 out of range"),
    "unknown objective kind": (change("objectives.tiny.kind", "maximum"), "objectives.tiny.kind: unknown objective kind 'maximum'; known kinds:"),
    "a key of another kind": (change("objectives.tiny.targets", {"file": "t.csv"}), "objectives.tiny.targets: not a key of objective kind 'unit'"),
    "unknown kwarg of a kind": (lambda c: c["objectives"]["tiny"].update(kind="increase", kwargs={"reduce": "mean"}), "objectives.tiny.kwargs.reduce: unknown key (known: neurons, reducer)"),
    "inner without a layer": (change("objectives.tiny.kind", "inner"), "objectives.tiny.kwargs.layer: required for kind 'inner'"),
    "targets with a word for a value": (lambda c: c["objectives"].update(tiny={"kind": "targets", "targets": {"file": "bad_targets.csv"}}), "bad_targets.csv' row 1, column 'value': 'high' is not a number"),
    "custom without a builder": (change("objectives.tiny.kind", "custom"), "objectives.tiny.builder: required for objective kind 'custom'"),
    "objectives of an unknown ensemble": (change("objectives.other", {"neurons": "all"}), "objectives.other: no ensemble of that name"),
    # methods
    "unknown method slot": (change("methods.fast.config.regularisation", []), "methods.fast.config.regularisation: unknown slot"),
    "fractional iterations": (change(f"{STOPPER}.kwargs.num_iterations", 5.5), "methods.fast.config.stopper.kwargs.num_iterations: 5.5 is not an integer"),
    "unknown component argument": (change(f"{STOPPER}.kwargs", {"iterations": 3}), "methods.fast.config.stopper.kwargs: unknown argument 'iterations' for NumIterations"),
    "number written as a string": (change("methods.fast.config.optimizer.kwargs.lr", "1e-3"), "methods.fast.config.optimizer.kwargs.lr: '1e-3' is a string that looks like a number"),
    "word for a number": (change("methods.fast.config.postprocessing.0.kwargs.norm", "big"), "methods.fast.config.postprocessing[0].kwargs.norm: 'big' is not a number"),
    "component not found": (change(f"{STOPPER}.path", "mei_core.stoppers.Nope"), "methods.fast.config.stopper.path: module 'mei_core.stoppers' has no attribute 'Nope'"),
    "component constructor refuses": (change(f"{STOPPER}.kwargs.num_iterations", -3), "methods.fast.config.stopper: constructing NumIterations failed: ValueError: num_iterations must be >= 0"),
    "negative learning rate": (change("methods.fast.config.optimizer.kwargs.lr", -0.1), "methods.fast.config.optimizer.kwargs.lr: must be >= 0, got -0.1"),
    "betas out of range": (lambda c: c["methods"]["fast"]["config"].update(optimizer={"path": "torch.optim.Adam", "kwargs": {"betas": [0.9, 1.5]}}), "methods.fast.config.optimizer.kwargs.betas: must be two numbers in [0, 1)"),
    "initial array of the wrong shape": (change("methods.fast.config.initial", {"path": "FromArray", "kwargs": {"array": [[0.0, 1.0, 2.0]]}}), "methods.fast.config.initial: ValueError: initial array of shape (1, 3) does not fit the MEI shape (1, 1, 12, 12)"),
    "method_fn not found": (change("methods.fast.method_fn", "mei_core.nowhere.fn"), "methods.fast.method_fn: module 'mei_core.nowhere' not found"),
    "method for an unknown ensemble": (change("methods.fast.ensembles", ["tiny", "retina"]), "methods.fast.ensembles: no ensemble 'retina'"),
    "zero MEIs per item": (change("methods.fast.config.n_meis", 0), "config key methods.fast.config.n_meis: 0 is less than the minimum of 1"),
    "unknown precision": (change("methods.fast.config.precision", "fp16"), "config key methods.fast.config.precision: 'fp16' is not one of ['float32', 'tf32', 'bf16']"),
    "zero max_batch": (change("ensembles.tiny.max_batch", 0), "config key ensembles.tiny.max_batch: 0 is less than the minimum of 1"),
    "unknown direction": (change("methods.fast.config.direction", "up"), "config key methods.fast.config.direction: 'up' is not one of"),
    "missing required slot": (delete("methods.fast.config.optimizer"), "methods.fast.config.optimizer: required slot is missing"),
    # transparency MEIs: image channels then one alpha channel, blended by AlphaBlend
    "alpha blend without an alpha channel": (change("methods.fast.config.transform", "AlphaBlend"),
        "methods.fast.config.initial: a transparency MEI (AlphaBlend in methods.fast.config.transform) has the inputs' 1 channel(s) "
        "and then one alpha channel, [2, 12, 12], but the initial guess gives [1, 12, 12]: start from {path: WithAlphaChannel"),
    "alpha channel without alpha blend": (change("methods.fast.config.initial", {"path": "WithAlphaChannel", "kwargs": {"initial": "RandomNormal"}}),
        "methods.fast.config.initial: the initial guess gives MEIs of shape [2, 12, 12], but this ensemble's inputs are [1, 12, 12]; "
        "an alpha channel needs AlphaBlend in methods.fast.config.transform"),
    "backgrounds of the wrong size": (lambda c: c["methods"]["fast"]["config"].update(
        initial={"path": "WithAlphaChannel", "kwargs": {"initial": "RandomNormal"}},
        transform={"path": "AlphaBlend", "kwargs": {"background": {"path": "NaturalImageBackground", "kwargs": {"images": "small_backgrounds.npy"}}}}),
        "methods.fast.config.transform: ValueError: NaturalImageBackground: backgrounds of size (8, 8) do not fit MEIs of size (12, 12)"),
    "transparency of a Gabor search": (lambda c: c["methods"].update(fast={"method_fn": "mei_core.cmaes.cma_es", "config": {
        "parameterisation": "Gabor", "transform": "AlphaBlend"}}),
        "methods.fast.config.initial: a transparency MEI (AlphaBlend in methods.fast.config.transform) has the inputs' 1 channel(s)"),
    # demos
    "old ground-truth spelling": (lambda c: c.update(demo={"d": {"kind": "demo_v1"}}), "demo.d.kind: unknown demo kind 'demo_v1' (the V1 ground truth is now spelt 'v1')"),
    "unknown demo setting": (lambda c: c.update(demo={"d": {"kind": "v1", "cells": 3}}), "demo.d.cells: not a setting of demo kind 'v1'"),
}


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted((folder / "resources").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_input_is_refused_before_any_job_naming_where_and_nothing_is_lost(folder, case):
    apply, message = CASES[case]
    config = copy.deepcopy(good_config())
    apply(config)
    before = snapshot(folder)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with pytest.raises(MEIConfigError) as caught:
            validate_config(config)
            prepare(config, ".")
    finally:
        os.chdir(cwd)
    assert message in str(caught.value)
    assert snapshot(folder) == before  # spec files and manifests of the good config are untouched


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("text, message", [
    ("seeds: [0, 1\nshard_size: 3\n", "config.yaml:2:"),
    ("seeds: [0]\n  shard_size: 3\n", "config.yaml:2:"),
    ("methods:\n  a: {}\n  a: {}\n", "config.yaml:3: duplicate key 'a'"),
])
def test_yaml_errors_name_the_file_and_line(tmp_path, text, message):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(MEIConfigError, match=message.replace(".", r"\.")):
        check_config_file(tmp_path / "config.yaml")
