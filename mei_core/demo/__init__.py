"""The embedded ground-truth demos: one module per demo kind (``v1``, ``retina``, ``connectome``).

A demo kind (a :class:`DemoKind` subclass in its own module of this package; defining it registers it
in :data:`DEMO_KINDS`) holds everything about it: its settings and their
defaults, the files it makes (``outputs``), the functions its rules call to make them, and, when its
ensemble has ground truth, how MEIs are validated against it. The kind's name is also the spelling of
``ensembles.<name>.ground_truth.kind`` for its ground truth.

The kind modules import torch, numpy and pandas only in the functions that use them: the Snakefile
(and every job's parse of it) reads the kinds' settings and file names without them.
"""

from __future__ import annotations

import pkgutil
from abc import ABC
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import MEIConfigError
from ..registry import Registry

if TYPE_CHECKING:
    import pandas as pd

#: modules of this package that define no kind: the benchmark populations import torch at the top
_NOT_KINDS = ("populations",)
#: every demo kind by its config spelling (``demo.<name>.kind``); the modules of this package are
#: imported on first lookup, so adding a kind is adding one module
DEMO_KINDS: Registry[type[DemoKind]] = Registry(
    "demo kind",
    modules=tuple(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_KINDS),
    hints={"demo_v1": "the V1 ground truth is now spelt 'v1'"},
)


class DemoKind(ABC):
    name: ClassVar[str]
    #: settings and their defaults (every key a demo config may set)
    defaults: ClassVar[dict[str, Any]] = {}
    #: file names the demo writes into its folder, by role
    files: ClassVar[dict[str, str]] = {}

    #: the kind's files are made in one step, ``make(spec_path, *paths)`` with the paths in ``files``
    #: order: the workflow's generic rule ``demo_<name>`` runs it (``python -m mei_core demo-make``),
    #: so such a kind is one module. A kind of several steps (``v1``: a dataset, then members per
    #: seed) sets it false and has rules of its own.
    one_step: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a kind sets its own name (a shared base would not)
            DEMO_KINDS.add(cls.name, cls)

    @classmethod
    def has_ground_truth(cls) -> bool:
        """Whether MEIs can be validated against this kind's files (it overrides :meth:`validate`)."""
        return cls.validate is not DemoKind.validate

    def settings(self, spec: Mapping[str, Any], key: str = "demo") -> dict[str, Any]:
        unknown = sorted(set(spec) - set(self.defaults) - {"name", "kind"})
        if unknown:
            raise MEIConfigError(f"{key}.{unknown[0]}: not a setting of demo kind {self.name!r} (settings: {', '.join(sorted(self.defaults))})")
        return {**self.defaults, **{k: v for k, v in spec.items() if k not in ("name", "kind")}}

    def make(self, spec_path: str, *paths: str) -> None:
        """Make the kind's files (a one-step kind): ``paths`` in the order of :attr:`files`."""
        raise NotImplementedError(f"demo kind {self.name!r} has no one-step make")

    def outputs(self, folder: str, spec: Mapping[str, Any]) -> set[str]:
        """Every file the demo's rules write into ``folder``."""
        return {f"{folder}/{name}" for name in self.files.values()}

    def validate(self, truth_file: str, meis: Any, table: pd.DataFrame, objective_options: Any) -> pd.DataFrame:
        """Ground-truth columns for the per-MEI validation table (kinds with ground truth only)."""
        raise MEIConfigError(f"demo kind {self.name!r} has no ground truth to validate against")


def demo_kind(name: str, key: str = "kind") -> DemoKind:
    """The kind ``name``; an unknown name is an error naming ``key``."""
    return DEMO_KINDS.instance(name, key)
