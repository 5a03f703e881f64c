"""Component specs and their imports with precise errors.

A component spec is either a short alias of a built-in (``"NumIterations"``) or a mapping
``{"path": "dotted.module.Name", "kwargs": {...}}`` (the sinzlab/mei convention); ``path`` may also be an
alias. Specs are never mutated: every function here reads its input and builds new objects.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import inspect
import io
import re
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import MEIConfigError
from .registry import Registry

#: the modules of the built-in components; a module's public names (``__all__``) that are concrete
#: components or functions are its entries, so adding a component to one of them is adding the class
_BUILTIN_MODULES = (
    "mei_core.initial",
    "mei_core.stoppers",
    "mei_core.transforms",
    "mei_core.regularizers",
    "mei_core.preconditioners",
    "mei_core.postprocessors",
    "mei_core.trackers",
    "mei_core.backgrounds",
    "mei_core.parameterisations",
)

_NUMBER_AS_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def _public_components(registry: Registry) -> None:
    from .components import Component

    for module_name in _BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            concrete = inspect.isclass(obj) and issubclass(obj, Component) and not inspect.isabstract(obj)
            if (concrete or inspect.isfunction(obj)) and name not in registry:
                registry.add(name, obj)


#: every built-in component by its short alias (imported on first lookup: importing config stays cheap)
COMPONENTS: Registry[Any] = Registry("built-in component", collect=_public_components)


def builtin_aliases() -> dict[str, str]:
    """Map every built-in component alias to its dotted path."""
    return {entry.name: f"{entry.value.__module__}.{entry.name}" for entry in COMPONENTS}


class _ExitAtImport(Exception):
    """A module ended the process while being imported (``sys.exit``, or argparse on ``sys.argv``)."""


def _import_module(module_name: str) -> Any:
    """``importlib.import_module``, but a module that calls ``sys.exit`` at import (a script's
    top-level code, e.g. argparse parsing Snakemake's own command line) raises :class:`_ExitAtImport`
    naming it and the code, instead of ending Snakemake with no word. What the module writes to
    stderr while being imported is passed on, unless it exits (then it goes into the message)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    written = io.StringIO()
    try:
        with contextlib.redirect_stderr(written):
            module = importlib.import_module(module_name)
    except SystemExit as error:
        said = written.getvalue().strip().splitlines()
        frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
        by_argparse = any(frame.f_code.co_filename == argparse.__file__ for frame in frames)
        # the module whose top-level code exited: the last frame outside argparse and the import system
        callers = [frame.f_globals.get("__name__") for frame in frames
                   if frame.f_code.co_filename != argparse.__file__ and not frame.f_code.co_filename.startswith("<frozen")]
        culprit = callers[-1] if callers and callers[-1] not in (None, __name__, "importlib") else module_name
        who = f"module {module_name!r}" + (f" (importing {culprit!r})" if culprit != module_name else "")
        if by_argparse:
            why = f"parses the command line at import (argparse said {said[0] if said else ''!r})"
        else:
            why = "called sys.exit at import" + (f" after writing {' | '.join(said[-3:])!r}" if said else "")
        raise _ExitAtImport(f"{who} {why}, exit code {error.code!r}: "
                            "put a script's top-level code under `if __name__ == '__main__':`") from None
    except BaseException:
        sys.stderr.write(written.getvalue())
        raise
    sys.stderr.write(written.getvalue())
    return module


def import_object(path: str, key: str) -> Any:
    """Import ``path`` ("module.sub.Name" or a built-in alias), naming ``key`` in every error."""
    if not isinstance(path, str) or not path:
        raise MEIConfigError(f"{key}: expected an import path string, got {path!r}")
    aliases = builtin_aliases()
    if path in aliases:
        path = aliases[path]
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise MEIConfigError(
            f"{key}: {path!r} is neither a built-in alias nor a dotted import path 'module.Name'. "
            f"Built-in aliases: {', '.join(sorted(aliases))}"
        )
    try:
        module = _import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing and module_name != missing and not module_name.startswith(missing + "."):
            raise MEIConfigError(
                f"{key}: module {module_name!r} was found but importing it failed because its "
                f"dependency {missing!r} is not installed"
            ) from error
        raise MEIConfigError(f"{key}: module {module_name!r} not found (from path {path!r})") from error
    except _ExitAtImport as error:
        raise MEIConfigError(f"{key}: {error}") from None
    except Exception as error:  # a user module that raises on import: say which and why
        raise MEIConfigError(
            f"{key}: importing module {module_name!r} raised {type(error).__name__}: {error}"
        ) from error
    try:
        return getattr(module, attribute)
    except AttributeError as error:
        raise MEIConfigError(f"{key}: module {module_name!r} has no attribute {attribute!r}") from error


def check_numbers_are_numbers(value: Any, key: str) -> None:
    """YAML 1.1 reads ``1e-3`` as a string; catch that before it reaches a constructor."""
    if isinstance(value, str) and _NUMBER_AS_STRING.match(value.strip()):
        raise MEIConfigError(
            f"{key}: {value!r} is a string that looks like a number; YAML reads exponents without a "
            f"dot as strings, write it as e.g. {float(value)!r}"
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_numbers_are_numbers(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_numbers_are_numbers(v, f"{key}[{i}]")


def check_arguments(target: Callable, kwargs: Mapping[str, Any], key: str, args: Sequence[Any] = ()) -> None:
    """Raise a clear error naming the unknown or missing argument and showing the signature."""
    try:
        signature = inspect.signature(target, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # annotations naming types not importable here
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return
    except ValueError:  # builtins without a signature: let the call itself speak
        return
    name = getattr(target, "__qualname__", repr(target))
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        known = set(signature.parameters)
        unknown = [k for k in kwargs if k not in known]
        if unknown and not accepts_any:
            raise MEIConfigError(
                f"{key}: unknown argument {unknown[0]!r} for {name}{signature}"
            ) from None
        raise MEIConfigError(f"{key}: {error} — {name}{signature}") from None
    for argument, value in kwargs.items():
        parameter = signature.parameters.get(argument)
        if parameter is not None:
            _check_annotated_number(value, parameter.annotation, f"{key}.{argument}")


def _check_annotated_number(value: Any, annotation: Any, key: str) -> None:
    """An argument annotated ``int`` (or ``int | None``) gets a whole number, never a silently
    truncated ``5.5``; one annotated ``float`` gets a number, not a string."""
    accepted = set(typing.get_args(annotation)) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else {annotation}
    if value is None or isinstance(value, bool) or not accepted & {int, float}:
        return
    if int in accepted and float not in accepted:
        if isinstance(value, float) and not value.is_integer() or not isinstance(value, (int, float)):
            raise MEIConfigError(f"{key}: {value!r} is not an integer")
    elif not isinstance(value, (int, float)) and not accepted - {int, float, type(None)}:
        raise MEIConfigError(f"{key}: {value!r} is not a number")


def build_component(spec: Any, key: str, *, extra_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Build one component from its spec (alias string or ``{"path", "kwargs"}`` mapping)."""
    if isinstance(spec, str):
        path, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        unexpected = set(spec) - {"path", "kwargs"}
        if unexpected:
            raise MEIConfigError(
                f"{key}: unexpected key(s) {sorted(unexpected)}; a component spec has 'path' and 'kwargs'"
            )
        if "path" not in spec:
            raise MEIConfigError(f"{key}: missing 'path' (a built-in alias or 'module.Name')")
        path = spec["path"]
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise MEIConfigError(f"{key}.kwargs: expected a mapping, got {type(kwargs).__name__}")
    else:
        raise MEIConfigError(
            f"{key}: expected an alias string or a mapping with 'path' and 'kwargs', got {spec!r}"
        )
    kwargs = copy.deepcopy(dict(kwargs))  # constructors must never alias the user's config
    check_numbers_are_numbers(kwargs, f"{key}.kwargs")
    target = import_object(path, f"{key}.path" if isinstance(spec, Mapping) else key)
    if not callable(target):
        raise MEIConfigError(f"{key}: {path!r} is not callable (it is a {type(target).__name__})")
    kwargs.update(extra_kwargs or {})
    check_arguments(target, kwargs, f"{key}.kwargs")
    try:
        return target(**kwargs)
    except MEIConfigError:
        raise
    except Exception as error:  # user code: say which key and which class, keep the cause
        raise MEIConfigError(f"{key}: constructing {path} failed: {type(error).__name__}: {error}") from error


def build_components(spec: Any, key: str) -> list[Any]:
    """A slot that takes one spec or a list of specs (applied in order)."""
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):
        return [build_component(s, f"{key}[{i}]") for i, s in enumerate(spec)]
    return [build_component(spec, key)]


def require(config: Mapping[str, Any], slot: str, key: str) -> Any:
    """A required slot of a method config; missing gives a message naming it."""
    if slot not in config or config[slot] is None:
        raise MEIConfigError(f"{key}.{slot}: required slot is missing")
    return config[slot]
