"""The store's schema, as ordered steps applied once each (sqlite-utils migrations)."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("edge-agent")


@migrations(name="0001_events_and_dead_letters")
def _events_and_dead_letters(db: Database) -> None:
    # One statement at a time: executescript would COMMIT the migration's transaction first.
    for statement in _split(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL UNIQUE,   -- the de-duplication key (one site per store)
            type TEXT NOT NULL,
            event TEXT,
            ts_ms INTEGER NOT NULL,            -- the event's own timestamp
            received_ms INTEGER NOT NULL,      -- when the agent took it off the broker
            stored_ms INTEGER NOT NULL,        -- when its transaction committed
            device_id TEXT NOT NULL,
            anonymous_id TEXT,
            user_id TEXT,
            schema_version TEXT NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX events_ts ON events (ts_ms);
        CREATE INDEX events_event_ts ON events (event, ts_ms);
        CREATE INDEX events_anonymous ON events (anonymous_id) WHERE anonymous_id IS NOT NULL;
        CREATE INDEX events_user ON events (user_id) WHERE user_id IS NOT NULL;

        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL UNIQUE,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            topic TEXT NOT NULL,
            received_ms INTEGER NOT NULL,
            last_seen_ms INTEGER NOT NULL,
            occurrences INTEGER NOT NULL DEFAULT 1,
            raw BLOB NOT NULL,
            raw_size INTEGER NOT NULL,
            raw_sha256 TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed')),
            replayed_ms INTEGER
        );
        CREATE INDEX dead_letters_status_reason ON dead_letters (status, reason);

        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE agent_state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_ms INTEGER NOT NULL
        );
        """
    ):
        db.execute(statement)


def _split(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
