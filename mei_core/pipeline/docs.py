"""The tables of config/README.md that are generated from the registries and option declarations, so
they cannot drift: ``python -m mei_core docs --check`` fails on a difference, ``--write`` rewrites them.

A generated table sits between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``; the
text outside the markers is written by hand.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import MEIConfigError

README = Path(__file__).resolve().parents[2] / "config" / "README.md"


def _is_built_in(value: object) -> bool:
    """Entries of the package itself (a kind a test or a lab defines registers too, but is not documented here)."""
    module = getattr(value, "__module__", None) or type(value).__module__
    return module.startswith("mei_core.")


def component_built_ins() -> dict[str, str]:
    """Each component family (base class name in :mod:`mei_core.components`) → its built-ins as
    ``Name(parameter, …)``, in registration order."""
    from .. import components
    from ..config import COMPONENTS

    families: dict[str, list[str]] = {}
    for entry in COMPONENTS:
        if not inspect.isclass(entry.value):
            continue
        for base in entry.value.__mro__[1:]:
            if base.__module__ == components.__name__ and base is not components.Component and base.__name__ in vars(components):
                families.setdefault(base.__name__, []).append(f"`{entry.name}({', '.join(entry.parameters)})`")
                break
    return {family: ", ".join(names) for family, names in families.items()}


def _method_options() -> str:
    from ..options import METHOD_OPTIONS, markdown_table

    return markdown_table(METHOD_OPTIONS, component_built_ins())


def _cmaes_options() -> str:
    from ..cmaes import OPTIONS
    from ..options import markdown_table

    return markdown_table(OPTIONS)


def _objective_kinds() -> str:
    from ..objectives.kinds import OBJECTIVE_KINDS

    return OBJECTIVE_KINDS.markdown_table(("name", "description"), where=lambda e: _is_built_in(e.value))


def _demo_kinds() -> str:
    from ..demo import DEMO_KINDS

    return DEMO_KINDS.markdown_table(("name", "description"), where=lambda e: _is_built_in(e.value))


def _ground_truth_kinds() -> str:
    from .ground_truth import GROUND_TRUTH_KINDS

    return GROUND_TRUTH_KINDS.markdown_table(("name", "description"), where=lambda e: _is_built_in(e.value))


def _presets() -> str:
    from ..presets import PRESETS

    return PRESETS.markdown_table()


#: every generated table by its marker name
TABLES: dict[str, Callable[[], str]] = {
    "method-options": _method_options,
    "cmaes-options": _cmaes_options,
    "objective-kinds": _objective_kinds,
    "demo-kinds": _demo_kinds,
    "ground-truth-kinds": _ground_truth_kinds,
    "presets": _presets,
}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated: {re.escape(name)} -->\n)(.*?)(<!-- end generated: {re.escape(name)} -->)", re.S)


def regenerated(text: str) -> str:
    """``text`` with every generated table rewritten; a marker pair missing is an error naming it."""
    for name, make in TABLES.items():
        pattern = _block(name)
        if not pattern.search(text):
            raise MEIConfigError(f"{README.name}: no <!-- generated: {name} --> … <!-- end generated: {name} --> block")
        table = make()
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(3), text)
    return text


def check_or_write(write: bool, readme: Path = README) -> int:
    """0 when the README holds the generated tables (after writing them, with ``write``), 1 otherwise."""
    text = readme.read_text()
    new = regenerated(text)
    if new == text:
        return 0
    if write:
        readme.write_text(new)
        return 0
    stale = [name for name in TABLES if _block(name).search(text).group(2) != _block(name).search(new).group(2)]
    print(f"{readme}: generated tables out of date: {', '.join(stale)} (python -m mei_core docs --write)")
    return 1
