"""Identity of what a job computes: canonical JSON, file hashes, and the source of user modules.

One place for every hash the pipeline keys reruns and results by:
- ``canonical_json``: equal for equal content whatever the key order or number spelling;
- ``method_hash``: a method's ``method_fn`` and config, plus the source of the user modules it names;
- ``sha256_file`` / ``sha256_files``: checkpoints and data files;
- ``source_hash``: the source files of user modules named by import path (builders, components,
  ``method_fn``, custom objectives), so editing them reruns exactly what they affect. Modules of
  ``mei_core`` (versioned with the pipeline) and of installed third-party packages are not hashed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import MEIConfigError


def _canonical(value: Any, key: str = "config") -> Any:
    """Numbers compare by value (1e-3 == 0.001, 2 == 2.0); mappings by sorted key."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _canonical(value.item(), key)
    raise MEIConfigError(f"{key}: {type(value).__name__} values cannot be hashed; use plain JSON types")


def canonical_json(value: Any) -> str:
    """JSON that is equal for equal content, whatever the key order or number spelling."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(base: Path, files: Iterable[str]) -> str:
    """One digest of several files (each named, so renaming a file changes it too)."""
    files = list(files)
    if len(files) == 1:
        return sha256_file(base / files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file}\0{sha256_file(base / file)}\0".encode())
    return digest.hexdigest()


def method_hash(method_fn: str, config: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> str:
    """sha256 of the canonical JSON of ``(method_fn, config)`` and the source hashes of the user
    modules they name (omitted when there are none, so configs of built-ins keep their hash)."""
    payload: dict[str, Any] = {"method_fn": method_fn, "config": config}
    if sources:
        payload["sources"] = dict(sources)
    return sha256_text(canonical_json(payload))


# ------------------------------------------------------------------------------------ user sources

_NOT_USER = tuple(
    str(Path(p).resolve()) + os.sep
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    | {str(Path(__file__).resolve().parent)}
)


def user_module_file(import_path: str) -> Path | None:
    """The source file of the module an import path (``pkg.module.Name``) lives in, when it is a user
    module: not part of ``mei_core``, the standard library or an installed package. ``None`` else."""
    module_name = import_path.rpartition(".")[0]
    while module_name:
        if module_name.split(".")[0] == "mei_core" or module_name in sys.builtin_module_names:
            return None
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
            origin = Path(spec.origin).resolve()
            if not str(origin).startswith(_NOT_USER) and origin.suffix == ".py":
                return origin
            return None
        module_name = module_name.rpartition(".")[0]  # "module.Class.method" paths: try the parent
    return None


def import_paths_in(value: Any) -> list[str]:
    """Every string under a ``path``, ``builder``, ``method_fn`` or ``decoder`` (the
    ``Decoder`` parameterisation's import path) key of a (nested) config."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in ("path", "builder", "method_fn", "decoder") and isinstance(v, str):
                found.append(v)
            else:
                found.extend(import_paths_in(v))
    elif isinstance(value, (list, tuple)):
        for v in value:
            found.extend(import_paths_in(v))
    return found


def source_hashes(config: Any) -> dict[str, str]:
    """``{import path: sha256 of its user module's source}`` for the user modules a config names."""
    hashes = {}
    for path in sorted(set(import_paths_in(config))):
        file = user_module_file(path)
        if file is not None:
            hashes[path] = sha256_file(file)
    return hashes
