"""A ``methods.<name>`` entry of the config: a named preset and its parameters, partial overrides,
and grids of values to compare.

```yaml
methods:
  default: {preset: default}                      # derives its contrast budget from input_stats
  strong:
    preset: default
    params: {norm_factor: 0.5}                    # the preset's parameters
    config: {stopper: {path: NumIterations, kwargs: {num_iterations: 400}}}   # deep-merged over it
  sweep:
    preset: default
    grid: {params.norm_factor: [0.1, 0.25, 0.5]}  # one method per value: sweep[norm_factor=0.1], …
```

A preset is resolved per ensemble (its input shape and ``input_stats``), so the merged config that
runs, and its hash, are per (ensemble, method) and written to that pair's method spec.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import re
from collections.abc import Mapping
from typing import Any

from ..errors import MEIConfigError


#: a grid value that shows in a method's name as it is (the name is a folder in every path of its
#: files); any other value shows as ``#<position in its list>``, and the spec has it in full
_NAME_SAFE = re.compile(r"[A-Za-z0-9_.+\-']{1,40}")


def _label(value: Any, position: int) -> str:
    """A grid value as it shows in a method's name: ``repr`` (floats round-trip, strings are quoted,
    so 0.1, 0.10000001 and '0.1' differ) when that is a safe file-name token, else ``#position``."""
    text = repr(value) if isinstance(value, (str, float)) else str(value)
    return text if _NAME_SAFE.fullmatch(text) else f"#{position}"


def _short_keys(keys: list[str]) -> list[str]:
    """Each dotted key by its shortest suffix that no other key of the grid shares
    (``config.optimizer.kwargs.lr`` → ``lr``, unless the grid also varies ``config.scheduler.kwargs.lr``)."""
    short = []
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        short.append(suffix)
    return short


def expand_grids(methods: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Methods with every ``grid`` expanded into one method per combination of values, and for each
    expanded method its grid ``{"base": name, "values": {dotted key: value}}``. Each combination gets
    its own copy of every value (a nested key of one combination never changes another's), keys are
    applied parents first (``config.optimizer`` before ``config.optimizer.kwargs.lr``), and two
    combinations (or a combination and another method) with one name are refused."""
    expanded: dict[str, dict[str, Any]] = {}
    grids: dict[str, dict[str, Any]] = {}
    for name, entry in methods.items():
        grid = entry.get("grid")
        if not grid:
            _add(expanded, name, dict(entry), f"methods.{name}")
            continue
        keys = list(grid)
        for key in keys:
            if not isinstance(grid[key], list) or not grid[key]:
                raise MEIConfigError(f"methods.{name}.grid.{key}: expected a non-empty list of values")
            if key.split(".")[0] not in ("params", "config"):
                raise MEIConfigError(f"methods.{name}.grid.{key}: grid keys start with 'params.' (preset parameters) or 'config.' (method config)")
        short = _short_keys(keys)
        parents_first = sorted(range(len(keys)), key=lambda k: keys[k].count("."))
        for positions in itertools.product(*(range(len(grid[k])) for k in keys)):
            values = [grid[key][i] for key, i in zip(keys, positions)]
            label = ",".join(f"{s}={_label(v, i)}" for s, v, i in zip(short, values, positions))
            member = copy.deepcopy({k: v for k, v in entry.items() if k != "grid"})
            for k in parents_first:
                _set_dotted(member, keys[k], copy.deepcopy(values[k]))
            _add(expanded, f"{name}[{label}]", member, f"methods.{name}.grid")
            grids[f"{name}[{label}]"] = {"base": name, "values": dict(zip(keys, copy.deepcopy(values)))}
    return expanded, grids


def _add(expanded: dict[str, dict[str, Any]], name: str, entry: dict[str, Any], key: str) -> None:
    if name in expanded:
        raise MEIConfigError(f"{key}: gives a second method named {name!r} (a value listed twice, or a method of that name); "
                             f"each method needs its own name")
    expanded[name] = entry


def refuse_identical_grid_members(specs: Mapping[str, Mapping[str, Any]], ensemble: str) -> None:
    """Two methods of one grid that run the same config on ``ensemble`` (same ``method_hash``, e.g. a
    grid over a preset parameter that a ``config`` key overrides, or values equal as numbers) would
    give identical results under two names: refused, naming both."""
    seen: dict[tuple[str, str], str] = {}
    for method, spec in specs.items():
        if not spec.get("grid"):
            continue
        identity = (spec["grid"]["base"], spec["method_hash"])
        if identity in seen:
            raise MEIConfigError(f"methods.{identity[0]}.grid: {seen[identity]} and {method} run the same config on ensemble {ensemble!r} "
                                 f"(does a 'config' key override what the grid varies, or are two values equal?)")
        seen[identity] = method


def _set_dotted(entry: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target = entry
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise MEIConfigError(f"grid key {dotted!r}: {part!r} is not a mapping")
    target[last] = value


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``: mappings merge key by key, anything else (lists too) replaces; a
    component with another ``path`` replaces the preset's whole (its kwargs are not merged in)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        other_component = isinstance(value, Mapping) and "path" in value and isinstance(merged.get(key), Mapping) and merged[key].get("path") != value["path"]
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and not other_component:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def method_fn_of(name: str, entry: Mapping[str, Any], default: str) -> str:
    """The ``method_fn`` that runs method ``name``: its own, else its preset's (``cma_es`` runs
    ``mei_core.cmaes.cma_es``), else ``default``."""
    if "method_fn" in entry or "preset" not in entry:
        return entry.get("method_fn", default)
    from ..presets import preset_method_fn

    return preset_method_fn(entry["preset"], f"methods.{name}.preset") or default


def method_config(name: str, entry: Mapping[str, Any], ensemble: Mapping[str, Any], ensemble_name: str) -> dict[str, Any]:
    """The config that runs for method ``name`` on one ensemble: the preset (given the ensemble's
    ``input_shape`` and ``input_stats`` when it takes them) with ``config`` deep-merged over it."""
    overrides = entry.get("config") or {}
    if "preset" not in entry:
        if entry.get("params"):
            raise MEIConfigError(f"methods.{name}.params: preset parameters need a 'preset'")
        return copy.deepcopy(dict(overrides))
    from ..presets import PRESETS, preset

    preset_name = entry["preset"]
    if preset_name not in PRESETS:
        raise MEIConfigError(f"methods.{name}.preset: unknown preset {preset_name!r}; known presets: {', '.join(PRESETS.names())}")
    params = dict(entry.get("params") or {})
    accepted = inspect.signature(PRESETS.get(preset_name, f"methods.{name}.preset")).parameters
    for derived in ("input_shape", "input_stats"):
        if derived in params:
            raise MEIConfigError(f"methods.{name}.params.{derived}: comes from ensembles.{ensemble_name}.{derived}, not from the method")
        if derived in accepted:
            # a preset that can do without (a default) gets it when the ensemble states it
            if derived not in ensemble and accepted[derived].default is not inspect.Parameter.empty:
                continue
            if derived not in ensemble:
                raise MEIConfigError(f"ensembles.{ensemble_name}.{derived}: required by preset {preset_name!r} of methods.{name} "
                                     f"(the per-channel mean and std of the stimuli the models were trained on)")
            params[derived] = ensemble[derived]
    try:
        base = preset(preset_name, **params)
    except MEIConfigError as error:
        raise MEIConfigError(f"methods.{name} on ensemble {ensemble_name!r}: {error}") from None
    return deep_merge(base, overrides)
