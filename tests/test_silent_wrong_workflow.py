"""No silent wrong answer where it lives in the workflow (issue 20, cases 6, 8 and 9), run with the
real Snakemake: content changes that mtimes hide rerun what they affect, a dry run changes nothing on
disk, and bad files end in a message naming the file, line and module."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from workflow_support import REPO, SNAKEFILE, SNAKEMAKE, edited, make_project, planned_outputs, read_config, save_member, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

#: the lab's builder module imports a helper module of its own (not named in the config)
BUILDERS = "from lab_helpers import build_kwargs\nfrom mei_core.demo.v1 import build_demo_cnn\n\n\ndef build(**kwargs):\n    return build_demo_cnn(**build_kwargs(kwargs))\n"
HELPERS = "def build_kwargs(kwargs):\n    return dict(kwargs)\n"


def lab_config() -> dict:
    config = tiny_config()
    config["pythonpath"] = ["lab"]
    for member in config["ensembles"]["tiny"]["members"]:
        member["builder"] = "lab_builders.build"
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete run of the tiny project (members built by the lab's module); tests copy it."""
    folder = make_project(tmp_path_factory.mktemp("silent") / "project", lab_config())
    (folder / "lab").mkdir()
    (folder / "lab" / "lab_builders.py").write_text(BUILDERS)
    (folder / "lab" / "lab_helpers.py").write_text(HELPERS)
    snakemake(folder)
    return folder


def disk_state(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under the project with its mtime and content hash (Snakemake's own folder aside)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".snakemake" not in path.parts:
            state[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def test_a_checkpoint_replaced_by_one_with_an_older_mtime_reruns_its_ensemble(project):
    member = project / "models" / "member_1.pt"
    before = member.stat()
    save_member(project, 1, weight_seed=99)  # other weights ...
    os.utime(member, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))  # ... with an older mtime (cp -p)
    planned = planned_outputs(project)
    assert planned["assemble_ensemble"] == ["resources/ensembles/tiny/members.manifest.json"]
    assert len(planned["generate_meis"]) == 4  # every shard of both methods


def test_editing_a_module_that_a_named_module_imports_reruns_what_uses_it(project):
    helpers = project / "lab" / "lab_helpers.py"
    helpers.write_text(HELPERS.replace("dict(kwargs)", "dict(kwargs, channels=kwargs['channels'])"))
    planned = planned_outputs(project)
    assert sorted(planned["assemble_ensemble"]) == ["resources/ensembles/tiny/members.manifest.json"]


def test_a_dry_run_changes_nothing_on_disk_and_an_edit_reverted_reruns_nothing(project):
    before = disk_state(project)
    original = read_config(project)
    config = edited(original)
    config["methods"]["slow"]["config"]["stopper"]["kwargs"]["num_iterations"] = 11
    write_config(project, config)
    planned = planned_outputs(project)
    assert sorted(planned["generate_meis"]) == ["resources/meis/tiny/slow/seed0/shard0.npz", "resources/meis/tiny/slow/seed0/shard1.npz"]
    write_config(project, original)
    after = disk_state(project)
    after["config.yaml"] = before["config.yaml"] = None  # rewritten by the test itself
    assert after == before
    assert planned_outputs(project) == {}


def test_a_yaml_syntax_error_in_the_workflows_config_names_file_and_line(project):
    (project / "config").mkdir()
    (project / "config" / "config.yaml").write_text((project / "config.yaml").read_text().replace("seeds:\n- 0", "seeds: [0\n- 0"))
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--cores", "1", "--dry-run"],
                            cwd=project, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode != 0
    assert "invalid configuration: config file config/config.yaml:" in result.stdout + result.stderr and "not valid YAML" in result.stdout + result.stderr


def test_a_lab_module_that_exits_at_import_is_named_with_its_code(project):
    (project / "lab" / "lab_helpers.py").write_text("import sys\nsys.exit(3)\n")
    result = snakemake(project, "--dry-run", check=False)
    assert result.returncode != 0
    assert "ensembles.tiny.members[0].builder: module 'lab_builders' (importing 'lab_helpers') called sys.exit at import, exit code 3" in result.stdout + result.stderr
