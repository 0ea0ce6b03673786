"""The package's shape: dependencies point one way, and nothing imports upward.

Layers, lowest first. A module may import modules of its own layer or below,
never above, and the import graph has no cycle. Imports made only for type
checking (``if TYPE_CHECKING:``) do not count: they never run.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import alikassa_async

PACKAGE = Path(alikassa_async.__file__).parent

LAYERS: list[set[str]] = [
    {"_defaults", "_errors", "_outcome", "_hpack_redaction", "_observe", "_arguments"},
    {"_validation", "_encoding", "_retry", "_signing", "_tls", "_http1"},
    {"_models"},
    {"_converters", "services", "_protocols", "_sealing"},
    {
        "payments",
        "payouts",
        "_transport",
        "_builtin_sender",
        "webhooks",
        "journal",
        "_polling",
        "pg_journal",
    },
    {"_batch", "_worker"},
    {"_client"},
    {"__init__"},
    {"sandbox"},  # the whole subpackage: a library for tests and the demo
    {"cli", "__main__"},  # the `alikassa` command: keygen, sandbox, demo, payouts, workers, lookup
]


def _layer(module: str) -> int:
    for name in (module, module.split(".")[0]):  # a module's own entry wins over its package's
        for rank, names in enumerate(LAYERS):
            if name in names:
                return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


def _runtime_imports(tree: ast.Module, module: str) -> set[str]:
    """Package modules imported at run time (at module level or inside functions)."""
    package = (
        module.split(".")[:-1]
        if not (PACKAGE / module.replace(".", "/")).is_dir()
        else module.split(".")
    )
    found: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[: len(package) - node.level + 1]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
        if node.module is None:  # from . import a, b
            for alias in node.names:
                name = ".".join([*base, alias.name])
                found.add(
                    name
                    if (PACKAGE / name.replace(".", "/")).with_suffix(".py").exists()
                    or (PACKAGE / name.replace(".", "/")).is_dir()
                    else target or "__init__"
                )
        else:
            found.add(target)
    return {name or "__init__" for name in found} - {module}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = _runtime_imports(ast.parse(path.read_text()), module)
    return graph


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    try:
        tuple(TopologicalSorter(_graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_polling_and_batch_never_reach_into_the_client():
    graph = _graph()
    assert "_client" not in graph["_polling"] and "_client" not in graph["_batch"]
    for name in ("_polling.py", "_batch.py"):  # no private attribute of what they are handed
        assert "client._" not in (PACKAGE / name).read_text()
