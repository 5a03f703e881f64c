"""A throw-away single-node SLURM cluster for tests.

``local_slurm(workdir)`` starts munged, slurmctld and slurmd as root with a
private configuration (pointed to through ``SLURM_CONF``), waits until the
node is idle and yields a dict describing the cluster::

    with local_slurm(tmp_path) as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster["environ"])

Keys of the yielded dict:

``env``        the variables a caller must set for sbatch/squeue/snakemake:
               ``SLURM_CONF`` and ``PATH`` (prefixed with wrappers of the
               SLURM clients that default SLURM_CONF to this cluster's, as
               the slurm-jobstep plugin drops SLURM_CONF for its inner
               srun); ``environ`` is ``os.environ`` with ``env``
               applied and any inherited ``SLURM_*``/``SBATCH_*``/``SRUN_*``
               variables removed, ready to pass to ``subprocess``.
``partition``  name of the default partition (``partitions``: all of them,
               every one containing the single node).
``node``       node name; it has ``cpus`` CPUs, ``mem_mb`` MB of memory and
               ``gpus`` gres gpus.  The gpus are fake: each ``File=`` is a
               private copy of /dev/null (an empty file if mknod is not
               permitted), so jobs get SLURM_JOB_GPUS/CUDA_VISIBLE_DEVICES
               but no real device.
``pids``       {"munged": pid, "slurmctld": pid, "slurmd": pid}
``slurm_conf``, ``conf_dir``, ``log_dir``
               the slurm.conf path, where it and gres.conf live, and where
               the daemon logs are.

Nothing is written to /etc/slurm or /etc/munge: munged gets its own key and
socket, the daemons their own ports, state and spool directories.  On exit
all jobs are cancelled and only the processes this module started (and their
descendants) are stopped, even if the body raised.

Debian ``slurm-wlm`` and ``munge`` are installed with apt-get when
``slurmctld`` is missing; that needs root.  ``slurm_unavailable_reason()``
says why a local SLURM cannot be started (or returns None), for skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

__all__ = [
    "LocalSlurmError",
    "DEFAULT_PARTITION",
    "ensure_slurm_installed",
    "slurm_unavailable_reason",
    "local_slurm",
    "local_slurm_fixture",
]

DEFAULT_PARTITION = "local"
NODE_NAME = "localhost"
_APT_PACKAGES = ("slurm-wlm", "munge")
_DAEMONS = ("slurmctld", "slurmd", "munged")
# Inherited variables that would make sbatch/srun think they run inside
# some other allocation (e.g. when the test suite itself runs in a job).
_STRIP_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")


_HEADER = "# written by tests/support/local_slurm.py -- throw-away single-node cluster\n"


class LocalSlurmError(RuntimeError):
    """The local SLURM could not be installed or started."""


# --------------------------------------------------------------------------
# installation
# --------------------------------------------------------------------------


def _have_binaries() -> bool:
    return all(shutil.which(b) for b in _DAEMONS + ("sinfo", "sbatch", "squeue"))


def slurm_unavailable_reason() -> str | None:
    """Why ``local_slurm`` cannot work here, or None if it can (or can try)."""
    if os.name != "posix" or not Path("/proc").is_dir():
        return "local SLURM needs Linux"
    if os.geteuid() != 0:
        return "local SLURM needs root (daemons run as root; apt-get install)"
    if not _have_binaries() and not shutil.which("apt-get"):
        return "slurm-wlm/munge are not installed and apt-get is unavailable"
    return None


def ensure_slurm_installed(timeout: float = 900) -> None:
    """Install Debian slurm-wlm + munge with apt-get unless already present."""
    if _have_binaries():
        return
    reason = slurm_unavailable_reason()
    if reason:
        raise LocalSlurmError(reason)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [
        "apt-get", "install", "-y", "-qq", "--no-install-recommends", *_APT_PACKAGES,
    ]

    def run(cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=timeout,
        )

    res = run(install)
    if res.returncode != 0:
        upd = run(["apt-get", "update", "-qq"])
        if upd.returncode != 0:
            raise LocalSlurmError(
                "apt-get update failed while installing slurm-wlm/munge:\n"
                + upd.stdout[-2000:] + upd.stderr[-2000:]
            )
        res = run(install)
    if res.returncode != 0 or not _have_binaries():
        raise LocalSlurmError(
            "could not install slurm-wlm/munge with apt-get "
            f"(rc={res.returncode}):\n" + res.stdout[-2000:] + res.stderr[-2000:]
        )


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise LocalSlurmError("cannot read MemTotal from /proc/meminfo")


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(lines[-n:])


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) comes after the ")" closing the command name
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _descendants(pids: list[int]) -> set[int]:
    kids = _children_map()
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def _our_stepds(slurm_conf: Path) -> set[int]:
    """slurmstepd processes of our slurmd (they daemonize: ppid becomes 1).

    Recognised by name plus our private SLURM_CONF in their environment.
    """
    want = f"SLURM_CONF={slurm_conf}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != "slurmstepd":
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if want in environ:
            found.add(int(entry))
    return found


def _signal(pids, sig) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids, timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    left = {p for p in pids if _alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if _alive(p)}
    return left


# --------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------


def _write_configs(
    base: Path, sock_dir: Path, partitions: list[str], cpus: int, mem_mb: int,
    gpus: int,
) -> dict[str, Path]:
    d = {
        "conf": base / "etc",
        "state": base / "state",
        # slurmd puts job-step sockets in its spool dir: keep it short (sun_path ≤ 108 bytes)
        "spool": sock_dir / "spool",
        "log": base / "log",
        "run": base / "run",
        "dev": base / "dev",
    }
    for p in d.values():
        p.mkdir(parents=True, exist_ok=True)
    ctld_port, slurmd_port = _free_ports(2)
    munge_sock = sock_dir / "munge.socket"

    gpu_files = []
    for i in range(gpus):
        # the index in the name becomes the GPU id (CUDA_VISIBLE_DEVICES).
        # Prefer a character device (a copy of /dev/null) so slurmd accepts it
        # as a device; an empty regular file also works, with a log error.
        f = d["dev"] / f"nvidia{i}"
        try:
            os.mknod(f, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            f.touch()
        gpu_files.append(f)

    conf = _HEADER + f"""\
