"""The consensus core is sans-IO (DESIGN §2, STYLE 1): no clock, socket, randomness, OS,
threads or logging anywhere in core.py or the modules it imports from this project.

The test walks the import graph from replication.gcs.xcom.core through every project module
it reaches (statically, with ast) and fails on a forbidden import, and on any project module
outside the allowed set (say, the TCP transport) that would bring I/O in transitively.
"""

from __future__ import annotations

import ast
from pathlib import Path

import replication

ROOT = Path(replication.__file__).resolve().parent.parent
FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "time",
    "datetime",
    "random",
    "secrets",
    "uuid",
    "os",
    "sys",
    "io",
    "subprocess",
    "signal",
    "threading",
    "multiprocessing",
    "concurrent",
    "logging",
    "structlog",
}
CORE_MODULES = {
    "replication.gcs.interface",
    "replication.gcs.xcom.core",
    "replication.gcs.xcom.messages",
    "replication.gcs.xcom.quorum",
    "replication.gcs.xcom.types",
}


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:
                if _module_file(f"{target}.{alias.name}") is not None:
                    found.add(f"{target}.{alias.name}")
    return found


def _walk(start: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        if module in graph:
            continue
        path = _module_file(module)
        assert path is not None, module
        graph[module] = _imports(module, path)
        for imported in graph[module]:
            if imported.split(".")[0] in ("replication", "grproxy", "router") and _module_file(imported):
                if imported.endswith("__init__") or _module_file(imported).name == "__init__.py":
                    continue
                todo.append(imported)
    return graph


def test_core_and_everything_it_imports_is_sans_io() -> None:
    graph = _walk("replication.gcs.xcom.core")
    offences = [
        f"{module} imports {imported}"
        for module, imports in graph.items()
        for imported in imports
        if imported.split(".")[0] in FORBIDDEN
    ]
    assert not offences, offences
    outside = sorted(set(graph) - CORE_MODULES)
    assert not outside, f"the core reaches project modules outside the sans-IO set: {outside}"
    assert CORE_MODULES <= set(graph), sorted(CORE_MODULES - set(graph))


def test_every_core_sibling_file_is_checked() -> None:
    """A new core*.py file next to core.py is part of the core: it must be in the walk."""
    xcom = ROOT / "replication" / "gcs" / "xcom"
    siblings = {f"replication.gcs.xcom.{p.stem}" for p in xcom.glob("core*.py")}
    assert siblings <= CORE_MODULES | set(_walk("replication.gcs.xcom.core")), siblings


def test_the_walker_does_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The checker must be able to fail: feed it a module that imports time."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom asyncio import sleep\n")
    assert {"time", "asyncio"} <= _imports("bad", bad)
