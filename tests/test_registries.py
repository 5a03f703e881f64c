"""One registry idiom for every named kind, each method option declared once, and the doc tables
generated from both (mei_core.registry, mei_core.options, mei_core.pipeline.docs); < 10 s."""

from __future__ import annotations

import subprocess
import sys

import jsonschema
import pytest

from mei_core.cmaes import OPTIONS as CMAES_OPTIONS
from mei_core.cmaes import build_settings
from mei_core.config import COMPONENTS, import_object
from mei_core.demo import DEMO_KINDS, DemoKind, demo_kind
from mei_core.errors import MEIConfigError
from mei_core.method import build_method
from mei_core.objectives.kinds import get_kind
from mei_core.options import METHOD_OPTIONS, Option
from mei_core.pipeline import docs
from mei_core.pipeline.configfile import read_schema
from mei_core.pipeline.ground_truth import ground_truth_kind
from workflow_support import REPO

GOOD_METHOD = {"initial": "RandomNormal", "optimizer": {"path": "SGD", "kwargs": {"lr": 0.1}}, "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 2}}}
#: per declared option with a range or choices: a value outside it
OUT_OF_RANGE = {"n_meis": 0, "direction": "up", "regularize": "output", "precision": "fp16", "stop_check_every": 0, "max_batch": -1}


def test_the_config_readme_holds_exactly_the_tables_generated_from_the_registries():
    text = docs.README.read_text()
    assert docs.regenerated(text) == text
    for name in docs.TABLES:
        assert f"<!-- generated: {name} -->" in text


def test_a_stale_table_is_reported_by_name_and_rewritten(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(docs.README.read_text().replace("| `sigma0` | `0.5` |", "| `sigma0` | `0.25` |"))
    assert docs.check_or_write(write=False, readme=readme) == 1
    assert "out of date: cmaes-options" in capsys.readouterr().out
    assert docs.check_or_write(write=True, readme=readme) == 0
    assert readme.read_text() == docs.README.read_text()


def test_the_docs_command_checks_the_readme():
    result = subprocess.run([sys.executable, "-m", "mei_core", "docs", "--check"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_of_a_gradient_method_is_generated_from_its_option_declarations():
    fragment = read_schema()["$defs"]["gradient_method_config"]
    assert list(fragment["properties"]) == [option.name for option in METHOD_OPTIONS]
    assert fragment["properties"]["n_meis"] == {"type": "integer", "minimum": 1, "description": next(o.doc for o in METHOD_OPTIONS if o.name == "n_meis")}
    assert fragment["properties"]["precision"]["enum"] == ["float32", "tf32", "bf16"]


@pytest.mark.parametrize("name", sorted(OUT_OF_RANGE))
def test_a_value_outside_a_declared_option_is_refused_by_both_the_schema_and_the_method(name):
    config = {**GOOD_METHOD, name: OUT_OF_RANGE[name]}
    schema = read_schema()
    validator = jsonschema.Draft202012Validator({**schema["$defs"]["gradient_method_config"], "$defs": schema["$defs"]})
    assert [list(e.absolute_path) for e in validator.iter_errors(config)] == [[name]]
    with pytest.raises(MEIConfigError, match=rf"^methods\.m\.config\.{name}: must be "):
        build_method(config, "methods.m.config")
    build_method(GOOD_METHOD, "methods.m.config")  # and the same config without it builds


def test_an_option_reads_its_default_and_refuses_a_wrong_type_naming_the_key():
    option = Option("sigma", "number", default=0.5, minimum=0, exclusive=True, doc="a step size")
    assert option.read({}, "config") == 0.5
    assert option.read({"sigma": 2}, "config") == 2.0
    with pytest.raises(MEIConfigError, match=r"^config\.sigma: must be a number, got 'big'$"):
        option.read({"sigma": "big"}, "config")
    with pytest.raises(MEIConfigError, match=r"^config\.sigma: must be > 0, got 0$"):
        option.read({"sigma": 0}, "config")
    assert option.schema() == {"type": "number", "exclusiveMinimum": 0, "description": "a step size"}


def test_cma_es_reads_every_key_from_its_declarations():
    settings = build_settings({"sigma0": 0.25, "transform_draws": 2, "returned": "best", "threshold": None, "direction": "minimize"})
    # the given values, and the declared defaults for the rest
    assert (settings.sigma0, settings.transform_draws, settings.returned, settings.threshold, settings.sign) == (0.25, 2, "best", None, -1.0)
    assert (settings.max_generations, settings.n_meis, settings.population_size, settings.cma_options) == (200, 1, None, {})
    assert (settings.flat_generations, settings.flat_restarts) == (5, None)
    assert type(settings.parameterisation).__name__ == "Pixels"
    assert [option.name for option in CMAES_OPTIONS] == ["parameterisation", "initial", "n_meis", "transform", "transform_draws", "sigma0", "population_size",
                                                         "max_generations", "threshold", "postprocessing", "direction", "returned", "cma_options",
                                                         "trace_interval", "flat_generations", "flat_restarts", "max_batch", "device"]


@pytest.mark.parametrize("lookup, message", [
    (lambda: get_kind("maximum", "objectives.e.kind"), "objectives.e.kind: unknown objective kind 'maximum'; known kinds: combination, contrastive, custom, decrease, increase, inner, layer, targets, unit"),
    (lambda: demo_kind("demo_v1", "demo.d.kind"), "demo.d.kind: unknown demo kind 'demo_v1' (the V1 ground truth is now spelt 'v1'); known: connectome, retina, v1, vr"),
    (lambda: ground_truth_kind("connectome", "ensembles.e.ground_truth.kind"), "ensembles.e.ground_truth.kind: unknown ground-truth kind 'connectome'; known: filters, retina, v1, vr"),
    (lambda: import_object("Jiter", "methods.m.config.transform"), "methods.m.config.transform: 'Jiter' is neither a built-in alias nor a dotted import path"),
])
def test_an_unknown_name_is_refused_naming_the_key_and_the_known_names(lookup, message):
    with pytest.raises(MEIConfigError) as caught:
        lookup()
    assert str(caught.value).startswith(message)


def test_a_demo_kind_registers_itself_where_it_is_defined():
    class Stripes(DemoKind):
        """Oriented gratings of known orientation."""

        name = "test_stripes"
        defaults = {"n_cells": 4}

    assert "test_stripes" in DEMO_KINDS
    assert isinstance(demo_kind("test_stripes"), Stripes)
    assert demo_kind("test_stripes").settings({"kind": "test_stripes"}) == {"n_cells": 4}
    assert not Stripes.has_ground_truth() and demo_kind("v1").has_ground_truth()


def test_the_components_are_the_public_classes_of_the_component_modules():
    assert COMPONENTS.get("Jitter", "k").__module__ == "mei_core.transforms"
    assert {"RandomNormal", "NumIterations", "ChangeNorm", "Gabor", "ConstantBackground", "ObjectiveTerm"} <= set(COMPONENTS.names())
    assert "Component" not in COMPONENTS  # the abstract bases are not aliases


def test_reading_the_schema_imports_neither_torch_nor_pandas():
    code = ("import sys\nfrom mei_core.pipeline.configfile import read_schema\nread_schema()\n"
            "from mei_core.demo import DEMO_KINDS\nDEMO_KINDS.names()\n"
            "print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.slow
def test_the_workflow_makes_every_one_step_demo_kind_with_its_generic_rule(tmp_path):
    from workflow_support import make_project, snakemake, tiny_config

    config = tiny_config()
    config["demo"] = {"r": {"kind": "retina", "n_cells": 2, "size": [6, 6]}, "w": {"kind": "vr", "n_cells": 2, "size": [6, 6]},
                      "c": {"kind": "connectome", "n_neurons": 60, "n_synapses": 300, "n_sensory": 6, "num_layers": 2}}
    folder = make_project(tmp_path / "project", config)
    one_step = {name: demo_kind(spec["kind"]) for name, spec in config["demo"].items()}
    assert all(kind.one_step for kind in one_step.values()) and not demo_kind("v1").one_step
    targets = [f"resources/demo/{name}/{file}" for name, kind in one_step.items() for file in kind.files.values()]
    assert len(targets) == 4  # retina.json, virtual_retina.json, weights.npz, network.json
    snakemake(folder, *targets)
    assert all((folder / target).stat().st_size > 0 for target in targets)
    assert len(demo_kind("retina").load(str(folder / "resources/demo/r/retina.json")).describe()["cells"]) == 2
