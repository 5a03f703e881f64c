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


# Every check is exercised in-process in tests/test_bad_inputs.py (59 cases); these go through real
# Snakemake to show that each layer (YAML reading, the schema, the plan) stops the run at parse time.
CASES = {
    "unknown_key": (with_change(lambda c: c.update(shardsize=3)), "config key shardsize: unknown key"),
    "missing_checkpoint": (
        with_change(lambda c: set_path(c, ["ensembles", "tiny", "members", 0, "checkpoint"], "models/nope.pt")),
        "ensembles.tiny.members[0].checkpoint: file 'models/nope.pt' not found",
    ),
    "unknown_kwarg": (
        with_change(lambda c: set_path(c, ["methods", "slow", "config", "stopper", "kwargs"], {"iterations": 3})),
        "methods.slow.config.stopper.kwargs: unknown argument 'iterations' for NumIterations(num_iterations: int)",
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
