"""The import graph of the project's own modules, read with ``ast`` (every import
statement, at the top of a module or inside a function): layers point one way,
CLI -> train -> realtime -> engines, and no module imports itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engines", "realtime", "train")
#: lowest first: a module may import its own layer and the layers below it
LAYERS = ("engines", "realtime", "train", "cli")


def layer(module: str) -> int:
    if module == "realtime.cli" or module.startswith("realtime.cli."):
        return LAYERS.index("cli")
    return LAYERS.index(module.split(".")[0])


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` imports (``from a import b`` counts ``a.b``
    when that is a module, else ``a``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        out.update(name for name in names if name in known)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    edges = graph()
    assert "realtime.cli" in edges and "engines.files" in edges and "train.trainer" in edges
    assert "realtime.loop" in edges["realtime.pipeline"]  # imports are found


def test_no_import_circle():
    assert cycles(graph()) == []


def test_layers_point_one_way():
    edges = graph()
    against = sorted(f"{a} ({LAYERS[layer(a)]}) imports {b} ({LAYERS[layer(b)]})"
                     for a, targets in edges.items() for b in targets if layer(b) > layer(a))
    assert against == []


def test_the_checks_catch_a_circle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("realtime.cli.options") > layer("train.trainer") > layer("realtime.sinks") > layer("engines.files")


def test_the_file_readers_cannot_reach_torch():
    """engines.files, meta, sidecar and registry import neither torch nor a module that
    does (engines.model, engines.export), not even inside a function."""
    known = modules()
    for name in ("engines.files", "engines.meta", "engines.sidecar", "engines.registry"):
        tree = ast.parse(known[name].read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"torch", "engines.model", "engines.export"}, name
