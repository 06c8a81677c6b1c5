"""The store's schema, as ordered steps applied once each (sqlite-utils migrations)."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from edge_agent.core.deadletters import source_of

migrations = Migrations("edge-agent")


def unknown_steps(db: Database) -> list[str]:
    """Steps recorded as applied in ``db`` that this code does not have: the database was
    written by a newer edge-agent. Empty for a new database or one this code can migrate.

    sqlite-utils records each applied step by name in ``_sqlite_migrations`` (with its set's
    name) and, when applying, only skips the names it knows: it would neither notice nor undo
    steps from a newer release, and this code would then write rows the newer schema does not
    expect.
    """
    applied = {m.name for m in migrations.applied(db)}
    # Every step is pending on an empty database: the library's public way to list them all.
    known = {m.name for m in migrations.pending(Database(memory=True))}
    return sorted(applied - known)


#: Recorded in every edge-agent database: what tells one from any other SQLite file.
FIRST_STEP = "0001_events_and_dead_letters"


@migrations(name=FIRST_STEP)
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


@migrations(name="0002_personal_data")
def _personal_data(db: Database) -> None:
    for statement in _split(
        """
        ALTER TABLE events RENAME COLUMN user_id TO pseudonym;
        -- Rows written before pseudonymisation hold raw userIds: they cannot stay.
        DELETE FROM events WHERE pseudonym IS NOT NULL;
        CREATE TABLE consent_ledger (
            id INTEGER PRIMARY KEY,
            pseudonym TEXT NOT NULL,
            purpose TEXT NOT NULL,
            granted INTEGER NOT NULL,
            ts_ms INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            source TEXT NOT NULL,
            message_id TEXT NOT NULL,
            recorded_ms INTEGER NOT NULL
        );
        CREATE INDEX consent_ledger_person ON consent_ledger (pseudonym);
        CREATE TABLE consent (
            pseudonym TEXT NOT NULL,
            purpose TEXT NOT NULL,
            granted INTEGER NOT NULL,
            ts_ms INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (pseudonym, purpose)
        );
        CREATE TABLE identity_vault (
            pseudonym TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            traits TEXT NOT NULL,
            updated_ms INTEGER NOT NULL
        );
        CREATE TABLE visit_links (
            anonymous_id TEXT PRIMARY KEY,
            pseudonym TEXT NOT NULL,
            linked_ms INTEGER NOT NULL
        );
        CREATE INDEX visit_links_person ON visit_links (pseudonym);
        CREATE TABLE profiles (
            pseudonym TEXT PRIMARY KEY,
            first_name TEXT,
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        );
        CREATE TABLE profile_purchases (
            pseudonym TEXT NOT NULL,
            message_id TEXT NOT NULL,
            ts_ms INTEGER NOT NULL,
            products TEXT NOT NULL,
            PRIMARY KEY (pseudonym, message_id)
        );
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL
                CHECK (kind IN ('erasure', 'consent_withdrawn', 'identified', 'insight')),
            subject TEXT,
            message_id TEXT,
            payload TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE INDEX outbox_subject ON outbox (subject) WHERE subject IS NOT NULL;
        CREATE UNIQUE INDEX outbox_item ON outbox (kind, message_id) WHERE message_id IS NOT NULL;
        CREATE TABLE erasure_receipts (
            id INTEGER PRIMARY KEY,
            subject_hash TEXT NOT NULL,
            request TEXT NOT NULL,
            source TEXT NOT NULL,
            requested_ms INTEGER NOT NULL,
            completed_ms INTEGER NOT NULL,
            removed TEXT NOT NULL,
            digest TEXT NOT NULL
        );
        CREATE INDEX erasure_receipts_request ON erasure_receipts (request)
        """
    ):
        db.execute(statement)


@migrations(name="0003_insight_cells")
def _insight_cells(db: Database) -> None:
    for statement in _split(
        """
        CREATE TABLE insight_cells (
            start_ms INTEGER PRIMARY KEY,
            computed_ms INTEGER NOT NULL,
            events INTEGER NOT NULL,
            cell TEXT NOT NULL
        );
        CREATE TABLE dirty_hours (
            start_ms INTEGER PRIMARY KEY,
            marked_ms INTEGER NOT NULL
        )
        """
    ):
        db.execute(statement)


@migrations(name="0004_dp_ledger")
def _dp_ledger(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE dp_ledger (
            id INTEGER PRIMARY KEY,
            day TEXT NOT NULL,
            epsilon REAL NOT NULL,
            what TEXT NOT NULL,
            released_ms INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX dp_ledger_day ON dp_ledger (day)")


@migrations(name="0005_quality_hours")
def _quality_hours(db: Database) -> None:
    # Data-quality counts per hour: 'duplicates' (by the event's hour) and 'dead_letter/<reason>'
    # (by the hour the message was received: a rejected message may have no usable time).
    db.execute(
        """
        CREATE TABLE quality_hours (
            start_ms INTEGER NOT NULL,
            kind TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (start_ms, kind)
        )
        """
    )


@migrations(name="0006_sync")
def _sync(db: Database) -> None:
    for statement in _split(
        """
        CREATE TABLE outbox_losses (
            class TEXT NOT NULL,             -- the outbox kind the lost items were of
            reason TEXT NOT NULL,            -- dropped_quota, withdrawn, rejected
            count INTEGER NOT NULL,
            PRIMARY KEY (class, reason)
        );
        CREATE TABLE sync_dead_letters (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            status INTEGER NOT NULL,
            reason TEXT NOT NULL,
            items INTEGER NOT NULL,
            body BLOB NOT NULL,
            failed_ms INTEGER NOT NULL
        )
        """
    ):
        db.execute(statement)


@migrations(name="0007_models")
def _models(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE models (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('serving', 'previous', 'retired', 'held', 'refused')),
            reason TEXT NOT NULL DEFAULT '',
            metrics TEXT NOT NULL DEFAULT '{}',   -- the release's own offline metrics
            shadow TEXT NOT NULL DEFAULT '{}',    -- measured here on recent local data
            changed_ms INTEGER NOT NULL,
            PRIMARY KEY (name, version)
        )
        """
    )


