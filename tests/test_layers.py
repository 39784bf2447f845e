"""Each layer in its room: no module under src/sigma_vla imports from a layer it may not use, and no modules import
each other in a circle.

The table is the one in docs/architecture.md ("Layers"); a test here checks that the two agree. Imports are read
with `ast` (every `import` and `from ... import`, also inside functions), so a lazy import counts too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sigma_vla"

CORE = {"errors", "layout", "outdir", "progress"}
BELOW_MODELS = CORE | {"data", "interop", "processing"}
BELOW_BASES = BELOW_MODELS | {"models", "runs"}
# layer -> the sigma_vla layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "layout": set(),
    "outdir": {"errors", "layout"},
    "progress": set(),
    "interop": CORE,
    "data": CORE,
    "processing": CORE | {"data", "interop"},
    "sim": CORE | {"data"},
    "models": BELOW_MODELS,
    "runs": CORE | {"data", "interop"},
    "bases": BELOW_BASES,
    "training": BELOW_BASES | {"bases"},
    "inference": BELOW_BASES | {"bases"},
    "evaluation": BELOW_BASES | {"bases", "inference", "sim"},
    "serving": {"errors"},
}
ALLOWED["cli"] = set(ALLOWED)  # the top: parses options and calls every layer
# Third-party packages only some layers may import.
ONLY_IN = {"typer": {"cli"}}
NEVER_IN = {"serving": {"torch"}}
CLIENT = ROOT / "client" / "src" / "sigma_vla_client"  # the robot-side distribution


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a module; relative imports resolved against the package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = path.relative_to(root).with_suffix("").parts[: -node.level]
                found.append((node.lineno, ".".join([*base, node.module or ""]).rstrip(".")))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_known_layer():
    unknown = sorted({_layer(p) for p in _modules()} - set(ALLOWED) - {"__init__"})
    assert not unknown, f"add these layers to ALLOWED and docs/architecture.md: {unknown}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_it(path: Path):
    layer = _layer(path)
    if layer == "__init__":
        return
    bad = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top == "sigma_vla" and "." in module:
            target = module.split(".")[1]
            if target != layer and target not in ALLOWED[layer]:
                bad.append(f"line {line}: {module} ({layer} may import {sorted(ALLOWED[layer])})")
        elif top in ONLY_IN and layer not in ONLY_IN[top]:
            bad.append(f"line {line}: {module} (only {sorted(ONLY_IN[top])} may import {top})")
        elif top in NEVER_IN.get(layer, ()):
            bad.append(f"line {line}: {module} ({layer} never imports {top})")
    assert not bad, f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(bad)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the sigma_vla modules it imports (a `from package import name` of a submodule counts as that
    submodule, of anything else as the package's __init__)."""
    known = {_module_name(p) for p in _modules()}
    graph: dict[str, set[str]] = {}
    for path in _modules():
        me, targets = _module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sigma_vla"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in known else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in known}
        graph[me] = {t for t in targets if t in known and t != me}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other_in_a_circle():
    """Inside a layer too, imports inside functions included: a circle is a design to untie, not to hide."""
    assert not _circles(_import_graph())


def test_a_circle_is_found():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted(CLIENT.glob("*.py")), ids=lambda p: p.name)
def test_the_client_distribution_imports_neither_torch_nor_sigma_vla(path: Path):
    tops = {module.split(".")[0] for _, module in _imports(path, CLIENT.parent)}
    assert not tops & {"torch", "sigma_vla", "safetensors", "transformers"}, f"{path.relative_to(ROOT)}: {tops}"


def test_the_client_imports_without_torch():
    """The robot side runs with numpy, msgpack and websockets: importing the client must not pull torch in."""
    code = "import sys, sigma_vla_client; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_table_in_docs_is_this_table():
    """docs/architecture.md's layer table lists, per layer, exactly what ALLOWED lets it import."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    documented = {}
    for layer, allowed in re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|$", text, flags=re.M):
        named = set(re.findall(r"`(\w+)`", allowed))
        documented[layer] = set(ALLOWED) - {layer} if allowed.strip() == "everything else" else named
    assert documented == {layer: targets - {layer} for layer, targets in ALLOWED.items()}
