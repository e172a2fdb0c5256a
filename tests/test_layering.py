"""The layering holds in the imports: storage knows no bot, the production server knows no
playground, and no module of the project imports itself round a cycle.

The import graph is read from the source (``ast``), not by importing anything: every ``import`` and
``from ... import`` of ``bot`` and ``storage`` counts, at module level and inside functions alike
(an import in a function runs as soon as the function does). Only imports under
``if TYPE_CHECKING:`` are left out: they never run.

* An edge goes to the module imported: ``from pkg import name`` to ``pkg.name`` when that is a
  module of its own, else to ``pkg``; ``from . import x`` and the other relative forms resolved
  against the importing module's package.
* What a module can load also includes the packages above everything it imports (``import
  bot.slack.app`` runs ``bot/slack/__init__.py`` first), so those count for "never imports".
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("bot", "storage")
PRODUCTION = ("bot.server", "bot.api", "bot.slack")  # and everything under bot.slack
PLAYGROUND = "bot.playground"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the project's packages."""
    modules = {}
    for top in TOP_LEVEL:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" not in path.parts:
                modules[_module_name(path)] = path
    return modules


def _is_package(name: str) -> bool:
    return project_modules()[name].name == "__init__.py"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _ours(name: str) -> bool:
    return any(_under(name, top) for top in TOP_LEVEL)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                pending.extend(child.orelse)  # the else branch does run
            else:
                pending.append(child)


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The project modules an import statement in ``module`` names (its direct targets)."""
    modules = project_modules()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if _ours(alias.name):
                yield alias.name
        return
    if node.level:
        package = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if not _ours(base):
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in modules else base


@cache
def imports() -> dict[str, frozenset[str]]:
    """Module -> the project modules it imports directly (module-level and function-level)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for node in _import_nodes(tree):
            for target in _resolve(name, node):
                assert target in modules, f"{name} imports {target}, which is not a module of the project"
                if target != name:
                    targets.add(target)
        graph[name] = frozenset(targets)
    return graph


def _with_packages(name: str) -> Iterator[str]:
    """``name`` and the packages above it (all of which run when it is imported)."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def loads(module: str) -> dict[str, list[str]]:
    """Every project module that importing ``module`` can load, each with one import path to it."""
    paths = {module: [module]}
    pending = [module]
    while pending:
        current = pending.pop()
        for target in sorted(imports()[current]):
            for loaded in _with_packages(target):
                if loaded not in paths:
                    paths[loaded] = [*paths[current], loaded]
                    pending.append(loaded)
    return paths


def cycles() -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each group of modules that import each other."""
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return [_cycle_in(group) for group in groups]


def _cycle_in(group: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``group`` (breadth first, inside the group)."""
    graph, start = imports(), group[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for current in frontier:
            for target in sorted(graph[current] & set(group)):
                if target == start:
                    return [*paths[current], start]
                if target not in paths:
                    paths[target] = [*paths[current], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {group}")  # pragma: no cover - Tarjan's groups have one


# ======================================================================= the rules


def test_the_graph_covers_the_source_tree():
    modules = project_modules()
    assert {"bot.server", "bot.api.app", "bot.slack.app", "bot.playground.app", "storage.db"} <= modules.keys()
    assert "bot.slack.app" in loads("bot.server")  # function-level imports are followed
    assert "bot.server" in loads("bot.playground.app")


def test_storage_never_imports_bot():
    wrong = {}
    for module in project_modules():
        if _under(module, "storage"):
            reached = [path for name, path in loads(module).items() if _under(name, "bot")]
            if reached:
                wrong[module] = " -> ".join(min(reached, key=len))
    assert not wrong, "storage imports bot:\n  " + "\n  ".join(f"{m}: {p}" for m, p in sorted(wrong.items()))


PRODUCTION_MODULES = sorted(m for m in project_modules() if any(_under(m, p) for p in PRODUCTION))


@pytest.mark.parametrize("module", PRODUCTION_MODULES)
def test_the_production_path_never_imports_the_playground(module: str):
    reached = [path for name, path in loads(module).items() if _under(name, PLAYGROUND)]
    assert not reached, f"{module} imports the playground: {' -> '.join(min(reached, key=len))}"


def test_there_are_no_import_cycles():
    found = cycles()
    assert not found, "import cycles:\n  " + "\n  ".join(" -> ".join(cycle) for cycle in found)