ClusterName=meilocal
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_sock}
StateSaveLocation={d['state']}
SlurmdSpoolDir={d['spool']}
SlurmctldPidFile={d['run']}/slurmctld.pid
SlurmdPidFile={d['run']}/slurmd.pid
SlurmctldLogFile={d['log']}/slurmctld.log
SlurmdLogFile={d['log']}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
PlugStackConfig={d['conf']}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# the snakemake slurm plugin polls with squeue (no slurmdbd -> no sacct);
# finished jobs must stay visible to squeue long enough
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
NodeName={NODE_NAME} NodeHostname={NODE_NAME} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb}{f' Gres=gpu:{gpus}' if gpus else ''} State=UNKNOWN
"""
    for i, name in enumerate(partitions):
        default = "YES" if i == 0 else "NO"
        conf += (f"PartitionName={name} Nodes={NODE_NAME} Default={default} "
                 "MaxTime=INFINITE State=UP\n")
    (d["conf"] / "slurm.conf").write_text(conf)
    gres = "AutoDetect=off\n" + "".join(
        f"NodeName={NODE_NAME} Name=gpu File={f}\n" for f in gpu_files
    )
    (d["conf"] / "gres.conf").write_text(gres)
    (d["conf"] / "plugstack.conf").write_text("")
    d["munge_sock"] = munge_sock
    return d


_CLIENTS = (
    "srun", "sbatch", "salloc", "squeue", "scancel", "scontrol", "sinfo",
    "sacct", "sacctmgr", "sshare", "sstat", "sattach",
)


def _write_client_wrappers(bin_dir: Path, slurm_conf: Path) -> Path:
    """Shell wrappers for the SLURM clients that default SLURM_CONF to ours."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in _CLIENTS:
        real = shutil.which(name)
        if real is None:
            continue
        w = bin_dir / name
        w.write_text(
            "#!/bin/sh\n"
            f'SLURM_CONF="${{SLURM_CONF:-{slurm_conf}}}"\n'
            "export SLURM_CONF\n"
            f'exec {real} "$@"\n'
        )
        w.chmod(0o755)
    return bin_dir


