"""The worker: jobs run in children of one process that imported torch once, and give exactly the
shard a direct run gives."""

from __future__ import annotations

import os
import re
import signal
import tempfile
import subprocess
import sys
import time

import numpy as np
import pytest

from mei_core.files import read_json
from mei_core.pipeline.plan import prepare
from workflow_support import REPO, make_project, tiny_config


@pytest.fixture
def project(tmp_path):
    folder = make_project(tmp_path / "project")
    plan = prepare(tiny_config(), folder)
    from mei_core.pipeline.ensembles import assemble_ensemble

    os.chdir(folder)
    try:
        assemble_ensemble(plan.paths.member_spec("tiny", "members"), plan.paths.manifest("tiny", "members"))
    finally:
        os.chdir(REPO)
    return folder, plan


def generate(folder, plan, out, *extra, method="slow", seeds=(0,)):
    outs = [out] if isinstance(out, str) else list(out)
    command = [sys.executable, "-m", "mei_core", "generate", "--manifest", plan.paths.manifest("tiny", "members"),
               "--method", plan.paths.method_spec("tiny", method), "--shard", plan.paths.shard_spec("tiny", 0),
               "--seeds", *map(str, seeds), "--out", *outs, "--device", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SLURM_JOB_ID", None)
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env, timeout=300)


def worker_pids(log_text):
    return [int(pid) for pid in re.findall(r"worker (\d+) listening", log_text)]


def test_jobs_through_one_worker_write_the_shards_a_direct_run_writes(project, tmp_path):
    folder, plan = project
    socket = str(tmp_path / "w.sock")
    try:
        direct = generate(folder, plan, "out/direct.npz")
        first = generate(folder, plan, "out/first.npz", "--worker", socket)
        second = generate(folder, plan, "out/second.npz", "--worker", socket)
        assert direct.returncode == first.returncode == second.returncode == 0, first.stderr + second.stderr
        log = (tmp_path / "w.sock.log").read_text()
        assert len(worker_pids(log)) == 1  # the second job found the worker the first one started
        # the job's own output reaches the client's stderr (the rule's log file)
        assert "wrote 1 shard file(s) (seeds 0): 3 items" in second.stderr
        shards = {name: np.load(folder / "out" / f"{name}.npz") for name in ("direct", "first", "second")}
        for name in ("first", "second"):
            assert np.array_equal(shards[name]["meis"], shards["direct"]["meis"])
            assert np.array_equal(shards[name]["scores"], shards["direct"]["scores"])
    finally:
        for pid in worker_pids((tmp_path / "w.sock.log").read_text() if (tmp_path / "w.sock.log").exists() else ""):
            os.kill(pid, signal.SIGTERM)


def test_a_failing_job_in_the_worker_fails_its_command_with_the_key_named(project, tmp_path):
    folder, plan = project
    method = read_json(folder / plan.paths.method_spec("tiny", "fast"))
    method["method_fn"] = "mei_core.no_such_module.method"
    (folder / "broken.json").write_text(__import__("json").dumps(method))
    socket = str(tmp_path / "w.sock")
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run(
            [sys.executable, "-m", "mei_core", "generate", "--manifest", plan.paths.manifest("tiny", "members"), "--method", "broken.json",
             "--shard", plan.paths.shard_spec("tiny", 0), "--seeds", "0", "--out", "out/s.npz", "--device", "cpu", "--worker", socket],
            cwd=folder, capture_output=True, text=True, env=env, timeout=300,
        )
        assert result.returncode == 2
        assert "methods.fast.method_fn" in result.stderr and "mei_core.no_such_module" in result.stderr
        assert not (folder / "out" / "s.npz").exists()
        # the worker survives a failed job and serves the next one
        assert generate(folder, plan, "out/ok.npz", "--worker", socket).returncode == 0
        assert len(worker_pids((tmp_path / "w.sock.log").read_text())) == 1
    finally:
        for pid in worker_pids((tmp_path / "w.sock.log").read_text()):
            os.kill(pid, signal.SIGTERM)


def test_worker_auto_outside_a_slurm_job_runs_directly(project):
    from mei_core.pipeline.worker import socket_path

    folder, plan = project
    result = generate(folder, plan, "out/auto.npz", "--worker", "auto")
    assert result.returncode == 0 and (folder / "out" / "auto.npz").exists()
    assert socket_path("auto") is None if "SLURM_JOB_ID" not in os.environ else True
    assert socket_path("off") is None and socket_path("/tmp/x.sock") == "/tmp/x.sock"


