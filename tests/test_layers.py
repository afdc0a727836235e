"""The package's import graph (module-level and function-level imports, read with ``ast``) has no cycle, and no
module imports one of a higher layer (docs/architecture.md)."""

from pathlib import Path

import pytest

from primkd.stages.closure import parse_module

SRC = Path(__file__).resolve().parents[1] / "src"

# Module prefix -> layer; the longest matching prefix decides. Same-layer imports are allowed.
LAYERS = {
    "primkd": 0, "primkd.io": 0, "primkd.config": 0, "primkd.resources": 0, "primkd.runlog": 0,
    "primkd.pretrained": 0,
    "primkd.data": 1, "primkd.models": 1,
    "primkd.distill": 2,
    "primkd.engine": 3, "primkd.weights": 3,
    "primkd.analysis": 4, "primkd.report": 4, "primkd.infer": 4, "primkd.viz": 4,
    "primkd.cli": 5, "primkd.stages": 5, "primkd.__main__": 5,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise KeyError(f"{module} has no layer in tests/test_layers.py LAYERS; add it (and to docs/architecture.md)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere in its body, as the code-dependency finder reads them
    (:func:`primkd.stages.closure.parse_module`)."""
    name = module_name(path)
    found = parse_module(path, name, lambda m: m in modules).imported_modules(lambda m: m in modules)
    return {m for m in found if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = sorted((SRC / "primkd").rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def test_every_module_has_a_layer(graph):
    for module in graph:
        layer(module)


def test_no_module_imports_a_higher_layer(graph):
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in graph.items() for d in sorted(deps) if layer(d) > layer(m)]
    assert upward == []


def test_no_import_cycle(graph):
    # A package's __init__ importing its own submodules is the usual re-export, not a cycle.
    edges = {m: {d for d in deps if not (m and d.startswith(m + "."))} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_function_level_imports(tmp_path):
    # The rule is about every import, also the lazy ones inside functions that keep torch out of `primkd --help`.
    source = tmp_path / "primkd" / "data" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from primkd.engine import train\n    from ..models import mit\n")
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        found = imports(source, {"primkd.engine", "primkd.engine.train", "primkd.models", "primkd.models.mit"})
    finally:
        SRC = saved
    assert found == {"primkd.engine.train", "primkd.models.mit"}
    assert layer("primkd.engine.train") > layer("primkd.data.x")
