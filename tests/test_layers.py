"""The layering of docs/architecture.md stays true: no module imports a layer above its own,
and no modules import each other in a circle. Imports inside functions count too."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "src" / "stillmotion"

# bottom to top, as docs/architecture.md draws them; the longest matching prefix decides
LAYERS = {
    "stillmotion.errors": 0, "stillmotion.util": 0, "stillmotion.version": 0, "stillmotion.spec": 0,
    "stillmotion.netguard": 0, "stillmotion.metrics": 0,
    "stillmotion.models": 1,
    "stillmotion.images": 2, "stillmotion.sources": 2, "stillmotion.remote": 2, "stillmotion.video": 2,
    "stillmotion.comfy": 2,
    "stillmotion.engine": 3,
    "stillmotion.train": 4,
    "stillmotion.jobs": 5, "stillmotion.batch": 5,
    "stillmotion.server": 6,
    "stillmotion.ray": 7,
    "stillmotion.cli": 8, "stillmotion.client": 8, "stillmotion": 8,
}


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its file)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
              for m, deps in sorted(import_graph().items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_checker_sees_imports():
    graph = import_graph()
    assert "stillmotion.engine.core" in graph["stillmotion.cli.generate"] or "stillmotion.engine" in graph["stillmotion.cli.generate"]
    assert layer_of("stillmotion.engine.core") == 3 and layer_of("stillmotion.cli.generate") == 8
