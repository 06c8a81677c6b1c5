"""Day partitions of the hour cells on PostgreSQL, and keys fit to distribute by site
(docs/central-scale.md).

``insight_cells`` is the table that grows with the fleet (10,000 sites are 240,000 rows a
day), so on PostgreSQL it is partitioned by range of ``start_ms``, one partition per UTC day,
with a default partition for any day without one. `PartitionStore.ensure_partitions` (at start
and from the hygiene job) keeps partitions from a few days back to two weeks ahead; a day
whose cells already sit in the default partition (days from before the partitions, a site's
late backlog) is moved into its own partition in one short transaction. SQLite, the embedded
engine of a small chain, has one table and nothing to do here.

Partitions are the engine's own, declared in SQL (no extension), so the same schema runs on
a PostgreSQL without pg_partman and on Citus, which distributes a partitioned table by
``site`` with its partitions.
"""

from __future__ import annotations

from datetime import UTC, datetime

from edge_agent.collector.store.engine import POSTGRESQL_ONLY, Database, Migration, Tx

DAY_MS = 24 * 3600 * 1000
#: The partitioned table, its range column, and its default partition.
TABLE = "insight_cells"
DEFAULT = f"{TABLE}_default"
#: Days kept partitioned ahead of today (cells of a day arrive from its first hour on) and
#: back from it (late hours and backlogs mostly come within a week).
AHEAD_DAYS = 14
BACK_DAYS = 7

MIGRATIONS: tuple[Migration, ...] = (
    (
        "0010_cell_partitions",
        f"""{POSTGRESQL_ONLY}
        ALTER TABLE insight_cells RENAME TO insight_cells_unpartitioned;
        CREATE TABLE insight_cells (
            site TEXT NOT NULL REFERENCES sites (site),
            start_ms BIGINT NOT NULL,
            venue TEXT NOT NULL,
            version_ms BIGINT NOT NULL,
            item_id TEXT NOT NULL,
            k INTEGER NOT NULL,
            suppressed INTEGER NOT NULL,
            reason TEXT,
            cell TEXT,
            received_ms BIGINT NOT NULL,
            revision BIGINT,
            PRIMARY KEY (site, start_ms)
        ) PARTITION BY RANGE (start_ms);
        CREATE TABLE {DEFAULT} PARTITION OF insight_cells DEFAULT;
        INSERT INTO insight_cells (site, start_ms, venue, version_ms, item_id, k, suppressed,
            reason, cell, received_ms, revision)
            SELECT site, start_ms, venue, version_ms, item_id, k, suppressed, reason, cell,
                received_ms, revision FROM insight_cells_unpartitioned;
        DROP TABLE insight_cells_unpartitioned;
        CREATE INDEX insight_cells_venue_start ON insight_cells (venue, start_ms);
        CREATE INDEX insight_cells_start ON insight_cells (start_ms)
        """,
    ),
    # Keyed by site first, as a table distributed by site must be (docs/central-scale.md):
    # nothing reads these rows by id alone.
    (
        "0011_site_keys",
        f"""{POSTGRESQL_ONLY}
        ALTER TABLE identified DROP CONSTRAINT identified_pkey;
        ALTER TABLE identified ADD PRIMARY KEY (site, id);
        ALTER TABLE erasure_receipts DROP CONSTRAINT erasure_receipts_pkey;
        ALTER TABLE erasure_receipts ADD PRIMARY KEY (site, id)
        """,
    ),
)


def partition_name(day_ms: int) -> str:
    """The partition holding the UTC day starting at ``day_ms``: ``insight_cells_d20261204``."""
    return f"{TABLE}_d{datetime.fromtimestamp(day_ms / 1000, UTC):%Y%m%d}"


def wanted_days(today_ms: int, back: int = BACK_DAYS, ahead: int = AHEAD_DAYS) -> list[int]:
    """The starts of the UTC days that should have their own partition on ``today_ms``."""
    today = today_ms - today_ms % DAY_MS
    return [today + n * DAY_MS for n in range(-back, ahead + 1)]


class PartitionStore(Database):
    """Makes the day partitions of ``insight_cells`` (PostgreSQL only)."""

    def partitions(self) -> list[str]:
        """The names of the partitions of ``insight_cells`` (the default among them)."""
        if self.engine != "postgresql":
            return []
        return sorted(
            str(name)
            for (name,) in self.read(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ?",
                (TABLE,),
            )
        )

    def ensure_partitions(self, today_ms: int) -> list[str]:
        """Make the partitions `wanted_days` names that do not exist yet, each in its own
        transaction; returns the names made (none on SQLite).

        Raises:
            Unavailable: the database is busy or unreachable.
        """
        if self.engine != "postgresql":
            return []
        have = set(self.partitions())
        made = []
        for day in wanted_days(today_ms):
            name = partition_name(day)
            if name not in have:
                with self.write() as tx:
                    if _attach(tx, name, day):
                        made.append(name)
        return made


def _attach(tx: Tx, name: str, day_ms: int) -> bool:
    """Make the partition ``name`` of the day at ``day_ms``, with the cells of that day the
    default partition holds; False when another process made it first. Inserts into the
    default wait for the lock meanwhile, so none of that day lands there between the move
    and the attach (which checks the default)."""
    bounds = (day_ms, day_ms + DAY_MS)
    tx.run(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
    # Another collector process may have made it while this one waited for the lock.
    if tx.rows("SELECT 1 FROM pg_class WHERE relname = ?", (name,)):
        return False
    tx.run(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    tx.run(
        f"INSERT INTO {name} SELECT * FROM {DEFAULT} WHERE start_ms >= ? AND start_ms < ?",
        bounds,
    )
    tx.run(f"DELETE FROM {DEFAULT} WHERE start_ms >= ? AND start_ms < ?", bounds)
    # The bounds are integers this module computed: written into the statement, as ATTACH
    # takes no parameters.
    tx.run(
        f"ALTER TABLE {TABLE} ATTACH PARTITION {name} "
        f"FOR VALUES FROM ({int(bounds[0])}) TO ({int(bounds[1])})"
    )
    return True
