"""Imports only go down the layers of docs/architecture.md ("Layers"), and no module imports itself in a circle.

Every import of every module under ``syn2real/`` counts, at module level or inside a function, except the ones under
``if __name__ == "__main__":`` (they belong to the script, not to the module). A module may import its own layer and
the layers below it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "syn2real"

# bottom to top; a module belongs to the layer of its longest listed prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("syn2real", "syn2real.core", "syn2real.io", "syn2real.run_dir")),
    ("losses", ("syn2real.losses",)),
    ("models, data, adversarial", ("syn2real.models", "syn2real.data", "syn2real.adversarial")),
    ("metrics", ("syn2real.metrics",)),
    ("callbacks", ("syn2real.callbacks", "syn2real.loggers")),
    ("tasks", ("syn2real.tasks",)),
    ("methods", ("syn2real.methods",)),
    ("commands", (
        "syn2real.commands", "syn2real.command", "syn2real.cli", "syn2real.__main__", "syn2real.enhance",
        "syn2real.translate", "syn2real.robustness", "syn2real.export", "syn2real.results",
    )),
]

# Upward imports of the methods layer that are still to be removed (importer, imported); empty it, never grow it.
ALLOWED_UPWARD: set[tuple[str, str]] = set()  # none: every import runs downward


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, index = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index < 0 or (best == len("syn2real") and module != "syn2real"):
        raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to docs/architecture.md")
    return index


def _resolve(name: str) -> str | None:
    """The syn2real module that ``name`` (a module, or a name inside one) is, or None outside syn2real."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def imports_in(source: str, package: str) -> set[str]:
    """The syn2real modules that ``source`` (a module of ``package``) imports."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_main_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(filter(None, (_resolve(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                if target:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


@cache
def imports_of(module: str) -> frozenset[str]:
    """The syn2real modules ``module`` imports (itself excluded)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return frozenset(imports_in(path.read_text(encoding="utf-8"), package) - {module})


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_imports_only_go_down() -> None:
    upward = sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module in MODULES
        for target in imports_of(module)
        if layer_of(target) > layer_of(module) and (module, target) not in ALLOWED_UPWARD
    )
    assert not upward, "imports from a layer above (move the imported thing down instead):\n" + "\n".join(upward)


def test_the_allow_list_holds_only_upward_imports_that_still_exist() -> None:
    stale = sorted(
        f"{module} -> {target}" for module, target in ALLOWED_UPWARD
        if target not in imports_of(module) or layer_of(target) <= layer_of(module)
    )
    assert not stale, "remove from ALLOWED_UPWARD (no longer imported, or not upward):\n" + "\n".join(stale)
    assert all(LAYERS[layer_of(module)][0] == "methods" for module, _ in ALLOWED_UPWARD)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan); the allowed upward imports are left out (they
    are exceptions already, and go with the allow-list)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(t for t in imports_of(v) if (v, t) not in ALLOWED_UPWARD):
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

    for module in sorted(MODULES):
        if module not in index:
            strongconnect(module)
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles()
    assert not cycles, "modules that import each other (directly or around a circle):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import syn2real.losses.gan\n", {"syn2real.losses.gan"}),
        ("from syn2real.models import heads\n", {"syn2real.models.heads"}),
        ("from syn2real.models.heads import NetworkConfig\n", {"syn2real.models.heads"}),
        ("def f():\n    from syn2real.methods.base import DAMethod\n", {"syn2real.methods.base"}),
        ("from . import labels\n", {"syn2real.core.labels"}),
        ("if __name__ == '__main__':\n    from syn2real.command import main\n", set()),
        ("import torch\n", set()),
    ],
)
def test_the_import_parser(source: str, expected: set[str]) -> None:
    assert imports_in(source, "syn2real.core") == expected
