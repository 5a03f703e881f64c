"""Small file helpers: atomic writes and content-stable writes (hashes live in ``hashing``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .hashing import canonical_json


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the body succeeds, so a
    killed job leaves no file that a rerun could trust."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix or target.suffix)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any file
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | os.PathLike, payload: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_json_if_changed(path: str | os.PathLike, payload: Any) -> bool:
    """Write canonical JSON only when its content differs, so an unchanged spec keeps its mtime and
    Snakemake reruns nothing downstream (also under ``--rerun-triggers mtime``). Returns whether written."""
    text = json.dumps(json.loads(canonical_json(payload)), indent=2, sort_keys=True) + "\n"
    target = Path(path)
    if target.exists() and target.read_text() == text:
        return False
    with atomic_path(target) as temporary:
        temporary.write_text(text)
    return True


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete what a killed writer of ``path`` left beside it: :func:`atomic_path`'s temporary files
    (``.<name>.*``) and a half-built directory (``.<name>.partial``). Returns what was removed."""
    import shutil

    target = Path(path)
    removed = []
    for leftover in target.parent.glob(f".{target.name}.*") if target.parent.exists() else []:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed
