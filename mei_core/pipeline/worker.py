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
``PYTHONPATH``: :data:`JOB_ENVIRONMENT`) and working directory. A child whose client goes away (the
job was cancelled) exits.

Security (README, "Security model"): the socket, its lock and its log live in a folder only this user
can enter (``0700``, refused when another user owns it or it is open to others); both ends check the
other's user id (``SO_PEERCRED``) before anything is sent, so a process of another user can neither
take a job (its stdio, its environment, its exit code) nor hand one to the worker; and a job sends only
the environment variables a job reads (:data:`JOB_ENVIRONMENT`), not its whole environment.

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
import stat
import struct
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

#: the environment variables a job hands to its child in the worker (names, and name prefixes ending
#: in ``_``): what selects the job's device and threads, finds its modules and names its SLURM step.
#: The child keeps the worker's value of everything else, and drops a listed variable the job lacks.
JOB_ENVIRONMENT = (
    "PATH", "PYTHONPATH", "PYTHONHASHSEED", "TMPDIR", "HOME", "LANG", "LC_ALL", "ATEN_CPU_CAPABILITY",
    "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "OMP_", "MKL_", "OPENBLAS_", "PYTORCH_", "TORCH_", "TORCHINDUCTOR_",
    "SLURM_", "MEI_CORE_",
)


class WorkerRefused(RuntimeError):
    """The worker's folder or the process at its socket is not this user's: nothing was sent."""


def _is_job_variable(name: str) -> bool:
    return any(name.startswith(entry) if entry.endswith("_") else name == entry for entry in JOB_ENVIRONMENT)


def job_environment(environment: dict[str, str]) -> dict[str, str]:
    """The part of ``environment`` a job sends to the worker (:data:`JOB_ENVIRONMENT`)."""
    return {name: value for name, value in environment.items() if _is_job_variable(name)}


def socket_path(worker: str | None) -> str | None:
    """The socket of ``--worker``: ``auto`` (one per SLURM allocation and host, none outside SLURM),
    ``off``/``None`` (run directly), or an explicit path. ``auto`` puts it in a folder of its own per
    user, allocation and host (made private by :func:`private_folder` before use)."""
    if worker in (None, "", "off"):
        return None
    if worker != "auto":
        return worker
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    folder = tempfile.gettempdir()
    if len(folder) > 50:  # a Unix socket path has at most 107 bytes
        folder = "/tmp"
    return os.path.join(folder, f"mei_core-worker-{os.getuid()}-{job}-{socket.gethostname()[:24]}", "socket")


def private_folder(path: str) -> None:
    """Make sure the folder of the socket ``path`` exists, is this user's and closed to others
    (created ``0700``). Another user's folder, or one others may write to, is refused: whoever can
    write there could put their own socket in the job's way."""
    folder = Path(path).parent
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise WorkerRefused(f"--worker {path}: its folder {str(folder)!r} belongs to user id {info.st_uid}, not to you ({os.getuid()}); "
                            "use a socket in a folder of your own")
    if info.st_mode & 0o022:
        if folder.name.startswith("mei_core-worker-"):
            os.chmod(folder, 0o700)  # our own ``auto`` folder, opened by someone: close it again
        else:
            raise WorkerRefused(f"--worker {path}: others may write to its folder {str(folder)!r} (mode {stat.S_IMODE(info.st_mode):o}); "
                                "use a socket in a folder only you can write to")


def peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


# ---------------------------------------------------------------------------------------- client


def run_in_worker(path: str, command: str, arguments: dict[str, Any], idle_s: float = IDLE_S) -> int:
    """Run ``command`` (``generate`` | ``score``) with ``arguments`` in the worker at ``path``; return
    its exit code (2 when the socket's folder or the process listening is not this user's: then
    nothing was sent). The job writes to this process's stdout and stderr."""
    try:
        connection = _connect_or_start(path, idle_s)
    except WorkerRefused as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    request = json.dumps({"command": command, "arguments": arguments, "cwd": os.getcwd(), "env": job_environment(dict(os.environ))})
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
    """A connection to the worker at ``path`` (``None`` when none listens), once its process is
    known to be this user's."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        connection.close()
        return None
    uid = peer_uid(connection)
    if uid != os.getuid():
        connection.close()
        raise WorkerRefused(f"--worker {path}: the process listening there runs as user id {uid}, not as you ({os.getuid()}); "
                            "nothing was sent to it")
    return connection


def _connect_or_start(path: str, idle_s: float) -> socket.socket:
    private_folder(path)
    connection = _connect(path)
    if connection is not None:
        return connection
    # one client starts the worker; the others wait on the lock, then connect to it
    with open(os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        connection = _connect(path)
        if connection is not None:
            return connection
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a worker that died
        with open(os.open(f"{path}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as log:
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
    private_folder(path)
    _warm_imports()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)  # the socket is created 0600: only this user's jobs may connect
    try:
        server.bind(path)
    finally:
        os.umask(umask)
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
            uid = peer_uid(connection)
            if uid != os.getuid():  # never run another user's job as this user
                print(f"worker {os.getpid()}: refused a connection from user id {uid}", flush=True)
                connection.close()
                continue
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
    """The client's working directory, job environment (:data:`JOB_ENVIRONMENT`) and import path."""
    os.chdir(request["cwd"])
    for name in [name for name in os.environ if _is_job_variable(name)]:
        del os.environ[name]
    os.environ.update(job_environment(request["env"]))
    for folder in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def _exit_when_closed(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.recv(1)  # the client sends nothing more: this returns when it closes
    os._exit(143)


def main(path: str, run: Runner, idle_s: float) -> None:
    serve(path, run, idle_s)
