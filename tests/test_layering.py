"""The layering rule of docs/architecture.md, as a test.

Layers, lowest first: scaling (core) < analysis < sweeps < scaling_cli. A module may import its
own package and lower layers only, at module level or inside a function. The imports between
the project's modules must form no cycle, whether the import runs at module level or inside a
function: a cycle makes the import order matter, and moving one import into a function only hides
it. The imports are read from the source (AST), so nothing is executed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("scaling", "analysis", "sweeps", "scaling_cli")
LAYER_OF = {package: rank for rank, package in enumerate(LAYERS)}


@dataclass(frozen=True)
class ImportEdge:
    importer: str  # dotted module name
    imported: str  # dotted module name, resolved to a module file of the project
    path: Path
    line: int
    module_level: bool  # runs when the importer is imported (not inside a function)

    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}: {self.importer} -> {self.imported}"


def project_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the four packages."""
    modules = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a project module, or None for third-party names."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.Module):
    """(node, module_level) for every import statement; `if TYPE_CHECKING:` blocks and
    function bodies do not run at import time."""
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]
    while stack:
        node, module_level = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, module_level
        inner = module_level and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        ) and not _is_type_checking_block(node)
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def import_edges(modules: dict[str, Path]) -> list[ImportEdge]:
    edges = []
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, module_level in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the importer's package, `level` steps up
                    package = importer.split(".")
                    if not is_package:
                        package = package[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join(package + ([base] if base else []))
                # `from pkg import name` imports the submodule pkg.name when there is one
                targets = []
                for alias in node.names:
                    full = f"{base}.{alias.name}" if base else alias.name
                    targets.append(full if full in modules else base)
            for target in dict.fromkeys(targets):
                imported = _resolve(target, modules)
                if imported is not None and imported != importer:
                    edges.append(ImportEdge(importer, imported, path, node.lineno, module_level))
    return list(dict.fromkeys(edges))


def upward_imports(edges: list[ImportEdge]) -> list[ImportEdge]:
    def layer(module: str) -> int:
        return LAYER_OF[module.split(".")[0]]

    return [e for e in edges if layer(e.imported) > layer(e.importer)]


def import_cycles(edges: list[ImportEdge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


# --- the rule on the project -------------------------------------------------------------------


def test_no_module_imports_a_higher_layer():
    edges = import_edges(project_modules())
    bad = upward_imports(edges)
    if bad:
        pytest.fail(
            f"{len(bad)} upward import(s); layers are {' < '.join(LAYERS)} "
            "(a package imports only itself and lower layers):\n"
            + "\n".join(e.where() for e in bad),
            pytrace=False,
        )


def test_imports_form_no_cycle():
    # Function-level imports count too: moving an import into a function hides a cycle from
    # the interpreter, not from the reader.
    edges = import_edges(project_modules())
    cycles = import_cycles(edges)
    report = []
    for component in cycles:
        members = set(component)
        report.append("cycle among " + ", ".join(component) + ":")
        report += [
            f"  {e.where()}  ({'module level' if e.module_level else 'in a function'})"
            for e in edges
            if e.importer in members and e.imported in members
        ]
    if cycles:
        pytest.fail("import cycle(s):\n" + "\n".join(report), pytrace=False)


# --- the checker on known graphs, so a silent checker cannot pass the two tests above ---------


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        parts = list(Path(relative).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _edges(tmp_path, files):
    return import_edges(_fake_tree(tmp_path, files))


def test_checker_finds_upward_imports_in_every_form(tmp_path):
    edges = _edges(tmp_path, {
        "scaling/__init__.py": "",
        "scaling/core.py": "import numpy\nfrom scaling import other\n",
        "scaling/other.py": "def f():\n    from analysis.fits import x\n",
        "scaling/third.py": "import sweeps.grid as g\nfrom scaling_cli import main\n",
        "analysis/__init__.py": "",
        "analysis/fits.py": "from .. import scaling\nfrom . import load\nx = 1\n",
        "analysis/load.py": "from ..sweeps.grid import y\n",
        "sweeps/__init__.py": "",
        "sweeps/grid.py": "from scaling.core import z\ny = 1\n",
        "scaling_cli/__init__.py": "",
        "scaling_cli/main.py": "import analysis.fits, sweeps.grid\n",
    })
    found = {(e.importer, e.imported, e.line, e.module_level) for e in upward_imports(edges)}
    assert found == {
        ("scaling.other", "analysis.fits", 2, False),
        ("scaling.third", "sweeps.grid", 1, True),
        ("scaling.third", "scaling_cli.main", 2, True),
        ("analysis.load", "sweeps.grid", 1, True),
    }
    # relative imports resolve to the right modules; third-party names are dropped
    assert {(e.importer, e.imported) for e in edges if e.importer == "analysis.fits"} == {
        ("analysis.fits", "scaling"), ("analysis.fits", "analysis.load"),
    }
    assert not any(e.imported == "numpy" for e in edges)


def test_checker_finds_module_level_cycles_only(tmp_path):
    edges = _edges(tmp_path, {
        "scaling/__init__.py": "",
        "scaling/a.py": "from scaling import b\n",
        "scaling/b.py": "from scaling.c import f\n",
        "scaling/c.py": "import scaling.a\ndef f(): pass\n",
        "scaling/d.py": "from scaling import e\n",
        "scaling/e.py": "def g():\n    from scaling import d\n",
        "scaling/t.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import scaling.u\n",
        "scaling/u.py": "import scaling.t\n",
    })
    module_level = [e for e in edges if e.module_level]
    assert import_cycles(module_level) == [["scaling.a", "scaling.b", "scaling.c"]]
    assert import_cycles(edges) == [
        ["scaling.a", "scaling.b", "scaling.c"], ["scaling.d", "scaling.e"],
        ["scaling.t", "scaling.u"],
    ]
