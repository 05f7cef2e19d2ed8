"""The code's layout rules: no import circles, and no long module without a stated reason.

Read from the source with `ast`, so a circle hidden in a function-level import or under
`if TYPE_CHECKING:` counts too: that is how circles usually hide, and two modules that need each
other's types are as entangled as two that need each other's functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Source folders and the import names they are installed as (pyproject.toml's package-dir).
PACKAGES = {
    "core": "outlast",
    "remote-runtime": "outlast.runtime",
    "adapters": "outlast.adapters",
}
ADAPTER_NAMES = {"lambda": "aws_lambda"}
MAX_LINES = 400
LONG_MARKER = "# long-module:"  # within the first lines: why this module is allowed to be long


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if "migrations" in parts:
                continue
            if folder == "adapters" and parts:
                parts[0] = ADAPTER_NAMES.get(parts[0], parts[0])
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import module` depends on the module itself
                candidate = f"{base}.{alias.name}"
                targets.add(candidate if candidate in modules else base)
    return {target for target in targets if target in modules and target != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_long_modules_say_why():
    unexplained = []
    for name, path in sorted(_modules().items()):
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and not any(line.startswith(LONG_MARKER) for line in lines[:40]):
            unexplained.append(f"{name} ({len(lines)} lines)")
    assert unexplained == [], f"over {MAX_LINES} lines without a '{LONG_MARKER} <reason>' line near the top"