@contextlib.contextmanager
def local_slurm(
    workdir: Path,
    partition: str | Sequence[str] = DEFAULT_PARTITION,
    gpus: int = 1,
    start_timeout: float = 60.0,
) -> Iterator[dict]:
    """Run a private single-node SLURM for the duration of the ``with`` block.

    ``workdir`` receives the configuration, state and logs (under
    ``workdir/local_slurm``).  ``partition`` is a name or a list of names
    (all on the one node; the first is the default partition).  ``gpus`` is
    the number of gres gpus of the node.  Yields the dict described in the
    module doc.  Raises LocalSlurmError (with the daemon logs) if it cannot
    start.
    """
    partitions = [partition] if isinstance(partition, str) else list(partition)
    partitions = list(dict.fromkeys(partitions))  # dedupe, keep order
    if not partitions:
        raise ValueError("need at least one partition name")
    partition = partitions[0]
    ensure_slurm_installed()
    base = Path(workdir).resolve() / "local_slurm"
    if (base / "etc" / "slurm.conf").is_file() and (
        base / "etc" / "slurm.conf"
    ).read_text().startswith(_HEADER):
        shutil.rmtree(base)  # a previous run's state: start afresh
    base.mkdir(parents=True, exist_ok=True)
    # unix socket paths are limited to ~107 bytes: keep munge's short
    sock_dir = Path(tempfile.mkdtemp(prefix="lslurm-", dir="/tmp"))
    try:
        yield from _run_cluster(base, sock_dir, partitions, gpus, start_timeout)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def _run_cluster(
    base: Path, sock_dir: Path, partitions: list[str], gpus: int,
    start_timeout: float,
) -> Iterator[dict]:
    partition = partitions[0]
    try:  # the CPUs this process may use (what `nproc` prints)
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    mem_mb = max(256, int(_mem_total_mb() * 0.9))
    d = _write_configs(base, sock_dir, partitions, cpus, mem_mb, gpus)
    slurm_conf = d["conf"] / "slurm.conf"

    # snakemake-executor-plugin-slurm-jobstep (0.6) removes every SLURM_*
    # variable but the job id from the environment of the `srun` it starts
    # inside the job, SLURM_CONF included; a real cluster has
    # /etc/slurm/slurm.conf to fall back on, we have not.  So the clients
    # are reached through wrappers that default SLURM_CONF to ours.
    bin_dir = _write_client_wrappers(base / "bin", slurm_conf)
    env = {
        "SLURM_CONF": str(slurm_conf),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
    }
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(_STRIP_PREFIXES)
    }
    environ.update(env)

    procs: list[subprocess.Popen] = []
    logs = {
        "munged": d["log"] / "munged.log",
        "slurmctld": d["log"] / "slurmctld.log",
        "slurmd": d["log"] / "slurmd.log",
    }

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        out = open(d["log"] / f"{name}.stdout", "ab")
        try:
            p = subprocess.Popen(
                argv, env=environ, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            out.close()
        procs.append(p)
        return p

    def report(msg: str) -> LocalSlurmError:
        parts = [msg, f"(config: {slurm_conf})"]
        with contextlib.suppress(Exception):
            node = run(["scontrol", "show", "node", NODE_NAME], timeout=5)
            parts.append("--- scontrol show node ---\n" + node.stdout + node.stderr)
        for name, path in logs.items():
            for f in (path, d["log"] / f"{name}.stdout"):
                if f.exists() and f.stat().st_size:
                    parts.append(f"--- {f} ---\n{_tail(f)}")
        return LocalSlurmError("\n".join(parts))

    def run(argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, env=environ, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise report(f"{p.args[0]} exited with {p.returncode} "
                                 f"while waiting for {what}")
            if check():
                return
            time.sleep(0.3)
        raise report(f"timed out after {timeout:.0f}s waiting for {what}")

    try:
        # --- munge ---------------------------------------------------------
        key = sock_dir / "munge.key"
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(os.urandom(1024))
        start("munged", [
            "munged", "--foreground", "--force",
            f"--socket={d['munge_sock']}", f"--key-file={key}",
            f"--pid-file={sock_dir / 'munged.pid'}",
            f"--seed-file={sock_dir / 'munged.seed'}",
            f"--log-file={logs['munged']}",
        ])

        def munge_ok() -> bool:
            if not d["munge_sock"].exists():
                return False
            cred = run(["munge", "-n", "-S", str(d["munge_sock"])])
            if cred.returncode != 0:
                return False
            back = subprocess.run(
                ["unmunge", "-S", str(d["munge_sock"])], input=cred.stdout,
                capture_output=True, text=True, timeout=15,
            )
            return back.returncode == 0

        wait_for("munged", munge_ok, start_timeout)

        # --- slurm ---------------------------------------------------------
        start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(slurm_conf)])
        def ctld_up() -> bool:
            r = run(["scontrol", "ping"])
            return r.returncode == 0 and "UP" in r.stdout

        wait_for("slurmctld", ctld_up, start_timeout)
        start("slurmd", ["slurmd", "-D", "-N", NODE_NAME, "-f", str(slurm_conf)])

        def node_idle() -> bool:
            r = run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N %t"])
            return r.returncode == 0 and f"{NODE_NAME} idle" in r.stdout

        wait_for(f"node {NODE_NAME} to become idle in sinfo", node_idle, start_timeout)

        yield {
            "pids": {Path(str(p.args[0])).name: p.pid for p in procs},
            "env": env,
            "environ": environ,
            "partition": partition,
            "partitions": partitions,
            "node": NODE_NAME,
            "cpus": cpus,
            "mem_mb": mem_mb,
            "gpus": gpus,
            "slurm_conf": str(slurm_conf),
            "conf_dir": str(d["conf"]),
            "log_dir": str(d["log"]),
        }
    finally:
        _shutdown(procs, environ, slurm_conf)


