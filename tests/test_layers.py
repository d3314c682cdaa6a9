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
    "stillmotion.engine": 3, "stillmotion.families": 3,
    "stillmotion.train": 4,
    "stillmotion.jobs": 5, "stillmotion.batch": 5,
    "stillmotion.server": 6,
    "stillmotion.ray": 7,
    "stillmotion.cli": 8, "stillmotion.client": 8, "stillmotion": 8,
}


# inside a package, its modules' order bottom to top, as docs/architecture.md draws it: a module imports only
# modules of its own sub-layer or an earlier one; every module of the package has a place here
SUB_LAYERS = {
    "stillmotion.models": (
        ("registry",), ("paths", "folder_info"), ("hashes",), ("local", "lora", "small_svd", "tiny_wan", "tiny_ltx",
         "tiny_framepack"), ("hub", "tiny"),
        ("safetensors_stream", "sgm_configs"), ("sgm_keys",), ("single_file",), ("comfy_files",), ("wan_inspect", "ltx_inspect"), ("wan_files", "ltx_files"), ("resolve",), ("verify",),
    ),
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


def sub_layer(module: str):
    """(package, index of the module's sub-layer) inside a package of SUB_LAYERS; None for other modules."""
    package, _, name = module.rpartition(".")
    order = SUB_LAYERS.get(package)
    if order is None:
        return None
    return package, next((i for i, group in enumerate(order) if name in group), None)


def test_inside_a_package_no_module_imports_a_later_sub_layer():
    graph = import_graph()
    placed = {m: sub_layer(m) for m in graph if sub_layer(m) is not None}
    unplaced = sorted(m for m, (_, i) in placed.items() if i is None)
    assert not unplaced, f"give these a place in SUB_LAYERS and in docs/architecture.md: {unplaced}"
    later = [f"{m} (sub-layer {placed[m][1]}) imports {d} (sub-layer {placed[d][1]})"
             for m in sorted(placed) for d in sorted(graph[m])
             if d in placed and placed[d][0] == placed[m][0] and placed[d][1] > placed[m][1]]
    assert not later, "\n".join(later)


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
    assert "stillmotion.models.single_file" in graph["stillmotion.models.resolve"]
    assert sub_layer("stillmotion.models.registry") < sub_layer("stillmotion.models.resolve")
    assert "stillmotion.engine.core" in graph["stillmotion.cli.generate"] or "stillmotion.engine" in graph["stillmotion.cli.generate"]
    assert layer_of("stillmotion.engine.core") == 3 and layer_of("stillmotion.cli.generate") == 8
