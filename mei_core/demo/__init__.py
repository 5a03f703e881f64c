"""The embedded ground-truth demos: one module per demo kind (``v1``, ``retina``, ``connectome``).

A demo kind (a :class:`DemoKind` in its module) holds everything about it: its settings and their
defaults, the files it makes (``outputs``), the functions its rules call to make them, and, when its
ensemble has ground truth, how MEIs are validated against it. The kind's name is also the spelling of
``ensembles.<name>.ground_truth.kind`` for its ground truth.

The kind modules import torch, numpy and pandas only in the functions that use them: the Snakefile
(and every job's parse of it) reads the kinds' settings and file names without them.
"""

from __future__ import annotations

import importlib
from abc import ABC
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import MEIConfigError

if TYPE_CHECKING:
    import pandas as pd

MODULES = ("v1", "retina", "vr", "connectome")


class DemoKind(ABC):
    name: ClassVar[str]
    #: settings and their defaults (every key a demo config may set)
    defaults: ClassVar[dict[str, Any]] = {}
    #: file names the demo writes into its folder, by role
    files: ClassVar[dict[str, str]] = {}

    def settings(self, spec: Mapping[str, Any], key: str = "demo") -> dict[str, Any]:
        unknown = sorted(set(spec) - set(self.defaults) - {"name", "kind"})
        if unknown:
            raise MEIConfigError(f"{key}.{unknown[0]}: not a setting of demo kind {self.name!r} (settings: {', '.join(sorted(self.defaults))})")
        return {**self.defaults, **{k: v for k, v in spec.items() if k not in ("name", "kind")}}

    def outputs(self, folder: str, spec: Mapping[str, Any]) -> set[str]:
        """Every file the demo's rules write into ``folder``."""
        return {f"{folder}/{name}" for name in self.files.values()}

    def validate(self, truth_file: str, meis: Any, table: pd.DataFrame, objective_options: Any) -> pd.DataFrame:
        """Ground-truth columns for the per-MEI validation table (kinds with ground truth only)."""
        raise MEIConfigError(f"demo kind {self.name!r} has no ground truth to validate against")


def demo_kind(name: str, key: str = "kind") -> DemoKind:
    if name not in MODULES:
        hint = " (the V1 ground truth is now spelt 'v1')" if name == "demo_v1" else ""
        raise MEIConfigError(f"{key}: unknown demo kind {name!r}{hint}; known: {', '.join(MODULES)}")
    return importlib.import_module(f"{__name__}.{name}").KIND
