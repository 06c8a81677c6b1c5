"""Staff screens: registered to a device or a zone, or as a gate screen of the venue, paired
once with a code, then known by a token.

Codes and tokens are random (``secrets``) and only their sha256 is stored; a code works once
and for ``PAIRING_TTL_MS``; a revoked screen's token stops working at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from edge_agent.store.database import Store

PAIRING_TTL_MS = 10 * 60 * 1000
#: By a device, in a zone, or at the venue's gates (a gate screen shows the gates and halls).
Kind = Literal["device", "zone", "gate"]
_COLUMNS = "id, device, label, created_ms, paired_ms, revoked_ms, kind"
_FAILING = "cannot use the screens table"


@dataclass(frozen=True, slots=True)
class Screen:
    """A registered screen."""

    id: int
    #: The device it stands by, or the zone it stands in (see ``kind``); ``gates`` for a gate
    #: screen.
    device: str
    label: str
    created_ms: int
    paired_ms: int | None
    revoked_ms: int | None
    kind: Kind = "device"

    @property
    def place(self) -> str:
        """Where it stands, for people: ``till-3``, ``zone entrance`` or ``the gates``."""
        if self.kind == "gate":
            return "the gates"
        return self.device if self.kind == "device" else f"zone {self.device}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Screens:
    """The screens of one agent's store."""

    def __init__(self, store: Store) -> None:
        self.connection = store.connection

    def add(self, device: str, label: str, now_ms: int, kind: Kind = "device") -> tuple[int, str]:
        """Register a screen by ``device`` (or in that zone, with ``kind`` zone); returns its
        id and one-time pairing code."""
        code = secrets.token_urlsafe(9)
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            cursor = conn.execute(
                "INSERT INTO screens (device, label, pairing_sha256, pairing_expires_ms, "
                "created_ms, kind) VALUES (?, ?, ?, ?, ?, ?)",
                (device, label, _digest(code), now_ms + PAIRING_TTL_MS, now_ms, kind),
            )
        return int(cursor.lastrowid or 0), code

    def pair(self, code: str, now_ms: int) -> str | None:
        """The screen's new token for a valid, unused, unexpired code; else None."""
        token = secrets.token_urlsafe(32)
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            changed = conn.execute(
                "UPDATE screens SET token_sha256 = ?, paired_ms = ?, pairing_sha256 = NULL, "
                "pairing_expires_ms = NULL WHERE pairing_sha256 = ? "
                "AND pairing_expires_ms >= ? AND revoked_ms IS NULL",
                (_digest(token), now_ms, _digest(code), now_ms),
            ).rowcount
        return token if changed == 1 else None

    def by_token(self, token: str) -> Screen | None:
        """The screen this token belongs to, unless revoked."""
        with self.connection.failing(_FAILING) as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM screens WHERE token_sha256 = ? AND revoked_ms IS NULL",
                (_digest(token),),
            ).fetchone()
        return None if row is None else Screen(*row)

    def all(self) -> list[Screen]:
        """Every screen ever registered, oldest first."""
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM screens ORDER BY id").fetchall()
        return [Screen(*row) for row in rows]

    def revoke(self, screen_id: int, now_ms: int) -> bool:
        """Lock a screen out now; False when there is no such screen (or it was revoked)."""
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            changed = conn.execute(
                "UPDATE screens SET revoked_ms = ?, token_sha256 = NULL, pairing_sha256 = NULL "
                "WHERE id = ? AND revoked_ms IS NULL",
                (now_ms, screen_id),
            ).rowcount
        return bool(changed)
