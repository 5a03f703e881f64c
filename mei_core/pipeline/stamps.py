"""What a plan was made from, as file stamps: a plan is checked again only when one of them changed.

Planning a config (:func:`mei_core.pipeline.plan.prepare`) imports torch, loads members and builds
every method's components: seconds on every Snakemake invocation although, on most invocations,
nothing it read has changed (benchmarks/README.md, "Planning time"). The main process records, beside
its plan, the stamp (size, mtime, ctime, inode) of everything planning read or made:

- every path a config string names (member checkpoints and data files, ``input_stats.from``, ground
  truth, objective tables, builder arguments), as absent when it does not exist, and every file under
  a named folder; not the files demo rules make (their jobs check them, Snakemake's mtimes track them);
- the source files of the user modules the config names (builders, components, ``method_fn``,
  objectives) and of the user modules they import, transitively (``hashing.user_module_closure``),
  with their folders (a new module beside them can shadow another) and the ``pythonpath`` folders;
- mei_core's own files (checks, presets, defaults) and the config schema;
- the spec files the plan wrote;
- the interpreter, ``sys.path`` and ``PYTHONPATH``.

The next invocation of the same config re-stats these paths (milliseconds, no import) and takes the
recorded plan when every stamp is equal. A stamp within :data:`RACY_NS` of the recording is not
trusted (a file edited in the same clock tick as it was read keeps its mtime): it is recorded as
untrusted and never matches, as git treats racily clean index entries. A dry run records nothing
(it changes nothing on disk): it plans fully until a run has recorded the plan of its config.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: a stamp this close (ns) to its recording may predate an edit in the same clock tick (file times
#: advance in ticks of at most 10 ms, often finer): never trusted
RACY_NS = 100_000_000
#: files under one named folder stamped at most (a larger folder is not stamped: always planned again)
MAX_FOLDER_FILES = 10_000
#: the stamp of a path that cannot be trusted or stamped; equal to no stamp
UNTRUSTED = "untrusted"

_MEI_CORE = Path(__file__).resolve().parents[1]
#: config keys whose values name output folders (their content is the run's, not the plan's input)
_OUTPUT_KEYS = ("results", "resources")


def stamp(path: Path) -> list[int] | None:
    """``[size, mtime_ns, ctime_ns, inode]`` of ``path`` (``cp -p`` keeps the mtime, not the ctime), or
    ``None`` when it does not exist."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def environment() -> dict[str, Any]:
    """What decides which modules an import path names, besides the files: the interpreter and its path."""
    return {"python": sys.executable, "sys_path": list(sys.path), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def config_strings(value: Any, key: str = "") -> Iterator[str]:
    """Every string in a config, except the output folders' names."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not (key == "" and k in _OUTPUT_KEYS):
                yield from config_strings(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from config_strings(v, key)
    elif isinstance(value, str) and value and len(value) < 4096 and "\0" not in value and "\n" not in value:
        yield value


def _named_paths(config: Mapping[str, Any], base: Path, produced: Iterable[str]) -> Iterator[Path]:
    """The paths the config's strings name, with every file and folder under a named folder, except
    what rules make (``produced``: demo members, their ground truth): the plan holds no content of
    those (Snakemake's mtimes rerun what reads them) and the jobs that assemble them check them."""
    resolved_base = base.resolve()
    for text in dict.fromkeys(config_strings(config)):
        if text in produced:
            continue
        path = base / text
        yield path
        try:
            is_folder = path.is_dir()
        except (OSError, ValueError):
            continue
        if is_folder:
            folder = path.resolve()
            if folder == resolved_base or folder in resolved_base.parents:
                continue  # the project itself ("." or a parent): its outputs are not the plan's inputs
            yield from _folder_contents(path)


def _folder_contents(folder: Path) -> Iterator[Path]:
    for count, path in enumerate(folder.rglob("*")):
        if count >= MAX_FOLDER_FILES:
            yield folder / "\0too many files"  # stamped as untrusted: planned again every time
            return
        if "__pycache__" not in path.parts:
            yield path


def _user_sources(config: Mapping[str, Any]) -> Iterator[Path]:
    """The user modules the config names and those they import (transitively), with their folders."""
    from ..hashing import import_paths_in, user_module_closure, user_module_file

    for import_path in sorted(set(import_paths_in(config))):
        file = user_module_file(import_path)
        if file is not None:
            for source in user_module_closure(file):
                yield source
                yield source.parent


def _mei_core_files() -> Iterator[Path]:
    from .configfile import SCHEMA

    yield SCHEMA
    for folder, folders, files in os.walk(_MEI_CORE):
        folders[:] = sorted(f for f in folders if f != "__pycache__")
        yield Path(folder)
        yield from (Path(folder) / f for f in sorted(files) if not f.endswith((".pyc", ".pyo")))


def planning_inputs(config: Mapping[str, Any], base: Path, written: Iterable[str], produced: Iterable[str],
                    pythonpath: Iterable[str], before: dict[str, Any]) -> dict[str, Any]:
    """Stamps of what a plan of ``config`` in ``base`` read and wrote (``written``: its spec files,
    relative to ``base``; ``produced``: files rules make, not stamped), for :func:`unchanged`. Call
    after planning (the user modules are found on the path as planning set it) and after writing the
    spec files; ``before``: the :func:`environment` before planning imported anything (as the next
    invocation sees it when it compares)."""
    now = time.time_ns()
    base = base.resolve()  # paths recorded whole: the record holds whatever the working folder
    stamps: dict[str, Any] = {}
    read = [*_named_paths(config, base, set(produced)), *_user_sources(config), *map(Path, pythonpath), *_mei_core_files()]
    for path in read:
        found = stamp(path) if "\0" not in str(path) else UNTRUSTED
        if isinstance(found, list) and max(found[1], found[2]) > now - RACY_NS:
            found = UNTRUSTED
        stamps[str(path)] = found
    for file in written:  # written by the plan itself: their stamps are trusted as they are
        stamps[str(base / file)] = stamp(base / file)
    return {"environment": before, "stamps": stamps}


def unchanged(recorded: Any) -> bool:
    """Whether every path :func:`planning_inputs` stamped still has its stamp (and the environment is
    the same): then the recorded plan is the plan this invocation would make."""
    if not isinstance(recorded, dict) or recorded.get("environment") != environment():
        return False
    stamps = recorded.get("stamps")
    if not isinstance(stamps, dict):
        return False
    return all(found != UNTRUSTED and stamp(Path(path)) == found for path, found in stamps.items())
