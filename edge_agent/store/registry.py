"""The model registry's table: each version of each model and what became of it (serving,
previous, retired, refused, held), with its reason and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from edge_agent.store.connection import Connection

_FAILING = "cannot use the model registry"


@dataclass(frozen=True, slots=True)
class Entry:
    """One version of a model and what became of it."""

    name: str
    version: str
    status: str
    reason: str
    metrics: dict[str, float]
    shadow: dict[str, float]
    changed_ms: int


class Registry:
    """The ``models`` table. Every change of status runs in one transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def entries(self) -> list[Entry]:
        """Every version ever offered, newest change first.

        Raises:
            StorageError: the registry cannot be read.
        """
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute(
                "SELECT name, version, status, reason, metrics, shadow, changed_ms FROM models "
                "ORDER BY changed_ms DESC, rowid DESC"
            ).fetchall()
        return [
            Entry(n, v, s, r, orjson.loads(m), orjson.loads(sh), c) for n, v, s, r, m, sh, c in rows
        ]

    def serving(self, name: str) -> str | None:
        """The version of ``name`` serving now (None: none).

        Raises:
            StorageError: the registry cannot be read.
        """
        with self.connection.failing(_FAILING):
            return self._version(name, "serving")

    def promote(
        self,
        name: str,
        version: str,
        now_ms: int,
        metrics: Mapping[str, float],
        measured: Mapping[str, float],
    ) -> None:
        """Serve ``version``; the one serving until now becomes the previous one (kept for a
        rollback), and an older previous one is retired.

        Raises:
            StorageError: the registry cannot be written.
        """
        with self.connection.failing(_FAILING), self.connection.atomic():
            current = self._version(name, "serving")
            if current is not None and current != version:
                for old in self._versions(name, "previous"):
                    self._set(name, old, "retired", now_ms)
                self._set(name, current, "previous", now_ms)
            self._record(name, version, "serving", now_ms, "", metrics, measured)

    def settle(
        self,
        name: str,
        version: str,
        status: str,
        now_ms: int,
        reason: str,
        metrics: Mapping[str, float] | None = None,
        shadow: Mapping[str, float] | None = None,
    ) -> bool:
        """Record a version that may not serve (refused, held) with the reason; False, and
        nothing recorded, when it is the version serving now (offered again, damaged: it
        keeps serving).

        Raises:
            StorageError: the registry cannot be written.
        """
        with self.connection.failing(_FAILING), self.connection.atomic():
            if self._version(name, "serving") == version:
                return False
            self._record(name, version, status, now_ms, reason, metrics, shadow)
        return True

    def rollback(self, name: str, now_ms: int) -> str | None:
        """Serve the previous version of ``name`` again and retire the one serving now;
        returns the version serving now, None (nothing changed) without a previous one.

        Raises:
            StorageError: the registry cannot be written.
        """
        with self.connection.failing(_FAILING), self.connection.atomic():
            previous = self._version(name, "previous")
            current = self._version(name, "serving")
            if previous is None:
                return None
            if current is not None:
                self._set(name, current, "retired", now_ms)
            self._set(name, previous, "serving", now_ms)
        return previous

    def _version(self, name: str, status: str) -> str | None:
        row = self.connection.conn.execute(
            "SELECT version FROM models WHERE name = ? AND status = ? "
            "ORDER BY changed_ms DESC, rowid DESC LIMIT 1",
            (name, status),
        ).fetchone()
        return None if row is None else str(row[0])

    def _versions(self, name: str, status: str) -> list[str]:
        return [
            str(v)
            for (v,) in self.connection.conn.execute(
                "SELECT version FROM models WHERE name = ? AND status = ?", (name, status)
            )
        ]

    def _set(self, name: str, version: str, status: str, now_ms: int) -> None:
        self.connection.conn.execute(
            "UPDATE models SET status = ?, changed_ms = ? WHERE name = ? AND version = ?",
            (status, now_ms, name, version),
        )

    def _record(
        self,
        name: str,
        version: str,
        status: str,
        now_ms: int,
        reason: str,
        metrics: Mapping[str, float] | None,
        shadow: Mapping[str, float] | None,
    ) -> None:
        self.connection.conn.execute(
            "INSERT INTO models (name, version, status, reason, metrics, shadow, changed_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, version) DO UPDATE SET "
            "status = excluded.status, reason = excluded.reason, "
            "metrics = excluded.metrics, shadow = excluded.shadow, "
            "changed_ms = excluded.changed_ms",
            (
                name,
                version,
                status,
                reason,
                orjson.dumps(dict(metrics or {})).decode(),
                orjson.dumps(dict(shadow or {})).decode(),
                now_ms,
            ),
        )
