"""Dead letters: listed, shown, and replayed against the current schemas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent import schemas
from edge_agent.app.clock import now_ms
from edge_agent.app.ingest import classify, limits_of
from edge_agent.app.site import existing_store
from edge_agent.config import Settings
from edge_agent.store.database import Store
from edge_agent.store.deadletters import DeadLetterRow, Unkept


def list_dead_letters(
    settings: Settings, reason: str | None, include_replayed: bool, limit: int
) -> list[DeadLetterRow]:
    """Dead letters, newest first.

    Raises:
        StorageError: the database cannot be read.
    """
    with Store.open(settings.database, readonly=True) as store:
        return store.dead_letters.find(
            reason=reason, status=None if include_replayed else "open", limit=limit
        )


def unkept_dead_letters(settings: Settings) -> list[Unkept]:
    """What the dead letters' budget counted without keeping, by device and reason.

    Raises:
        StorageError: the database cannot be read.
    """
    with Store.open(settings.database, readonly=True) as store:
        return store.dead_letters.unkept()


def get_dead_letter(settings: Settings, letter_id: int) -> DeadLetterRow | None:
    """One dead letter by id, or None.

    Raises:
        StorageError: the database cannot be read.
    """
    with Store.open(settings.database, readonly=True) as store:
        rows = store.dead_letters.find(ids=[letter_id], status=None)
    return rows[0] if rows else None


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did."""

    examined: int
    fixed: int
    stored: int
    duplicates: int
    still_rejected: dict[str, int]
    not_replayable: int


def replay_dead_letters(
    settings: Settings, ids: Sequence[int] | None, reason: str | None
) -> ReplayReport:
    """Validate open dead letters again with the current schemas and limits.

    Events that pass are stored (once, by messageId) and their dead letter is closed; the rest
    stay open with their new reason. Each letter is judged against the time it was received.
    Dead letters whose raw bytes were truncated cannot be replayed and are counted as such.

    Raises:
        StorageError: the database cannot be read or written.
    """
    store, key = existing_store(settings)
    compiled = schemas.load()
    limits = limits_of(settings)
    fixed: list[int] = []
    stored = duplicates = not_replayable = 0
    still: dict[str, int] = {}
    with store:
        rows = store.dead_letters.find(reason=reason, status="open", ids=ids)
        for row in rows:
            if len(row.raw) < row.raw_size:
                not_replayable += 1
                continue
            received, rejected = classify(
                [(row.topic, row.raw, row.received_ms)],
                limits,
                compiled,
                settings.store.dead_letter_raw_bytes,
                key,
                replaying=True,
            )
            same = len(rejected) == 1 and rejected[0].raw_sha256 == row.raw_sha256
            result = store.commit(received, [] if same else rejected, compiled.version, now_ms())
            stored += result.stored
            duplicates += result.duplicates
            if same:
                still[rejected[0].reason.value] = still.get(rejected[0].reason.value, 0) + 1
                store.dead_letters.update(row.id, rejected[0].reason.value, rejected[0].detail)
            else:
                fixed.append(row.id)
        store.dead_letters.mark_replayed(fixed, now_ms())
    return ReplayReport(
        examined=len(rows),
        fixed=len(fixed),
        stored=stored,
        duplicates=duplicates,
        still_rejected=still,
        not_replayable=not_replayable,
    )
