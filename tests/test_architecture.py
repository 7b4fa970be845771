"""The house rules of the source tree (ARCHITECTURE.md), checked on the files themselves:

* no import cycle inside ``onnxdual`` -- counting imports inside functions too, so a lazy import cannot hide one;
* no module imports a private name (``_x``, or a name from a private module) of another module;
* ONNX (``onnx``, ``onnx2torch``, ``onnxruntime``) is read and run only in ``onnxdual/frontend/``: every other
  room sees torch modules, graphs and the frontend's functions;
* no source file over 500 lines;
* the engine prints nothing and parses no command lines (``cli/`` does).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"onnxdual": ROOT / "onnxdual", "onnxdual_cli": ROOT / "cli"}
PLUGINS = sorted(p for p in (ROOT / "plugins").glob("*/*") if p.is_dir() and (p / "__init__.py").exists())
ONNX_PACKAGES = ("onnx", "onnx2torch", "onnxruntime")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    roots = dict(PACKAGES, **{p.name: p for p in PLUGINS})
    for package, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import statement in the file."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    base = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            found += [(target, a.name, node.lineno) for a in node.names]
    return found


def _edges(module: str) -> set[str]:
    """The ``onnxdual`` modules ``module`` imports explicitly (``from pkg import sub`` names the submodule)."""
    out = set()
    for target, name, _ in _imports(module):
        if name is not None and f"{target}.{name}" in MODULES:
            out.add(f"{target}.{name}")
        elif target in MODULES:
            out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
            if len(component) > 1 or v in graph[v]:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_the_checks_see_the_tree():
    assert "onnxdual.engine.autodual" in MODULES and "onnxdual_cli.main" in MODULES
    assert any(m.startswith("onnxdual_maxpool") for m in MODULES)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_onnxdual():
    graph = {m: {t for t in _edges(m) if t.startswith("onnxdual.") or t == "onnxdual"}
             for m in MODULES if m.split(".")[0] == "onnxdual"}
    assert _cycles(graph) == []


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_of_another_module_is_imported(module):
    bad = []
    for target, name, line in _imports(module):
        ours = target.split(".")[0] in {"onnxdual", "onnxdual_cli"} or target in MODULES
        if not ours:
            continue
        if any(_private(part) for part in target.split(".")) or (name is not None and _private(name)):
            bad.append(f"line {line}: from {target} import {name}")
    assert not bad, f"{MODULES[module]} imports private names: {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("onnxdual.frontend")))
def test_onnx_is_read_only_in_the_frontend(module):
    bad = [f"line {line}: {target}" for target, _, line in _imports(module)
           if target.split(".")[0] in ONNX_PACKAGES]
    assert not bad, f"{MODULES[module]} imports ONNX packages outside onnxdual/frontend/: {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_source_file_over_500_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines (split it by concern)"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "onnxdual"))
def test_the_engine_neither_prints_nor_parses_arguments(module):
    tree = ast.parse(MODULES[module].read_text())
    prints = [n.lineno for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    parsers = [line for target, _, line in _imports(module) if target.split(".")[0] in ("click", "argparse")]
    assert not prints and not parsers, f"{MODULES[module]}: print at {prints}, argument parsing at {parsers}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_owns(module):
    tree = ast.parse(MODULES[module].read_text())
    if not tree.body:  # an empty package marker
        return
    assert ast.get_docstring(tree), f"{MODULES[module]} has no module docstring"
