"""The library/pipeline border: the library never imports the rule side, no module imports itself
back through others, and the library imports without Snakemake, zarr, xarray or pyarrow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from workflow_support import REPO

PACKAGE = REPO / "mei_core"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every mei_core module that ``path`` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mei_core")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("mei_core"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if module_path(candidate) else base)
    return {m for m in found if m != name and module_path(m)}


def module_path(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def is_pipeline(name: str) -> bool:
    return name == "mei_core.pipeline" or name.startswith("mei_core.pipeline.") or name == "mei_core.__main__"


def test_no_library_module_imports_the_pipeline():
    crossings = {(m, i) for m, targets in import_graph().items() if not is_pipeline(m) for i in targets if is_pipeline(i)}
    assert crossings == set()


def test_the_imports_have_no_cycle_between_modules():
    graph = import_graph()
    # a module may import its own package's __init__ (registries are declared there): Python has
    # initialised the package before any of its modules, so that is no cycle
    edges = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_graph_walk_sees_the_commands_that_the_entry_point_imports():
    graph = import_graph()
    assert "mei_core.pipeline.commands" in graph["mei_core.__main__"]
    assert "mei_core.pipeline.worker" in graph["mei_core.pipeline.commands"]  # and not back: it is handed run_command
    assert "mei_core.pipeline.generate" in graph["mei_core.pipeline.commands"]


def test_the_library_imports_without_snakemake_zarr_xarray_or_pyarrow():
    library = sorted(m for m in import_graph() if not is_pipeline(m))
    blocked = ("snakemake", "zarr", "xarray", "pyarrow")
    # an import hook refuses the pipeline's dependencies: the library must not need them
    code = (
        "import sys, importlib\n"
        f"blocked = {blocked!r}\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked: raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        f"for name in {library!r}:\n"
        "    importlib.import_module(name)\n"
        "print(len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(library) > 40  # the walk found the library, not an empty list
