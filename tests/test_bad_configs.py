"""Bad configs fail before any job runs, with a message naming the key, and nothing is written."""

from __future__ import annotations

import pytest
import yaml

from workflow_support import edited, make_project, snakemake, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("bad") / "project")


def with_change(change):
    config = edited(tiny_config())
    change(config)
    return yaml.safe_dump(config, sort_keys=False)


def set_path(config, keys, value):
    target = config
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value


CASES = {
    "unknown_key": (with_change(lambda c: c.update(shardsize=3)), "config key shardsize: unknown key"),
    "wrong_type": (with_change(lambda c: c.update(shard_size="three")), "config key shard_size: 'three' is not of type 'integer'"),
    "empty_seeds": (with_change(lambda c: c.update(seeds=[])), "config key seeds: [] should be non-empty"),
    "missing_checkpoint": (
        with_change(lambda c: set_path(c, ["ensembles", "tiny", "members", 0, "checkpoint"], "models/nope.pt")),
        "ensembles.tiny.members[0].checkpoint: file 'models/nope.pt' not found",
    ),
    "bad_import_path": (
        with_change(lambda c: set_path(c, ["methods", "fast", "config", "stopper", "path"], "mei_core.stoppers.Nope")),
        "methods.fast.config.stopper.path: module 'mei_core.stoppers' has no attribute 'Nope'",
    ),
    "bad_builder": (
        with_change(lambda c: set_path(c, ["ensembles", "tiny", "validation_members", 0, "builder"], "nowhere_pkg.build")),
        "ensembles.tiny.validation_members[0].builder: module 'nowhere_pkg' not found",
    ),
    "unknown_kwarg": (
        with_change(lambda c: set_path(c, ["methods", "slow", "config", "stopper", "kwargs"], {"iterations": 3})),
        "methods.slow.config.stopper.kwargs: unknown argument 'iterations' for NumIterations(num_iterations: int)",
    ),
    "unknown_slot": (
        with_change(lambda c: set_path(c, ["methods", "slow", "config", "regularisation"], [])),
        "methods.slow.config.regularisation: unknown slot",
    ),
    "unit_out_of_range": (
        with_change(lambda c: set_path(c, ["objectives", "tiny", "neurons"], [0, 9])),
        "objectives.tiny.neurons: output unit 9 out of range: the ensemble has 5 outputs",
    ),
    "method_for_unknown_ensemble": (
        with_change(lambda c: set_path(c, ["methods", "fast", "ensembles"], ["tiny", "retina"])),
        "methods.fast.ensembles: no ensemble 'retina'",
    ),
    "objectives_of_unknown_ensemble": (
        with_change(lambda c: set_path(c, ["objectives", "other"], {"neurons": "all"})),
        "objectives.other: no ensemble of that name",
    ),
    "mixed_datasets": (
        with_change(lambda c: set_path(c, ["ensembles", "tiny", "members", 1, "dataset_id"], "another_recording")),
        "ensembles.tiny: members declare different dataset_id values",
    ),
    "number_written_as_string": (
        with_change(lambda c: set_path(c, ["methods", "fast", "config", "optimizer", "kwargs", "lr"], "1e-3")),
        "methods.fast.config.optimizer.kwargs.lr: '1e-3' is a string that looks like a number",
    ),
    "unknown_precision": (
        with_change(lambda c: set_path(c, ["methods", "fast", "config", "precision"], "fp16")),
        "config key methods.fast.config.precision: 'fp16' is not one of ['float32', 'tf32', 'bf16']",
    ),
    "max_batch_zero": (
        with_change(lambda c: set_path(c, ["ensembles", "tiny", "max_batch"], 0)),
        "config key ensembles.tiny.max_batch: 0 is less than the minimum of 1",
    ),
    "duplicate_method_names": (
        yaml.safe_dump(tiny_config(), sort_keys=False).replace("  slow:\n", "  fast:\n"),
        "duplicate key 'fast'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_config_fails_before_any_job_naming_the_key(folder, case):
    text, message = CASES[case]
    (folder / "config.yaml").write_text(text)
    result = snakemake(folder, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert not (folder / "results").exists() and not (folder / "resources").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_on_a_machine_without_a_gpu_fails_before_any_job(folder):
    (folder / "config.yaml").write_text(with_change(lambda c: c.update(device="cuda")))
    result = snakemake(folder, check=False)
    assert result.returncode != 0
    assert "invalid configuration: device: 'cuda' but this machine sees no CUDA device" in result.stdout + result.stderr
    assert not (folder / "results").exists() and not (folder / "resources").exists()


def test_yaml_reads_an_exponent_without_a_dot_as_a_string_and_that_is_caught(folder):
    text = yaml.safe_dump(tiny_config(), sort_keys=False).replace("lr: 0.5", "lr: 1e-3", 1)
    assert "lr: 1e-3" in text
    (folder / "config.yaml").write_text(text)
    result = snakemake(folder, check=False)
    assert result.returncode != 0
    assert "'1e-3' is a string that looks like a number" in result.stdout + result.stderr
