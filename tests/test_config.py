"""Component specs: every error names the key, and the method hash is stable."""

import copy
import sys

import pytest

from mei_core import MEIConfigError, default_preset
from mei_core.config import build_component
from mei_core.hashing import method_hash
from mei_core.method import build_method
from mei_core.stoppers import NumIterations


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    (tmp_path / "needs_missing_dependency.py").write_text("import surely_not_installed_pkg\nclass Thing: pass\n")
    (tmp_path / "broken_constructor.py").write_text(
        "from mei_core.components import Stopper\n"
        "class Picky(Stopper):\n"
        "    def __init__(self, n: int = 1):\n"
        "        self.n = len(n)  # TypeError from inside the constructor\n"
        "    def __call__(self, state):\n"
        "        return True, None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("needs_missing_dependency", "broken_constructor"):
        sys.modules.pop(name, None)


def test_aliases_and_dotted_paths_build_the_same_component():
    by_alias = build_component({"path": "NumIterations", "kwargs": {"num_iterations": 5}}, "stopper")
    by_path = build_component({"path": "mei_core.stoppers.NumIterations", "kwargs": {"num_iterations": 5}}, "stopper")
    assert isinstance(by_alias, NumIterations) and by_alias.num_iterations == by_path.num_iterations == 5
    assert isinstance(build_component("DivideByMeanOfAbsolute", "precondition"), object)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"path": "NotAComponent"}, r"stopper\.path: 'NotAComponent' is neither a built-in alias nor a dotted import path"),
        ({"path": "no_such_module_xyz.Stop"}, r"stopper\.path: module 'no_such_module_xyz' not found"),
        ({"path": "needs_missing_dependency.Thing"}, r"stopper\.path: module 'needs_missing_dependency' was found but importing it failed because its dependency 'surely_not_installed_pkg' is not installed"),
        ({"path": "mei_core.stoppers.NumIteration"}, r"stopper\.path: module 'mei_core\.stoppers' has no attribute 'NumIteration'"),
        ({"path": "NumIterations", "kwargs": {"num_iteration": 3}}, r"stopper\.kwargs: unknown argument 'num_iteration' for NumIterations\(num_iterations: int\)"),
        ({"path": "NumIterations", "kwargs": {}}, r"stopper\.kwargs: missing a required argument: 'num_iterations'"),
        ({"path": "NumIterations", "kwargs": {"num_iterations": "1e3"}}, r"stopper\.kwargs\.num_iterations: '1e3' is a string that looks like a number"),
        ({"path": "broken_constructor.Picky", "kwargs": {"n": 3}}, r"stopper: constructing broken_constructor\.Picky failed: TypeError: object of type 'int' has no len\(\)"),
        ({"kwargs": {}}, r"stopper: missing 'path'"),
        ({"path": "NumIterations", "kwarg": {}}, r"stopper: unexpected key\(s\) \['kwarg'\]"),
    ],
)
def test_each_bad_spec_gets_its_own_message_naming_the_key(user_modules, spec, message):
    with pytest.raises(MEIConfigError, match=message):
        build_component(spec, "stopper")


def test_a_missing_required_slot_and_an_unknown_slot_are_named():
    config = default_preset()
    del config["initial"]
    with pytest.raises(MEIConfigError, match=r"methods\.m\.config\.initial: required slot is missing"):
        build_method(config, "methods.m.config")
    with pytest.raises(MEIConfigError, match=r"config\.postprocess: unknown slot"):
        build_method({**default_preset(), "postprocess": []})


def test_optimizer_errors_name_the_bad_argument():
    with pytest.raises(MEIConfigError, match=r"config\.optimizer\.kwargs: unknown argument 'learning_rate'"):
        build_method({**default_preset(), "optimizer": {"path": "torch.optim.SGD", "kwargs": {"learning_rate": 1}}})


def test_a_component_of_the_wrong_family_is_refused():
    with pytest.raises(MEIConfigError, match=r"config\.precondition: ChangeNorm must subclass mei_core\.components\.Preconditioner"):
        build_method({**default_preset(), "precondition": {"path": "ChangeNorm", "kwargs": {"norm": 1.0}}})


def test_building_never_mutates_the_config():
    config = default_preset()
    before = copy.deepcopy(config)
    build_method(config)
    assert config == before


def test_method_hash_ignores_key_order_and_number_spelling_but_not_values():
    config = default_preset()
    reordered = dict(reversed(list(copy.deepcopy(config).items())))
    assert method_hash("mei_core.methods.batched_gradient_ascent", config) == method_hash("mei_core.methods.batched_gradient_ascent", reordered)
    a = {"optimizer": {"path": "SGD", "kwargs": {"lr": 1e-3, "momentum": 0}}}
    b = {"optimizer": {"kwargs": {"momentum": 0.0, "lr": 0.001}, "path": "SGD"}}
    assert method_hash("f", a) == method_hash("f", b)
    assert method_hash("f", a) != method_hash("f", {"optimizer": {"path": "SGD", "kwargs": {"lr": 2e-3, "momentum": 0}}})
    assert method_hash("f", a) != method_hash("g", a)
    assert len(method_hash("f", a)) == 64
