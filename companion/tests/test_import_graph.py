"""No import cycles between the project's own modules.

A module-level cycle works or breaks depending on which module happens to be imported
first (a worker importing `tasks`, a test importing `services`), so none is allowed. The
graph is read from the source with `ast`, without importing anything: the imports that run
when a module is imported, i.e. those at module level (including `try` and class bodies),
not those inside functions, nor under `if TYPE_CHECKING:`, which never run.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

PACKAGES = (
    "accounts",
    "avatars",
    "bench",
    "companion",
    "conversations",
    "core",
    "llm",
    "memory",
    "safety",
    "secretary",
    "testing",
    "web",
)


def module_files(root: Path) -> dict[str, Path]:
    """Every first-party module, by dotted name, except migrations (Django loads those by itself)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        pending.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names a statement imports; `from a import b` names `a.b` too, which is a module when b is one."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports at import time (and the packages those sit in)."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        targets: set[str] = set()
        for node in runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            for name in imported_names(module, path, node):
                parts = name.split(".")
                # Importing a.b.c runs a, then a.b, then a.b.c; the packages the module sits in are already running.
                for i in range(1, len(parts) + 1):
                    target = ".".join(parts[:i])
                    if target in modules and target != module and target not in own_packages:
                        targets.add(target)
        graph[module] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A closed path through a strongly connected component, from its first module by name."""
    start = min(component)
    path = [start]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to start
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    while node != start:
                        path.insert(1, node)
                        node = parents[node]
                    return [*path, start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"not strongly connected: {sorted(component)}")


def test_the_project_modules_import_one_another_without_a_cycle() -> None:
    graph = import_graph(Path(settings.BASE_DIR))

    assert {"accounts.api", "avatars.api", "conversations.api", "memory.api"} <= graph["companion.api"]  # it is read
    assert import_cycles(graph) == []


def test_the_graph_sees_module_level_imports_and_only_those(tmp_path: Path) -> None:
    # Given modules that import one another at module level, in a function, and for types only
    package = tmp_path / "memory"
    package.mkdir()
    sources = {
        "__init__.py": "",
        "services.py": "from memory import tasks\n",
        "tasks.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from memory.services import summary_update\n"
            "def run():\n    from memory.services import summary_update\n"
        ),
        "selectors.py": "from .services import x\ntry:\n    import memory.api\nexcept ImportError:\n    pass\n",
        "api.py": "class Api:\n    from . import selectors\n",
    }
    for name, source in sources.items():
        (package / name).write_text(source)

    # When the graph is read
    graph = import_graph(tmp_path)

    # Then only the imports that run at import time are edges, and the one cycle is found
    assert graph == {
        "memory": set(),
        "memory.api": {"memory.selectors"},
        "memory.selectors": {"memory.services", "memory.api"},
        "memory.services": {"memory.tasks"},
        "memory.tasks": set(),
    }
    assert import_cycles(graph) == [["memory.api", "memory.selectors", "memory.api"]]


# Helpers shared by tests live in `testing/`; one test module importing another runs the
# other's fixtures and module set-up too. The worker tests' fixtures are the one leftover.
TEST_MODULES_IMPORTED_KNOWN = {"memory.tests.test_celery_worker"}


def test_no_module_imports_helpers_from_a_test_module() -> None:
    graph = import_graph(Path(settings.BASE_DIR))

    imported = {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if target.rpartition(".")[2].startswith("test_") and target not in TEST_MODULES_IMPORTED_KNOWN
    }

    assert imported == set()
