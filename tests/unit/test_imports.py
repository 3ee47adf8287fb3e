"""The layering of src/distil: no import cycle (function-level imports included), methods below the loop."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "distil"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(path: Path, name: str) -> set[str]:
    """distil modules imported anywhere in a file (module or function level), except for type checking."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*kept, base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in MODULES}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph() -> dict[str, set[str]]:
    """Runtime import edges; importing ``a.b.c`` also runs the ``__init__`` of every package above it
    that is not already being imported around the importer."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges: set[str] = set()
        mine = set(_ancestors(name)) | {name}
        for target in _imported(path, name) - mine:  # an enclosing package is already being imported
            edges.add(target)
            edges.update(a for a in _ancestors(target) if a not in mine)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
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
            strongconnect(v)
    return out


def test_the_import_graph_is_read():
    graph = _graph()
    assert "distil.training.loop" in graph["distil.plans.runner"]
    assert "distil.methods" in graph["distil.training.setup"]  # via `from distil.methods import ...`
    assert "distil.plans" in graph["distil.config"]


def test_no_import_cycle_in_the_package():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


ALLOWED_FOR_METHODS = (
    "distil.types",
    "distil.losses",
    "distil.adapters",
    "distil.pruning",
    "distil.models",
    "distil.errors",
)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("distil.methods")))
def test_methods_import_only_the_layers_below_them(name):
    imported = _imported(MODULES[name], name)
    outside = {m for m in imported if not m.startswith((*ALLOWED_FOR_METHODS, "distil.methods"))}
    assert not outside, f"{name} imports {sorted(outside)}; methods may import only {ALLOWED_FOR_METHODS}"


# The layers of src/distil, lowest first. A package (or top-level module) may import only from layers
# below its own: never upward, never sideways into another package of its layer. A new package must be
# placed here.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("files", "schema", "types", "metrics", "progress"),
    ("models", "losses"),
    ("adapters", "pruning", "run_config", "data"),
    ("methods", "evaluation"),
    ("card", "reporting"),
    ("deploy", "tasks"),
    ("training",),
    ("plans", "bench"),
    ("config",),
    ("compare",),
    ("cli", "distil"),  # ``distil``: the package's own __init__, the public API
    ("__main__",),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_package_has_a_layer():
    assert {_top(m) for m in MODULES} <= set(LAYER), "place the new package in LAYERS"


def _wrong_edges(graph: dict[str, set[str]]) -> list[str]:
    """Edges into the importer's own layer (another package) or a layer above it."""
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if _top(a) != _top(b) and b != "distil" and LAYER[_top(b)] >= LAYER[_top(a)]
    )


def test_no_import_runs_up_or_sideways_between_layers():
    assert _wrong_edges(_graph()) == []


def test_the_layer_rule_finds_upward_and_sideways_edges():
    graph = {
        "distil.tasks.glue": {"distil.training.loop", "distil.data.readers", "distil.deploy.onnx"},
        "distil.training.loop": {"distil.tasks.glue"},
    }
    assert _wrong_edges(graph) == [
        "distil.tasks.glue -> distil.deploy.onnx",
        "distil.tasks.glue -> distil.training.loop",
    ]
