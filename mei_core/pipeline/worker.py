"""A fork server for pipeline jobs: Python, torch and dynamo are imported once per allocation, not
once per job.

Every ``generate`` / ``score`` job pays ≈ 3–4 s of start-up in a fresh interpreter (torch, pandas, and
``torch._dynamo``, which ``torch.optim`` imports at its first step). With ``--worker``, the job's
command is a thin client (no torch import): it connects to a worker listening on a Unix socket,
starting one if none listens, and hands over its arguments and its stdin/stdout/stderr. The worker
forks a child per job: the child already has everything imported, runs the job exactly as the command
would, writes to the client's own stdout/stderr and sends back the exit code. Jobs stay separate
processes (parallel jobs run in parallel, a crash or a GPU out-of-memory stays in its child, memory
is returned at exit); the child takes the client's environment (``CUDA_VISIBLE_DEVICES``,
``PYTHONPATH``) and working directory. A child whose client goes away (the job was cancelled) exits.

``--worker auto`` uses one worker per SLURM allocation and host (inside a job: ``SLURM_JOB_ID``), so
the generate jobs of a Snakemake group job share it; outside SLURM jobs run directly. The SLURM plugin
runs every job of a group in its own ``srun`` step, and a step's processes end with the step (with
``proctrack/cgroup``), so the worker is started by the group job's own Snakemake, in the batch step
that lives as long as the allocation (:func:`start_worker`, called by the Snakefile); a client that
finds none starts one itself. The worker exits after ``idle_s`` seconds without jobs, or with the
allocation.

The parent never touches CUDA (forking after CUDA is initialised is unsafe); each child initialises
CUDA for itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: runs one command with its parsed arguments, returns its exit code (commands.run_command)
Runner = Callable[[str, dict[str, Any]], int]

#: seconds a worker waits for its next job before it exits (jobs of a group follow each other within
#: seconds; a worker that outlives its allocation on a cluster without cgroup tracking goes soon)
IDLE_S = 60.0
_START_TIMEOUT_S = 300.0


def socket_path(worker: str | None) -> str | None:
    """The socket of ``--worker``: ``auto`` (one per SLURM allocation and host, none outside SLURM),
    ``off``/``None`` (run directly), or an explicit path."""
    if worker in (None, "", "off"):
        return None
    if worker != "auto":
        return worker
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    folder = tempfile.gettempdir()
    if len(folder) > 60:  # a Unix socket path has at most 107 bytes
        folder = "/tmp"
    return os.path.join(folder, f"mei_core-worker-{os.getuid()}-{job}-{socket.gethostname()}.sock")


# ---------------------------------------------------------------------------------------- client


def run_in_worker(path: str, command: str, arguments: dict[str, Any], idle_s: float = IDLE_S) -> int:
    """Run ``command`` (``generate`` | ``score``) with ``arguments`` in the worker at ``path``; return
    its exit code. The job writes to this process's stdout and stderr."""
    connection = _connect_or_start(path, idle_s)
    request = json.dumps({"command": command, "arguments": arguments, "cwd": os.getcwd(), "env": dict(os.environ)})
    with connection:
        socket.send_fds(connection, [request.encode() + b"\n"], [0, 1, 2])
        reply = connection.makefile("r").readline()
    if not reply:
        print(f"error: the worker's process for this job ended without an answer (worker log: {path}.log)", file=sys.stderr)
        return 1
    return int(json.loads(reply)["code"])


def target_job_rules(argv: list[str]) -> set[str]:
    """Rules of the jobs a Snakemake command line runs (``--target-jobs rule:wildcards ...``), as a
    SLURM job's own Snakemake gets them; empty for any other command line."""
    if "--target-jobs" not in argv:
        return set()
    rules = set()
    for token in argv[argv.index("--target-jobs") + 1 :]:
        if token.startswith("-"):
            break
        rules.add(token.split(":", 1)[0])
    return rules


def start_worker(path: str, idle_s: float = IDLE_S) -> None:
    """Make sure a worker listens at ``path`` (start one and wait until it listens)."""
    _connect_or_start(path, idle_s).close()


def _connect(path: str) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
        return connection
    except (FileNotFoundError, ConnectionRefusedError):
        connection.close()
        return None


def _connect_or_start(path: str, idle_s: float) -> socket.socket:
    connection = _connect(path)
    if connection is not None:
        return connection
    # one client starts the worker; the others wait on the lock, then connect to it
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        connection = _connect(path)
        if connection is not None:
            return connection
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a worker that died
        with open(f"{path}.log", "a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mei_core", "worker", "--socket", path, "--idle", str(idle_s)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            connection = _connect(path)
            if connection is not None:
                return connection
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited at start (code {process.returncode}); see {path}.log")
            time.sleep(0.05)
        raise RuntimeError(f"the worker did not start listening within {_START_TIMEOUT_S:.0f} s; see {path}.log")


# ---------------------------------------------------------------------------------------- server


def _warm_imports() -> None:
    """What every job needs, imported before the first fork (and not CUDA)."""
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch.optim imports it at its first step: ≈ 1 s)
    import torch.optim  # noqa: F401

    from .. import methods  # noqa: F401
    from ..config import builtin_aliases
    from ..objectives.kinds import kind_names
    from . import generate  # noqa: F401

    builtin_aliases()
    kind_names()


def serve(path: str, run: Runner, idle_s: float = IDLE_S) -> None:
    """Listen at ``path``; fork a child per job, which calls ``run(command, arguments)``; exit after
    ``idle_s`` s without jobs or children."""
    _warm_imports()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)  # only this user's jobs may hand work to this process
    server.listen(64)
    server.settimeout(0.5)
    children: set[int] = set()
    last_job = time.monotonic()
    print(f"worker {os.getpid()} listening at {path}", flush=True)
    try:
        while children or time.monotonic() - last_job < idle_s:
            for pid in list(children):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    children.discard(pid)
                    last_job = time.monotonic()
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            last_job = time.monotonic()
            pid = os.fork()
            if pid == 0:  # the child: run one job, never return to the loop
                server.close()
                os._exit(_child(connection, run))
            children.add(pid)
            connection.close()
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    print(f"worker {os.getpid()} idle for {idle_s:.0f} s: exiting", flush=True)


def _child(connection: socket.socket, run: Runner) -> int:
    code = 1
    try:
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        if not message:  # a connection that only checked that the worker listens
            return 0
        reader = connection.makefile("rb")
        while not message.endswith(b"\n"):  # a request longer than one read
            message += reader.readline()
        request = json.loads(message)
        for target, fd in enumerate(fds):  # the client's stdin, stdout and stderr become ours
            os.dup2(fd, target)
            os.close(fd)
        _take_over(request)
        # a job whose client is gone (cancelled, killed) is not worth finishing
        threading.Thread(target=_exit_when_closed, args=(connection,), daemon=True).start()
        code = run(request["command"], request["arguments"])
    except BaseException:  # noqa: BLE001 - whatever happens, the client gets an answer
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            connection.sendall(json.dumps({"code": code}).encode() + b"\n")
    return code


def _take_over(request: dict[str, Any]) -> None:
    """The client's working directory, environment and import path."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for folder in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def _exit_when_closed(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.recv(1)  # the client sends nothing more: this returns when it closes
    os._exit(143)


def main(path: str, run: Runner, idle_s: float) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    serve(path, run, idle_s)