@migrations(name="0008_screens")
def _screens(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE screens (
            id INTEGER PRIMARY KEY,
            device TEXT NOT NULL,                 -- the device or zone it stands by
            label TEXT NOT NULL,
            pairing_sha256 TEXT UNIQUE,           -- the one-time code's hash, until used
            pairing_expires_ms INTEGER,
            token_sha256 TEXT UNIQUE,             -- the screen's own token's hash, once paired
            created_ms INTEGER NOT NULL,
            paired_ms INTEGER,
            revoked_ms INTEGER
        )
        """
    )


@migrations(name="0009_screens_by_zone")
def _screens_by_zone(db: Database) -> None:
    # A screen stands by a device (its ``device`` column names it) or in a zone (it names
    # the zone): a booth or a kiosk corner where visitors are seen by zone sensors.
    db.execute("ALTER TABLE screens ADD COLUMN kind TEXT NOT NULL DEFAULT 'device'")


@migrations(name="0010_dead_letter_budget")
def _dead_letter_budget(db: Database) -> None:
    # Dead letters are bounded per source (the device a topic names) and reason, and in
    # bytes altogether; what is over the budget is counted in dead_letters_unkept. Triggers
    # keep the byte total, so no commit has to sum the table to know it.
    for statement in _split(
        """
        ALTER TABLE dead_letters ADD COLUMN source TEXT NOT NULL DEFAULT '';
        ALTER TABLE dead_letters ADD COLUMN kept TEXT NOT NULL DEFAULT 'first';
        CREATE INDEX dead_letters_source ON dead_letters (source, reason, status);

        CREATE TABLE dead_letters_unkept (
            source TEXT NOT NULL,
            reason TEXT NOT NULL,
            occurrences INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            first_ms INTEGER NOT NULL,
            last_ms INTEGER NOT NULL,
            last_sha256 TEXT NOT NULL,
            PRIMARY KEY (source, reason)
        );

        CREATE TABLE dead_letter_usage (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            bytes INTEGER NOT NULL
        );
        INSERT INTO dead_letter_usage (id, bytes)
            SELECT 1, coalesce(sum(length(raw) + length(detail) + length(topic) + 256), 0)
            FROM dead_letters;
        """
    ):
        db.execute(statement)
    # A trigger's body has semicolons of its own: one statement each.
    for trigger in (
        """
        CREATE TRIGGER dead_letter_usage_insert AFTER INSERT ON dead_letters BEGIN
            UPDATE dead_letter_usage SET bytes = bytes
                + length(NEW.raw) + length(NEW.detail) + length(NEW.topic) + 256;
        END
        """,
        """
        CREATE TRIGGER dead_letter_usage_delete AFTER DELETE ON dead_letters BEGIN
            UPDATE dead_letter_usage SET bytes = bytes
                - length(OLD.raw) - length(OLD.detail) - length(OLD.topic) - 256;
        END
        """,
        """
        CREATE TRIGGER dead_letter_usage_update AFTER UPDATE OF raw, detail, topic
            ON dead_letters BEGIN
            UPDATE dead_letter_usage SET bytes = bytes
                + length(NEW.raw) + length(NEW.detail) + length(NEW.topic)
                - length(OLD.raw) - length(OLD.detail) - length(OLD.topic);
        END
        """,
    ):
        db.execute(trigger)
    rows = db.execute("SELECT id, topic FROM dead_letters").fetchall()
    db.conn.executemany(
        "UPDATE dead_letters SET source = ? WHERE id = ?",
        [(source_of(topic), letter_id) for letter_id, topic in rows],
    )


@migrations(name="0011_dead_letter_people")
def _dead_letter_people(db: Database) -> None:
    # Who each dead letter names, found once when it is written: an erasure then finds its
    # letters through an index instead of reading every letter's bytes. Letters written before
    # this step are not indexed (indexed = 0) and are still read, until they expire.
    for statement in _split(
        """
        ALTER TABLE dead_letters ADD COLUMN indexed INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX dead_letters_unindexed ON dead_letters (id) WHERE indexed = 0;
        CREATE TABLE dead_letter_people (
            pseudonym TEXT NOT NULL,
            letter_id INTEGER NOT NULL,
            PRIMARY KEY (pseudonym, letter_id)
        ) WITHOUT ROWID;
        CREATE INDEX dead_letter_people_letter ON dead_letter_people (letter_id)
        """
    ):
        db.execute(statement)
    db.execute(
        """
        CREATE TRIGGER dead_letter_people_delete AFTER DELETE ON dead_letters BEGIN
            DELETE FROM dead_letter_people WHERE letter_id = OLD.id;
        END
        """
    )


@migrations(name="0012_cell_revisions")
def _cell_revisions(db: Database) -> None:
    # Each queued hour cell gets the next number of one counter (Outbox.replace_insight):
    # central keeps the highest, which no clock error can reorder, as a cell's computed_ms can.
    for statement in _split(
        """
        ALTER TABLE outbox ADD COLUMN revision INTEGER;
        CREATE TABLE sync_revision (
            only INTEGER PRIMARY KEY CHECK (only = 1),
            revision INTEGER NOT NULL
        );
        INSERT INTO sync_revision (only, revision) VALUES (1, 1);
        UPDATE outbox SET revision = 1 WHERE kind = 'insight'
        """
    ):
        db.execute(statement)


@migrations(name="0013_catalogue")
def _catalogue(db: Database) -> None:
    # What the site knows of each product: from a catalogue file it imported (authoritative
    # for what it says) and from what its tills send (kept current where no import spoke).
    db.execute(
        """
        CREATE TABLE products (
            product_id TEXT PRIMARY KEY,
            name TEXT,
            category TEXT,
            price REAL,
            currency TEXT,
            available INTEGER,
            imported INTEGER NOT NULL,          -- 1: a catalogue file named it
            updated_ms INTEGER NOT NULL
        )
        """
    )


@migrations(name="0014_holders")
def _holders(db: Database) -> None:
    # The pseudonym of the ticket's or badge's holder an event names: erasure and subject
    # access find a holder's scans by it. Events stored before it held raw ids; the agent
    # hashes those when it starts (`Events.unhashed_holders`), as it needs the site key.
    for statement in _split(
        """
        ALTER TABLE events ADD COLUMN holder TEXT;
        CREATE INDEX events_holder ON events (holder) WHERE holder IS NOT NULL;
        CREATE TABLE holders_unhashed (after_id INTEGER NOT NULL);
        INSERT INTO holders_unhashed (after_id) VALUES (0)
        """
    ):
        db.execute(statement)


@migrations(name="0015_peer_cells")
def _peer_cells(db: Database) -> None:
    # What the venue's other agents shared (`edge_agent.core.venueview`): each one's latest
    # document, and its hour cells, the newest computation of each (site, hour) kept.
    for statement in _split(
        """
        CREATE TABLE peer_agents (
            site TEXT PRIMARY KEY,
            heard_ms INTEGER NOT NULL,         -- when its latest document came (our clock)
            computed_ms INTEGER NOT NULL,      -- the newest document's own time (its clock)
            day TEXT NOT NULL,
            timezone TEXT NOT NULL
        );
        CREATE TABLE peer_cells (
            site TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            computed_ms INTEGER NOT NULL,
            cell TEXT NOT NULL,
            PRIMARY KEY (site, start_ms)
        ) WITHOUT ROWID
        """
    ):
        db.execute(statement)


@migrations(name="0016_peer_refusals")
def _peer_refusals(db: Database) -> None:
    # The venue's agents whose documents are refused because they hold another site key
    # (their pseudonyms would count a person twice): what ``status`` and the screens name.
    db.execute(
        """
        CREATE TABLE peer_refusals (
            site TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            refused_ms INTEGER NOT NULL        -- its latest document refused (our clock)
        )
        """
    )
