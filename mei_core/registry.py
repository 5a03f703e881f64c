"""One idiom for every named kind of thing (objective kinds, demo kinds, ground-truth kinds, presets,
components): a :class:`Registry` that modules add to with ``@REGISTRY.register(...)`` (or, for kinds
defined by subclassing a base, from the base's ``__init_subclass__``).

A registry knows the modules that define its entries and imports them on first lookup, so reading
the names costs no import at module load; a lookup of an unknown name raises :class:`MEIConfigError`
naming the config key and the known names. ``markdown_table()`` feeds the doc tables, so they cannot
drift (``python -m mei_core docs --check``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import MEIConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    description: str = ""

    @property
    def parameters(self) -> tuple[str, ...]:
        """The keyword parameters of a callable entry (a class: its constructor's), from its signature."""
        target = self.value.__init__ if inspect.isclass(self.value) else self.value
        if not callable(target):
            return ()
        names = []
        for p in inspect.signature(target).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                names.append(p.name)
        return tuple(names)


@dataclass
class Registry(Generic[T]):
    """Named entries of one kind. ``what`` names the kind in messages ("objective kind")."""

    what: str
    #: modules that register entries when imported (imported on first lookup)
    modules: Sequence[str] = ()
    #: run once after ``modules`` are imported, to add entries that are not registered by a decorator
    #: (e.g. the public classes of the component modules, the demo kinds that have ground truth)
    collect: Callable[[Registry[T]], None] | None = None
    #: names that once meant something: the hint added to the unknown-name error
    hints: Mapping[str, str] = field(default_factory=dict)
    #: how the error introduces the known names
    known_label: str = "known"
    _entries: dict[str, Entry[T]] = field(default_factory=dict, repr=False)
    _loaded: bool = field(default=False, repr=False)
    _instances: dict[Any, Any] = field(default_factory=dict, repr=False)

    def register(self, name: str | None = None, description: str = "") -> Callable[[T], T]:
        """Decorator: add the decorated object under ``name`` (default: its ``name`` attribute or
        ``__name__``); a second, different object under a known name is an error."""

        def add(value: T) -> T:
            self.add(name or getattr(value, "name", None) or value.__name__, value, description)
            return value

        return add

    def add(self, name: str, value: T, description: str = "") -> None:
        known = self._entries.get(name)
        if known is not None and known.value is not value:
            raise RuntimeError(f"two {self.what}s are named {name!r}: {known.value!r} and {value!r}")
        self._entries[name] = Entry(name, value, description or _first_line(value))

    def _load(self) -> dict[str, Entry[T]]:
        if not self._loaded:
            self._loaded = True
            for module in self.modules:
                importlib.import_module(module)
            if self.collect is not None:
                self.collect(self)
        return self._entries

    def names(self) -> list[str]:
        return list(self._load())

    def entry(self, name: str, key: str) -> Entry[T]:
        entries = self._load()
        if name not in entries:
            hint = f" ({self.hints[name]})" if name in self.hints else ""
            raise MEIConfigError(f"{key}: unknown {self.what} {name!r}{hint}; {self.known_label}: {', '.join(sorted(entries))}")
        return entries[name]

    def get(self, name: str, key: str) -> T:
        return self.entry(name, key).value

    def instance(self, name: str, key: str) -> Any:
        """The one instance of a class entry, built on first use (kinds keep no state between calls)."""
        cls = self.get(name, key)
        if cls not in self._instances:
            self._instances[cls] = cls()
        return self._instances[cls]

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(list(self._load().values()))

    def markdown_table(self, columns: Sequence[str] = ("name", "parameters", "description"),
                       where: Callable[[Entry[T]], bool] | None = None) -> str:
        """The entries (those ``where`` accepts, by name) as a Markdown table, for the doc tables generated from
        the registry."""
        cells = {
            "name": lambda e: f"`{e.name}`",
            "parameters": lambda e: ", ".join(f"`{p}`" for p in e.parameters),
            "description": lambda e: e.description.replace("|", "\\|"),
        }
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        # by name: registration order depends on which module a process imported first
        lines += ["| " + " | ".join(cells[c](e) for c in columns) + " |" for e in sorted(self, key=lambda e: e.name) if where is None or where(e)]
        return "\n".join(lines)


def _first_line(value: Any) -> str:
    """The first paragraph of the docstring of ``value`` (of its class for an instance), never one
    inherited from a base (``ABC``'s says nothing about the entry)."""
    owner = value if inspect.isclass(value) or inspect.isroutine(value) else type(value)
    doc = inspect.cleandoc(vars(owner).get("__doc__") or "") if inspect.isclass(owner) else inspect.getdoc(owner) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")
