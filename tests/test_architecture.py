"""The package's layering, read from its source with ``ast`` (no import is executed).

Layers, lowest first: ``core`` < ``report`` < ``data`` < ``models`` < ``zoo`` <
``training``, ``attacks`` < ``evaluation`` < ``analysis`` < ``cli``. A module may import its
own layer's package and any lower layer, never a higher one nor a sibling of equal rank; the
import graph between modules (function-level imports included) has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "robust_vae"

LAYERS: dict[str, int] = {
    "core": 0, "report": 1, "data": 2, "models": 3, "zoo": 4, "training": 5, "attacks": 5,
    "evaluation": 6, "analysis": 7, "cli": 8,
}
TOP = 9  # robust_vae/__init__.py and __main__.py: the public API over everything


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (absolute and relative, at any depth)."""
    modules = {module_name(root, p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in found:
                if target in modules and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in {"__main__"}:
        return "api", TOP
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add its folder to LAYERS (and the README's tree)")
    return parts[1], LAYERS[parts[1]]


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        layer, rank = layer_of(module)
        for target in sorted(targets):
            target_layer, target_rank = layer_of(target)
            if target_layer == layer:
                continue
            if target_rank > rank:
                problems.append(f"upward import: {module} ({layer}) imports {target} ({target_layer})")
            elif target_rank == rank:
                problems.append(f"sibling import: {module} ({layer}) imports {target} ({target_layer})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (each reported once, rotated)."""
    found: set[tuple[str, ...]] = set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                loop = stack[stack.index(target):]
                start = loop.index(min(loop))
                found.add(tuple(loop[start:] + loop[:start]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return [list(c) for c in sorted(found)]


def test_no_import_cycles() -> None:
    loops = cycles(import_graph(PACKAGE_ROOT))
    assert not loops, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in loops)


def test_imports_only_point_down() -> None:
    problems = layering_violations(import_graph(PACKAGE_ROOT))
    assert not problems, "\n".join(problems)


def test_every_folder_is_a_layer() -> None:
    folders = {p.name for p in PACKAGE_ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS), f"folders {sorted(folders ^ set(LAYERS))} differ from LAYERS"


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def broken_package(tmp_path: Path) -> Path:
    """A package with a cycle inside ``data`` (also through a function-level import), a
    relative import, and an upward import from ``models`` into ``cli``."""
    return _write(tmp_path / "robust_vae", {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/a.py": "from robust_vae.data import b\n",
        "data/b.py": "def f():\n    from . import a\n",
        "models/__init__.py": "",
        "models/m.py": "import robust_vae.cli.main\n",
        "cli/__init__.py": "",
        "cli/main.py": "from robust_vae.models import m\n",
    })


def test_checker_reports_cycles_and_upward_imports(broken_package: Path) -> None:
    graph = import_graph(broken_package)
    loops = cycles(graph)
    assert ["robust_vae.data.a", "robust_vae.data.b"] in loops
    assert ["robust_vae.cli.main", "robust_vae.models.m"] in loops
    problems = layering_violations(graph)
    assert problems == ["upward import: robust_vae.models.m (models) imports robust_vae.cli.main (cli)"]
