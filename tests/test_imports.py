"""The package's shape: no import circle among its modules, and no module takes a `_private` name
from another. Imports inside functions count too: a lazy import still ties two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

import autoresearch

PACKAGE = Path(autoresearch.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "templates" not in p.parts}


def imports_of(path: Path, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(module imported, name taken from it or "", line) for each import of the package's modules."""
    own = module_name(path)
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "autoresearch"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = own.split(".") if is_package else own.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "autoresearch":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:  # `from autoresearch import atomic`: the module itself
                    out.append((full, "", node.lineno))
                else:
                    out.append((base, alias.name, node.lineno))
    return [(m, name, line) for m, name, line in out if m in known and m != own]


def test_no_module_imports_a_private_name_from_another():
    known = modules()
    found = [f"{name} line {line}: from {m} import {taken}"
             for name, path in known.items() for m, taken, line in imports_of(path, known)
             if taken.startswith("_") and not taken.startswith("__")]
    assert found == []


def test_no_import_circle_among_the_package_modules():
    known = modules()
    graph = {name: sorted({m for m, _, _ in imports_of(path, known) if m != "autoresearch"})
             for name, path in known.items()}
    cycles = strongly_connected(graph)
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checks_see_a_circle_and_a_private_import(tmp_path):
    """The walk is not blind: a made-up pair of modules that import each other is a circle."""
    assert strongly_connected({"a": ["b"], "b": ["a"], "c": ["a"]}) == [["a", "b"]]
    assert strongly_connected({"a": ["b"], "b": []}) == []
