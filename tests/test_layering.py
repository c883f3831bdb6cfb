"""The layers import downwards only: domain < store < activities < workflows < runtime < worker < starter.

Every import counts, a lazy one inside a function as much as one at the top: a lazy import
that points upwards is an import loop waiting for someone to hoist it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Lower first. activities may use store (the read-model writes); store knows no activity.
LAYERS = ["domain", "store", "activities", "workflows", "runtime", "worker", "starter"]
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def _sources(layer: str) -> list[Path]:
    path = ROOT / layer
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if "migrations" not in p.relative_to(ROOT).parts)
    return [ROOT / f"{layer}.py"]


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def upward_imports() -> list[str]:
    wrong = []
    for layer in LAYERS:
        for path in _sources(layer):
            for line, module in _imported(ast.parse(path.read_text(), str(path))):
                target = module.split(".")[0]
                if target in RANK and RANK[target] > RANK[layer]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module} ({target})")
    return wrong


def test_every_layer_imports_only_the_layers_below_it() -> None:
    assert upward_imports() == []


def test_every_layer_has_sources() -> None:
    # a renamed package would make the test above pass vacuously
    for layer in LAYERS:
        assert _sources(layer), layer
        assert all(path.exists() for path in _sources(layer)), layer


def test_the_check_sees_lazy_imports() -> None:
    tree = ast.parse("def f():\n    from starter.cli import app\n    import worker\n")
    assert [module for _, module in _imported(tree)] == ["starter.cli", "worker"]