def test_a_cancelled_client_ends_its_job_in_the_worker(project, tmp_path):
    folder, plan = project
    socket = str(tmp_path / "w.sock")
    long_method = read_json(folder / plan.paths.method_spec("tiny", "slow"))
    long_method["config"]["stopper"]["kwargs"]["num_iterations"] = 10**7
    (folder / "long.json").write_text(__import__("json").dumps(long_method))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        assert generate(folder, plan, "out/warm.npz", "--worker", socket).returncode == 0  # worker up
        client = subprocess.Popen(
            [sys.executable, "-m", "mei_core", "generate", "--manifest", plan.paths.manifest("tiny", "members"), "--method", "long.json",
             "--shard", plan.paths.shard_spec("tiny", 0), "--seeds", "0", "--out", "out/long.npz", "--device", "cpu", "--worker", socket],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        worker = worker_pids((tmp_path / "w.sock.log").read_text())[0]
        deadline = time.monotonic() + 60
        while not children_of(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = children_of(worker)
        assert len(child) == 1
        client.send_signal(signal.SIGTERM)
        client.wait(timeout=30)
        deadline = time.monotonic() + 30
        while children_of(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert children_of(worker) == []
        assert not (folder / "out" / "long.npz").exists()
    finally:
        for pid in worker_pids((tmp_path / "w.sock.log").read_text()):
            os.kill(pid, signal.SIGTERM)


def children_of(pid):
    """Live (not zombie) children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_the_rules_of_a_slurm_jobs_snakemake_are_read_from_its_command_line():
    from mei_core.pipeline.worker import target_job_rules

    argv = ["snakemake", "--snakefile", "S", "--target-jobs", "generate_meis:seed=0,shard=1", "score_heldout:seed=0,shard=1", "--cores", "2"]
    assert target_job_rules(argv) == {"generate_meis", "score_heldout"}
    assert target_job_rules(["snakemake", "--target-jobs", "assemble_ensemble:ensemble=tiny,group=members", "--nolock"]) == {"assemble_ensemble"}
    assert target_job_rules(["snakemake", "--profile", "cluster"]) == set()


# ------------------------------------------------------------------ another user on the same node


def squatter(bound, uid, received):
    """A process of user ``uid`` listening at ``bound``: records what a job sends it, answers code 0."""
    import socket as sockets

    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            server = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
            server.bind(bound)
            os.chmod(bound, 0o777)
            server.listen(1)
            server.settimeout(10)
            connection, _ = server.accept()
            connection.settimeout(5)
            data = b""
            try:
                while chunk := connection.recv(1 << 16):
                    data += chunk
                    connection.sendall(b'{"code": 0}\n')
            except OSError:
                pass
            with open(received, "wb") as handle:
                handle.write(data)
        except BaseException as error:
            sys.stderr.write(f"squatter: {error!r}\n")
        finally:
            os._exit(0)
    return pid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_a_job_sends_nothing_to_a_socket_of_another_user_and_fails_naming_it(tmp_path):
    from mei_core.pipeline.worker import run_in_worker

    from pathlib import Path

    shared, drop = tmp_path / "shared", Path(tempfile.mkdtemp())  # drop: where the other user may write
    shared.mkdir()
    os.chmod(drop, 0o777)
    path, received = str(shared / "w.sock"), drop / "received"
    os.environ["MEI_TEST_SECRET"] = "hunter2"
    try:
        pid = squatter(str(drop / "s"), 65534, received)
        deadline = time.monotonic() + 10
        while not (drop / "s").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.rename(drop / "s", path)  # the other user's process now listens where the job looks
        code = run_in_worker(path, "generate", {"manifest": "m.json"})
    finally:
        del os.environ["MEI_TEST_SECRET"]
        os.waitpid(pid, 0)  # it ends when the job closes the connection
        sent = received.read_bytes() if received.exists() else None
        __import__("shutil").rmtree(drop)
    assert code == 2  # not the 0 the squatter would have answered
    assert sent == b""  # the squatter accepted the connection and got nothing: no arguments, environment or stdio
    assert not (shared / "w.sock.log").exists()  # no worker of ours was started in its place


def test_a_socket_folder_of_another_user_or_open_to_others_is_refused(tmp_path, monkeypatch, capsys):
    from mei_core.pipeline import worker

    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o777)
    os.chmod(open_folder, 0o777)
    assert worker.run_in_worker(str(open_folder / "w.sock"), "generate", {}) == 2
    assert f"others may write to its folder {str(open_folder)!r}" in capsys.readouterr().err
    assert not (open_folder / "w.sock.lock").exists()  # refused before anything is made there

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert re.search(rf"/mei_core-worker-{os.getuid()}-4242-[^/]+/socket$", worker.socket_path("auto"))
    auto = str(tmp_path / f"mei_core-worker-{os.getuid()}-4242-node" / "socket")
    worker.private_folder(auto)
    assert os.stat(os.path.dirname(auto)).st_mode & 0o777 == 0o700
    monkeypatch.setattr(worker.os, "getuid", lambda: os.geteuid() + 1)  # as if another user made it
    with pytest.raises(worker.WorkerRefused, match="belongs to user id"):
        worker.private_folder(auto)


def test_a_job_hands_the_worker_only_the_variables_a_job_reads():
    from mei_core.pipeline.worker import job_environment

    sent = job_environment({"CUDA_VISIBLE_DEVICES": "1", "PYTHONPATH": "/lab", "OMP_NUM_THREADS": "4", "SLURM_STEP_ID": "3",
                            "AWS_SECRET_ACCESS_KEY": "s", "GITHUB_TOKEN": "t", "SSH_AUTH_SOCK": "/tmp/agent", "PATHX": "x"})
    assert sent == {"CUDA_VISIBLE_DEVICES": "1", "PYTHONPATH": "/lab", "OMP_NUM_THREADS": "4", "SLURM_STEP_ID": "3"}
