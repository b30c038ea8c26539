"""The package's import graph: one way, top to bottom, with no cycles, not even inside functions.

The graph is read from the source with :mod:`ast`, so imports inside functions and ``TYPE_CHECKING``
blocks count like top-level ones.  An edge ``a → b`` means module ``a`` imports module ``b``:
``from .x import y`` points at ``x``, or at ``x.y`` when ``y`` is itself a module.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nlg"

#: Layers, lowest first.  A module may import its own layer (acyclically) and the layers below it.
LAYERS = {
    "nlg.utils": 0,  # shared types and atomic writes: no model code
    "nlg.core": 0,
    "nlg.adapters": 1,
    "nlg.guidance": 2,
    "nlg.img2img": 2,
    "nlg.autoguidance": 2,
    "nlg": 2,  # the package root re-exports core, adapters and the methods
    "nlg.training": 3,  # training-time noise and samplers: beside the evaluation, above the methods
    "nlg.eval": 3,
    "nlg.digits": 4,
    "nlg.shapes": 4,
    "nlg.testing": 4,  # tiny seeded models for tests and benchmarks: builds on eval's scheduler table and the shapes tokenizer
    "nlg.finetune": 4,  # LoRA fine-tuning: the training tools applied to diffusers pipelines (and to shapes)
    "nlg.app": 5,
    "nlg.demo": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> Dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """Every module of ``modules`` that ``name`` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # `import nlg.core.refine` style: the longest known prefix
            if target in modules and target != name:
                found.add(target)
    return found


def layer_key(name: str) -> str:
    """The most specific entry of :data:`LAYERS` that ``name`` falls under ('' if none)."""
    return max((key for key in LAYERS if name == key or name.startswith(key + ".")), key=len, default="")


def layer_of(name: str) -> int:
    return LAYERS[layer_key(name)]


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    components: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_cycle_finder_finds_a_planted_cycle():
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(planted) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(graph):
    # nlg.app.cli imports its backends inside main(); the graph must still hold that edge.
    assert "nlg.app.backends" in graph["nlg.app.cli"]
    assert "nlg.core.refine" in graph["nlg.guidance"]


def test_no_import_cycles(graph):
    assert find_cycles(graph) == []


def test_imports_run_one_way(graph):
    upward = sorted(
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in graph.items()
        for b in targets
        if layer_of(b) > layer_of(a)
    )
    assert upward == []


def test_core_has_no_model_code():
    banned = ("diffusers", "transformers", "torchmetrics", "nlg.adapters", "nlg.digits", "nlg.shapes")
    offenders = []
    for path in (PACKAGE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned or n.startswith(banned)]
    assert offenders == []


def _imports_tests(node: ast.AST) -> bool:
    return (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests") or (
        isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tests" for a in node.names)
    )


def test_the_package_never_imports_test_helpers():
    offenders = [
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if _imports_tests(node)
    ]
    assert offenders == []


def test_benchmarks_are_a_package_that_neither_patches_sys_path_nor_imports_tests():
    """``python -m benchmarks.<name>``: the folder is a package, so no script needs ``sys.path`` edits."""
    bench = ROOT / "benchmarks"
    assert (bench / "__init__.py").is_file()
    offenders = []
    for path in sorted(bench.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            touches_path = isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys"
            if touches_path or _imports_tests(node):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_every_module_has_a_layer(graph):
    assert sorted(name for name in graph if not layer_key(name)) == []
