"""Identity of what a job computes: canonical JSON, file hashes, and the source of user modules.

One place for every hash the pipeline keys reruns and results by:
- ``canonical_json``: equal for equal content whatever the key order or number spelling;
- ``method_hash``: a method's ``method_fn`` and config, plus the source of the user modules it names;
- ``sha256_file`` / ``sha256_files``: checkpoints and data files;
- ``source_hashes``: the source files of user modules named by import path (builders, components,
  ``method_fn``, custom objectives) and of the user modules they import, transitively, so editing
  them reruns exactly what they affect. Modules of ``mei_core`` (versioned with the pipeline), the
  standard library and installed third-party packages are not hashed.
"""

from __future__ import annotations

import ast
import functools
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
    return _user_module(import_path.rpartition(".")[0])


def _user_module(module_name: str) -> Path | None:
    """The source file of ``module_name`` or, failing that, of its closest parent package that is a
    user module (``None`` when it is ``mei_core``, the standard library or an installed package)."""
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
    """``{import path: hash of its user module's source}`` for the user modules a config names: the
    sha256 of the module's file, or, when it imports other user modules (transitively), one digest
    of every file of that closure, so editing a helper module the named one imports counts too."""
    hashes = {}
    for path in sorted(set(import_paths_in(config))):
        file = user_module_file(path)
        if file is not None:
            closure = user_module_closure(file)
            hashes[path] = sha256_file(file) if closure == [file] else _digest_of(closure)
    return hashes


def _digest_of(files: list[Path]) -> str:
    """Each file named by where it sits on the import path (not its absolute path: a project
    copied or moved elsewhere keeps its hashes)."""
    digest = hashlib.sha256()
    for file in files:
        name = "/".join([*_package_of(file).split("."), file.name]).lstrip("/")
        digest.update(f"{name}\0{sha256_file(file)}\0".encode())
    return digest.hexdigest()


def user_module_closure(file: Path) -> list[Path]:
    """``file`` and the source files of the user modules it imports, transitively (sorted, ``file``
    first). Imports are read from the source (``import a.b``, ``from a import b``, relative imports,
    also inside functions), not executed; modules that are not user modules end the walk."""
    seen, pending = {file}, [file]
    while pending:
        current = pending.pop()
        for imported in _imports_of(current, _mtime_key(current)):
            if imported not in seen:
                seen.add(imported)
                pending.append(imported)
    return [file, *sorted(seen - {file})]


def _mtime_key(file: Path) -> tuple[int, int]:
    info = file.stat()
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=None)
def _imports_of(file: Path, _stamp: tuple[int, int]) -> tuple[Path, ...]:
    """User module files that ``file``'s source imports (cached per file version within a process)."""
    try:
        tree = ast.parse(file.read_text(), str(file))
    except (OSError, SyntaxError, ValueError):
        return ()
    package = _package_of(file)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's own package
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    found = set()
    for name in names:
        module = _user_module_exact(name)
        if module is not None and module != file:
            found.add(module)
    return tuple(sorted(found))


def _user_module_exact(module_name: str) -> Path | None:
    """The user module file of exactly ``module_name`` (``from pkg import name`` names an attribute
    as often as a submodule: only real modules count)."""
    top = module_name.split(".")[0]
    if top == "mei_core" or top in sys.builtin_module_names:
        return None
    if "." in module_name and _user_module_exact(top) is None and not _is_user_namespace(top):
        return None  # inside an installed package: not imported just to look
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    return origin if origin.suffix == ".py" and not str(origin).startswith(_NOT_USER) else None


def _package_of(file: Path) -> str:
    """The dotted package a module file belongs to, as found on ``sys.path``."""
    folder = file.parent.resolve()
    for entry in sorted((Path(p).resolve() for p in sys.path if p), key=lambda p: -len(str(p))):
        try:
            relative = folder.relative_to(entry)
        except ValueError:
            continue
        return ".".join(relative.parts)  # (a package's __init__.py: the package itself)
    return ""


def _is_user_namespace(name: str) -> bool:
    """A namespace package (a folder without ``__init__.py``) outside installed packages."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    locations = list(spec.submodule_search_locations or []) if spec is not None and spec.origin in (None, "namespace") else []
    return any(not (str(Path(p).resolve()) + os.sep).startswith(_NOT_USER) for p in locations)