def _shutdown(
    procs: list[subprocess.Popen], environ: dict, slurm_conf: Path
) -> None:
    """Cancel jobs, then stop our daemons and everything they spawned."""
    by_name = {Path(str(p.args[0])).name: p for p in procs}
    ctld = by_name.get("slurmctld")
    if ctld is not None and ctld.poll() is None:
        with contextlib.suppress(Exception):
            # only our private controller is reachable through this SLURM_CONF
            subprocess.run(["scancel", "--full", "--user=root"], env=environ,
                           capture_output=True, timeout=15)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                r = subprocess.run(["squeue", "-h", "-t", "R,CG,PD", "-o", "%i"],
                                   env=environ, capture_output=True, text=True,
                                   timeout=15)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(0.3)
    # Whatever is left of the jobs (slurmstepd daemonizes, its job processes
    # descend from it) and the daemons' own helpers; collected before the
    # daemons go away, and again after.
    ours = {p.pid for p in procs}

    def leftovers() -> set[int]:
        stepds = _our_stepds(slurm_conf)
        return stepds | _descendants(list(ours | stepds))

    spawned = leftovers()
    for name in ("slurmd", "slurmctld", "munged"):
        p = by_name.get(name)
        if p is None or p.poll() is not None:
            continue
        spawned |= _descendants([p.pid])
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
    spawned |= leftovers()
    spawned -= ours
    spawned.discard(os.getpid())
    _signal(spawned, signal.SIGTERM)
    left = _wait_gone(spawned, 5)
    _signal(left, signal.SIGKILL)
    _wait_gone(left, 5)
    for p in procs:  # reap
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def local_slurm_fixture(scope: str = "module", **kwargs):
    """Return a pytest fixture running ``local_slurm`` (skips if impossible).

    Usage in a test module::

        slurm_cluster = local_slurm_fixture()
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory):
        reason = slurm_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with local_slurm(tmp_path_factory.mktemp("slurm"), **kwargs) as info:
            yield info

    return _fixture
