"""Planning (objective rows, stable shards, mapping files) and single jobs, without Snakemake."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mei_core import MEIConfigError
from mei_core.files import read_json
from mei_core.pipeline.plan import prepare
from workflow_support import REPO, make_project, tiny_config


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "project")


def test_a_mapping_file_sets_neuron_ids_units_and_data_keys(project):
    pd.DataFrame({"neuron_id": [101, 102, 103], "output_unit": [4, 0, 2], "data_key": ["s1", "s1", "s1"]}).to_csv(project / "map.csv", index=False)
    config = tiny_config()
    config["objectives"]["tiny"] = {"neurons": {"file": "map.csv"}}
    plan = prepare(config, project)
    rows = read_json(project / plan.paths.objective_spec("tiny"))["rows"]
    assert [(r["neuron_id"], r["output_unit"], r["data_key"]) for r in rows] == [(101, 4, "s1"), (102, 0, "s1"), (103, 2, "s1")]
    assert plan.shard_counts["tiny"] == 1


def test_a_mapping_file_without_its_columns_is_named(project):
    pd.DataFrame({"id": [1]}).to_csv(project / "map.csv", index=False)
    config = tiny_config()
    config["objectives"]["tiny"] = {"neurons": {"file": "map.csv"}}
    with pytest.raises(MEIConfigError, match=r"objectives\.tiny\.neurons\.file: .*map\.csv' lacks column\(s\) \['neuron_id', 'output_unit'\]"):
        prepare(config, project)


def test_shards_are_stable_slices_so_appending_neurons_changes_only_the_last(project):
    config = tiny_config()
    config["objectives"]["tiny"]["neurons"] = [0, 1, 2, 3]
    plan = prepare(config, project)
    first = {k: (project / plan.paths.shard_spec("tiny", k)).stat().st_mtime_ns for k in range(2)}
    config["objectives"]["tiny"]["neurons"] = [0, 1, 2, 3, 4]
    prepare(config, project)
    assert (project / plan.paths.shard_spec("tiny", 0)).stat().st_mtime_ns == first[0]
    assert [r["neuron_id"] for r in read_json(project / plan.paths.shard_spec("tiny", 1))["rows"]] == [3, 4]


def test_a_failing_job_leaves_no_file_a_rerun_could_trust(project, tmp_path):
    plan = prepare(tiny_config(), project)
    from mei_core.pipeline.ensembles import assemble_ensemble

    os.chdir(project)
    try:
        assemble_ensemble(plan.paths.member_spec("tiny", "members"), plan.paths.manifest("tiny", "members"))
        method = read_json(plan.paths.method_spec("tiny", "fast"))
        method["method_fn"] = "mei_core.no_such_module.method"
        (project / "broken.json").write_text(json.dumps(method))
        out = project / "out" / "shard0.npz"
        result = subprocess.run(
            [sys.executable, "-m", "mei_core", "generate", "--manifest", plan.paths.manifest("tiny", "members"), "--method", "broken.json",
             "--shard", plan.paths.shard_spec("tiny", 0), "--seeds", "0", "--out", str(out), "--device", "cpu"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        os.chdir(REPO)
    assert result.returncode == 2
    assert "methods.fast.method_fn" in result.stderr and "mei_core.no_such_module" in result.stderr
    assert not out.exists() and list(out.parent.glob("*")) == []


def test_a_job_writes_its_shard_atomically_with_every_column(project):
    plan = prepare(tiny_config(), project)
    from mei_core.pipeline.ensembles import assemble_ensemble
    from mei_core.pipeline.generate import generate_shard

    os.chdir(project)
    try:
        assemble_ensemble(plan.paths.member_spec("tiny", "members"), plan.paths.manifest("tiny", "members"))
        [path] = generate_shard(plan.paths.manifest("tiny", "members"), plan.paths.method_spec("tiny", "slow"), plan.paths.shard_spec("tiny", 0), [3], ["out/s.npz"], "cpu", 1)
    finally:
        os.chdir(REPO)
    with np.load(project / path) as shard:
        assert shard["meis"].shape == (3, 1, 12, 12)
        assert shard["neuron_id"].tolist() == [0, 1, 2] and shard["n_iterations"].tolist() == [10, 10, 10]
        metadata = json.loads(str(shard["metadata"]))
    assert metadata["seed"] == 3 and metadata["method"] == "slow" and len(metadata["method_hash"]) == 64
    manifest = read_json(project / plan.paths.manifest("tiny", "members"))
    assert metadata["ensemble_hash"] == manifest["ensemble_hash"] and metadata["torch"].startswith("2.")
    assert metadata["seeds_in_batch"] == 1 and len(metadata["shard_key"]) == 64
    assert [p.name for p in (project / "out").iterdir()] == ["s.npz"]


def test_a_job_over_two_seeds_writes_for_each_the_shard_a_job_of_that_seed_alone_writes_and_keeps_current_files(project, caplog):
    from mei_core.pipeline.ensembles import assemble_ensemble
    from mei_core.pipeline.generate import generate_shard, score_heldout

    config = tiny_config()
    config["seeds"] = [0, 7]
    plan = prepare(config, project)
    shard_spec, slow = plan.paths.shard_spec("tiny", 0), plan.paths.method_spec("tiny", "slow")
    os.chdir(project)
    try:
        for group in ("members", "validation_members"):
            assemble_ensemble(plan.paths.member_spec("tiny", group), plan.paths.manifest("tiny", group))
        members, validation = plan.paths.manifest("tiny", "members"), plan.paths.manifest("tiny", "validation_members")
        generate_shard(members, slow, shard_spec, [0, 7], ["out/both0.npz", "out/both7.npz"], "cpu", 1)
        generate_shard(members, slow, shard_spec, [7], ["out/alone7.npz"], "cpu", 1)
        generate_shard(members, slow, shard_spec, [0], ["out/alone0.npz"], "cpu", 1)
        score_heldout(validation, shard_spec, ["out/both0.npz", "out/both7.npz"], ["out/h0.npz", "out/h7.npz"], "cpu", 1)
        score_heldout(validation, shard_spec, ["out/alone7.npz"], ["out/h7alone.npz"], "cpu", 1)
        shards = {name: np.load(f"out/{name}.npz") for name in ("both0", "both7", "alone0", "alone7")}
        for seed in (0, 7):
            together, alone = shards[f"both{seed}"], shards[f"alone{seed}"]
            assert json.loads(str(together["metadata"]))["seed"] == seed and together["neuron_id"].tolist() == [0, 1, 2]
            # the same MEIs up to the CNN's own rounding, which depends on the batch size (not on the neighbours)
            np.testing.assert_allclose(together["meis"], alone["meis"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(together["scores"], alone["scores"], rtol=1e-5, atol=1e-6)
        assert not np.allclose(shards["both0"]["meis"], shards["both7"]["meis"])  # the seeds' starts differ
        np.testing.assert_allclose(np.load("out/h7.npz")["heldout_scores"], np.load("out/h7alone.npz")["heldout_scores"], rtol=1e-5)

        # rerun with a seed added: the two current files are kept byte for byte, only seed 3 is computed
        before = {name: Path(f"out/{name}.npz").read_bytes() for name in ("both0", "both7", "h0", "h7")}
        caplog.clear()
        caplog.set_level(logging.INFO, logger="mei_core.pipeline.generate")
        generate_shard(members, slow, shard_spec, [0, 3, 7], ["out/both0.npz", "out/both3.npz", "out/both7.npz"], "cpu", 1)
        score_heldout(validation, shard_spec, ["out/both0.npz", "out/both3.npz", "out/both7.npz"], ["out/h0.npz", "out/h3.npz", "out/h7.npz"], "cpu", 1)
        assert all(Path(f"out/{name}.npz").read_bytes() == content for name, content in before.items())
        assert "wrote 1 shard file(s) (seeds 3): 3 items" in caplog.text and "wrote 1 held-out score file(s)" in caplog.text
        # a file written for other inputs (here: another method) is not kept
        fast_before = Path("out/both0.npz").read_bytes()
        generate_shard(members, plan.paths.method_spec("tiny", "fast"), shard_spec, [0], ["out/both0.npz"], "cpu", 1)
        assert Path("out/both0.npz").read_bytes() != fast_before
        assert json.loads(str(np.load("out/both0.npz")["metadata"]))["method"] == "fast"
    finally:
        os.chdir(REPO)


def test_an_ensembles_max_batch_reaches_its_jobs_and_changes_no_result(project, caplog):
    from mei_core.engine import simulated_memory_rows
    from mei_core.pipeline.ensembles import assemble_ensemble
    from mei_core.pipeline.generate import generate_shard

    config = tiny_config()
    outputs = {}
    os.chdir(project)
    try:
        for max_batch in (None, 2):
            if max_batch:
                config["ensembles"]["tiny"]["max_batch"] = max_batch
            plan = prepare(config, project)
            manifest = assemble_ensemble(plan.paths.member_spec("tiny", "members"), plan.paths.manifest("tiny", "members"))
            token = simulated_memory_rows.set(2 if max_batch else None)  # a "GPU" that fits 2 rows at a time
            try:
                [path] = generate_shard(plan.paths.manifest("tiny", "members"), plan.paths.method_spec("tiny", "slow"), plan.paths.shard_spec("tiny", 0), [0], [f"out/{max_batch}.npz"], "cpu", 1)
            finally:
                simulated_memory_rows.reset(token)
            with np.load(project / path) as shard:
                outputs[max_batch] = (manifest, shard["meis"].copy(), shard["scores"].copy())
    finally:
        os.chdir(REPO)
    assert outputs[2][0]["max_batch"] == 2 and "max_batch" not in outputs[None][0]
    assert outputs[2][0]["ensemble_hash"] == outputs[None][0]["ensemble_hash"]  # not part of the models' identity
    assert "out of memory" not in caplog.text  # 3 items in chunks of 2 rows: no forward pass was too large
    np.testing.assert_allclose(outputs[2][1], outputs[None][1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[2][2], outputs[None][2], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_fails_at_plan_time_naming_the_key(project):
    config = tiny_config()
    config["device"] = "cuda"
    with pytest.raises(MEIConfigError, match=r"^device: 'cuda' but this machine sees no CUDA device"):
        prepare(config, project)
    assert not (project / "resources").exists()  # nothing written
    prepare(config, project, jobs_run_here=False)  # jobs on a cluster's GPU nodes: nothing to check here


def test_link_profiles_links_once_and_keeps_a_users_own_profile(tmp_path, project):
    config_home = tmp_path / "xdg"
    (config_home / "snakemake" / "local").mkdir(parents=True)  # the user's own "local" profile
    (config_home / "snakemake" / "cluster").symlink_to(tmp_path / "deleted_checkout" / "profiles" / "cluster")  # dangling
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "PYTHONPATH": str(REPO)}
    first = subprocess.run([sys.executable, "-m", "mei_core", "link-profiles"], capture_output=True, text=True, env=env, check=True)
    second = subprocess.run([sys.executable, "-m", "mei_core", "link-profiles"], capture_output=True, text=True, env=env, check=True)
    cluster = config_home / "snakemake" / "cluster"
    assert cluster.is_symlink() and cluster.resolve() == (REPO / "profiles" / "cluster").resolve()
    assert not (config_home / "snakemake" / "local").is_symlink()
    assert "kept your existing" in first.stdout and "already linked" in second.stdout
    # the bare profile name now resolves, as users type it; without the link it does not
    command = [str(Path(sys.executable).parent / "snakemake"), "--profile", "cluster", "--snakefile", str(REPO / "workflow" / "Snakefile"),
               "--configfile", "config.yaml", "--dry-run", "--quiet", "rules"]
    linked = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)
    assert linked.returncode == 0 and "Using profile cluster" in linked.stderr, linked.stderr[-2000:]
    unlinked = subprocess.run(command, cwd=project, capture_output=True, text=True, env={**env, "XDG_CONFIG_HOME": str(tmp_path / "empty")})
    assert unlinked.returncode != 0


# ------------------------------------------------------------------------ the plan a job's Snakemake reads

#: what the Snakefile and its rules import at parse time (workflow/Snakefile, workflow/rules/*.smk)
PARSE_TIME_MODULES = ["mei_core.pipeline.configfile", "mei_core.errors", "mei_core.pipeline.paths", "mei_core.pipeline.plan", "mei_core.pipeline.worker",
                      "mei_core.demo.v1", "mei_core.demo.retina", "mei_core.demo.vr", "mei_core.demo.connectome"]


def test_the_modules_the_snakefile_imports_import_no_torch_numpy_or_pandas():
    code = f"import sys\nfor m in {PARSE_TIME_MODULES!r}: __import__(m)\nprint(sorted(m for m in ('torch', 'numpy', 'pandas', 'scipy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert result.stdout.strip() == "[]"


def test_the_light_table_commands_concatenate_and_checksum_without_importing_torch(tmp_path):
    """``concat`` and ``checksums`` run once per table at the end of every run: they read shard-free
    Parquet with pandas and must not pay torch's import."""
    pd.DataFrame({"neuron_id": [1, 2], "score": [0.5, 1.5]}).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"neuron_id": [3], "score": [2.5]}).to_parquet(tmp_path / "b.parquet")
    code = ("import sys\nfrom mei_core.__main__ import main\n"
            f"main(['concat', '--inputs', {str(tmp_path / 'a.parquet')!r}, {str(tmp_path / 'b.parquet')!r}, '--out', {str(tmp_path / 'all.parquet')!r}])\n"
            f"main(['checksums', '--tables', {str(tmp_path / 'all.parquet')!r}, '--out', {str(tmp_path / 'sums.json')!r}])\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert pd.read_parquet(tmp_path / "all.parquet")["neuron_id"].tolist() == [1, 2, 3]
    assert "all.parquet" in (tmp_path / "sums.json").read_text()


def test_the_demo_builder_path_still_resolves_through_the_light_demo_kind_module():
    from mei_core.config import import_object
    from mei_core.demo import v1
    from mei_core.models.v1 import build_demo_cnn

    assert import_object("mei_core.demo.v1.build_demo_cnn", "builder") is build_demo_cnn
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        v1.nothing_here  # noqa: B018


def test_a_job_reads_the_plan_the_main_process_recorded_and_checks_nothing(project, monkeypatch):
    from mei_core.pipeline import plan as plan_module

    config = tiny_config()
    planned = prepare(config, project)
    assert (project / planned.paths.plan_record()).exists()
    monkeypatch.setattr(plan_module, "_method_spec", lambda *a, **k: pytest.fail("a job's parse checked a method"))
    recorded = prepare(config, project, in_job=True)
    assert recorded == planned and recorded.shards == planned.shards and recorded.outputs() == planned.outputs()


def test_a_job_without_a_record_of_its_config_plans_for_itself(project, capsys):
    config = tiny_config()
    prepare(config, project)
    config["seeds"] = [0, 1]  # not the config the record was made for
    plan = prepare(config, project, in_job=True)
    assert plan.seeds == [0, 1] and len(plan.shards) == 2 * 2 * 2
    assert "no plan of this config recorded" in capsys.readouterr().err
    with pytest.raises(MEIConfigError, match=r"methods\.fast\.config\.optimizer\.kwargs\.lr: must be >= 0"):  # checked as ever
        config["methods"]["fast"]["config"]["optimizer"]["kwargs"]["lr"] = -1.0
        prepare(config, project, in_job=True)


def test_a_jobs_parse_of_the_snakefile_imports_no_torch(project):
    """Snakemake parses the Snakefile for every job (``--mode remote``, as a SLURM job's own Snakemake
    and each job of a group job run it): with the main process's plan recorded, torch stays unimported."""
    snakemake_args = ["--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(project), "--configfiles", str(project / "config.yaml")]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "snakemake", *snakemake_args, "--cores", "1", "--dry-run", "--quiet"], check=True, env=environment, capture_output=True)
    job = ["--target-jobs", "generate_meis:ensemble=tiny,method=fast,shard=0", "--allowed-rules", "generate_meis",
           "--cores", "1", "--mode", "remote", "--dry-run", "--force", "--quiet"]
    code = ("import sys\nfrom snakemake.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('exit', code, 'torch' in sys.modules, 'mei_core.objectives.kinds' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *snakemake_args, *job], env=environment, capture_output=True, text=True)
    assert "exit 0 False False" in result.stderr, result.stderr[-3000:]
    assert "no plan of this config recorded" not in result.stderr


# ------------------------------------------------------------------ planning again only what changed

#: a lab's builder module that imports a helper module of its own (not named in the config)
LAB_BUILDERS = "from lab_helpers import build_kwargs\nfrom mei_core.demo.v1 import build_demo_cnn\n\n\ndef build(**kwargs):\n    return build_demo_cnn(**build_kwargs(kwargs))\n"
LAB_HELPERS = "def build_kwargs(kwargs):\n    return dict(kwargs)\n"


def test_an_unchanged_config_takes_its_recorded_plan_and_an_edited_helper_module_or_deleted_spec_is_planned_again(project, monkeypatch):
    import time

    from mei_core.pipeline import plan as plan_module
    from mei_core.pipeline import stamps

    (project / "lab").mkdir()
    (project / "lab" / "lab_builders.py").write_text(LAB_BUILDERS)
    (project / "lab" / "lab_helpers.py").write_text(LAB_HELPERS)
    config = tiny_config()
    config["pythonpath"] = ["lab"]
    for member in config["ensembles"]["tiny"]["members"]:
        member["builder"] = "lab_builders.build"
    time.sleep(1.5 * stamps.RACY_NS / 1e9)  # files written in the clock tick of a plan are never trusted
    first = prepare(config, project)
    spec = first.paths.member_spec("tiny", "members")

    def checked(*args, **kwargs):
        raise AssertionError("an unchanged config was checked again")

    with monkeypatch.context() as patched:
        patched.setattr(plan_module, "_method_spec", checked)
        assert prepare(config, project) == first  # nothing read or written changed: the recorded plan
        (project / "lab" / "lab_helpers.py").write_text(LAB_HELPERS.replace("dict(kwargs)", "dict(kwargs, channels=kwargs['channels'])"))
        with pytest.raises(AssertionError, match="checked again"):
            prepare(config, project)
    edited = prepare(config, project)
    assert edited.contents[spec] != first.contents[spec]  # the members' sources changed: assembled again
    (project / first.paths.shard_spec("tiny", 1)).unlink()
    assert prepare(config, project) == edited and (project / first.paths.shard_spec("tiny", 1)).exists()


def test_a_file_stamped_in_the_clock_tick_it_was_written_is_never_trusted_and_one_that_appears_is_seen(tmp_path):
    import time

    from mei_core.pipeline import stamps

    config = {"ensembles": {"e": {"members": [{"checkpoint": "member.pt", "files": ["later.csv"]}]}}}
    (tmp_path / "member.pt").write_bytes(b"weights")
    environment = stamps.environment()
    fresh = stamps.planning_inputs(config, tmp_path, [], [], [], environment)
    assert fresh["stamps"][str(tmp_path / "member.pt")] == stamps.UNTRUSTED and not stamps.unchanged(fresh)
    time.sleep(1.5 * stamps.RACY_NS / 1e9)
    settled = stamps.planning_inputs(config, tmp_path, [], [], [], environment)
    assert settled["stamps"][str(tmp_path / "later.csv")] is None and stamps.unchanged(settled)
    (tmp_path / "later.csv").write_text("neuron_id\n1\n")
    assert not stamps.unchanged(settled)


def test_a_second_invocation_plans_without_torch_and_still_sees_a_checkpoint_rewritten_under_its_old_mtime(finished, tmp_path):
    """After a run, Snakemake's main process reads the plan it recorded (no torch, no member loaded);
    a member file changed since, even with its old mtime (``cp -p``), is planned again."""
    from workflow_support import copy_project, planned_outputs, save_member

    project = copy_project(finished, tmp_path / "project")
    code = ("import sys\nfrom snakemake.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('exit', code, 'torch' in sys.modules, file=sys.stderr)")
    command = [sys.executable, "-c", code, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(project),
               "--configfiles", str(project / "config.yaml"), "--cores", "1"]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(command, env=environment, capture_output=True, check=True)  # nothing to run: plans this copy, records its plan
    result = subprocess.run([*command, "--dry-run"], env=environment, capture_output=True, text=True)
    assert "exit 0 False" in result.stderr and "Nothing to be done" in result.stdout + result.stderr, result.stderr[-3000:]
    member = project / "models" / "member_2.pt"
    before = member.stat()
    save_member(project, 2, weight_seed=99)
    os.utime(member, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert planned_outputs(project)["assemble_ensemble"] == ["resources/ensembles/tiny/members.manifest.json"]
