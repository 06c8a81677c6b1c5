"""The package's boundaries, read from the source: who may speak SQL, what the core and the
collector may import. Ruff's banned-api rule (TID251, pyproject.toml) bans sqlite3 and
sqlite_utils outside the store packages as code is written; these checks add what a global
ban cannot say per folder."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edge_agent"
#: The only folders whose code speaks SQL: the site's database and central's.
STORES = (PACKAGE / "store", PACKAGE / "collector" / "store")
#: What the pure core may not import: anything that touches files, sockets, processes,
#: databases or the clock's side effects, and the rest of the agent.
CORE_BANNED = (
    "sqlite3", "sqlite_utils", "paho", "httpx", "onnxruntime", "socket", "subprocess", "os",
    "shutil", "threading", "multiprocessing", "urllib", "uvicorn", "starlette", "fastapi",
    "psycopg", "apscheduler", "prometheus_client",
)  # fmt: skip
#: The agent's own modules the collector may use (it runs on central, not on a site box).
COLLECTOR_ALLOWED = (
    "edge_agent.core",
    "edge_agent.errors",
    "edge_agent.logs",
    "edge_agent.service",
    # HTTP plumbing both servers share: request bodies refused while they stream, slow and
    # greedy clients cut off, security headers on every answer.
    "edge_agent.bodylimit",
    "edge_agent.slowclients",
    "edge_agent.securityheaders",
)
#: A string that is a statement, not prose: SQL keywords in capitals at its start.
SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|WITH|BEGIN)\s", re.M
)
EXECUTE = ("execute", "executemany", "executescript")


def _modules(folder: Path) -> Iterator[Path]:
    yield from sorted(folder.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import, ``from x import y`` giving ``x`` and ``x.y``."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _in_store(path: Path) -> bool:
    return any(path.is_relative_to(store) for store in STORES)


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


def _sql(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for each execute call and each string that is an SQL statement."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in EXECUTE:
                yield node.lineno, f"calls .{node.func.attr}()"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL.search(node.value)
        ):
            yield node.lineno, f"holds SQL: {node.value[:60]!r}"


def test_only_the_store_packages_speak_sql() -> None:
    found = [
        f"{_where(path, line)} {what}"
        for path in _modules(PACKAGE)
        if not _in_store(path)
        for line, what in _sql(_tree(path))
    ]
    assert found == [], "SQL outside edge_agent/store/ and edge_agent/collector/store/"


def test_only_the_store_packages_import_sqlite() -> None:
    found = [
        f"{_where(path, line)} imports {module}"
        for path in _modules(PACKAGE)
        if not _in_store(path)
        for line, module in _imports(path)
        if _within(module, ("sqlite3", "sqlite_utils"))
    ]
    assert found == []


def test_the_core_does_no_io_and_knows_no_adapter() -> None:
    found = [
        f"{_where(path, line)} imports {module}"
        for path in _modules(PACKAGE / "core")
        for line, module in _imports(path)
        if _within(module, CORE_BANNED)
        or (module.startswith("edge_agent") and not _within(module, COLLECTOR_ALLOWED[:2]))
    ]
    assert found == []


def test_the_collector_imports_only_the_core_errors_logs_and_service() -> None:
    found = [
        f"{_where(path, line)} imports {module}"
        for path in _modules(PACKAGE / "collector")
        for line, module in _imports(path)
        if module.startswith("edge_agent.")
        and not _within(module, ("edge_agent.collector", *COLLECTOR_ALLOWED))
        # `from edge_agent import logs` names the package first, then the module.
        and module not in ("edge_agent.__version__",)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        pytest.param('x = "SELECT id FROM events"', True, id="select"),
        pytest.param('x = """\n    INSERT INTO t VALUES (?)"""', True, id="insert-on-a-later-line"),
        pytest.param('x = "Select the visitor in front"', False, id="prose"),
        pytest.param("db.execute(q)", True, id="execute"),
    ],
)
def test_the_sql_check_tells_statements_from_prose(source: str, flagged: bool) -> None:
    assert bool(list(_sql(ast.parse(source)))) == flagged


def test_the_receiver_process_stays_light() -> None:
    # The receiver is a process of its own for every agent: the heavy libraries of the
    # insights, the models and the sync would cost it tens of MB it never uses.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, edge_agent.mqtt.receiver; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = {"datasketches", "jsonschema_rs", "numpy", "onnxruntime", "httpx", "starlette"}
    assert heavy.isdisjoint(loaded), sorted(heavy.intersection(loaded))
