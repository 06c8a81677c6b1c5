"""Central laid out for a large fleet on PostgreSQL: the hour cells in day partitions made ahead
and split out of the default partition when a day's cells already sit there, an older database
migrated with its cells kept, and every table's keys fit to distribute by site (Citus)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.collector.app import create_app
from edge_agent.collector.store import partitions
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import Migration, now_ms
from tests.collector_helpers import (
    ADMIN_TOKEN,
    database,
    hour_cell,
    insight,
    post,
    rows,
    sync_body,
)
from tests.inprocess import in_process

pytestmark = pytest.mark.integration

DAY = partitions.DAY_MS


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database("postgresql", tmp_path, request) as target:
        yield target


def _site(store: CentralStore, site: str = "shop-a") -> str:
    token = secrets.token_urlsafe(16)
    store.add_site(site, "mall", hashlib.sha256(token.encode()).hexdigest())
    return token


def _send(store: CentralStore, token: str, *starts: int) -> None:
    """Hour cells of shop-a sent as an agent sends them."""
    cells = [insight(hour_cell(start, f"v{start}", 6, 1)) for start in starts]
    with in_process(create_app(store, ADMIN_TOKEN)) as http:
        answer = post(http, "/v1/sync", sync_body("shop-a", "mall", now_ms(), cells), token)
    assert answer.status_code == 200, answer.text


def _where(target: str, start_ms: int) -> str:
    ((table,),) = rows(
        target,
        "SELECT tableoid::regclass::text FROM insight_cells WHERE start_ms = ?",
        (start_ms,),
    )
    return str(table)


def test_cells_land_in_their_days_partition_and_old_days_in_the_default(pg: str) -> None:
    today = now_ms() - now_ms() % DAY
    store = CentralStore.open(pg)
    try:
        names = store.partitions()
        assert partitions.DEFAULT in names
        assert partitions.partition_name(today) in names
        assert partitions.partition_name(today + partitions.AHEAD_DAYS * DAY) in names
        token = _site(store)
        old = today - 60 * DAY + 10 * 3_600_000
        _send(store, token, today - DAY + 9 * 3_600_000, old)
        assert _where(pg, today - DAY + 9 * 3_600_000) == partitions.partition_name(today - DAY)
        assert _where(pg, old) == partitions.DEFAULT
        # Sixty days on, that old day is in the window: its cell moves into its own partition.
        made = store.ensure_partitions(old)
        assert partitions.partition_name(old - old % DAY) in made
        assert _where(pg, old) == partitions.partition_name(old - old % DAY)
        assert rows(pg, "SELECT count(*) FROM insight_cells") == [(2,)]
        # Again: nothing left to make.
        assert store.ensure_partitions(old) == []
        # A day's read is planned on that day's partition alone: the others, the default
        # one too, are pruned.
        first = today - DAY
        plan = " ".join(
            str(line)
            for (line,) in rows(
                pg,
                "EXPLAIN SELECT cell FROM insight_cells WHERE start_ms >= "  # noqa: S608
                f"{first} AND start_ms < {first + DAY}",
            )
        )
        scanned = {name for name in store.partitions() if f" {name} " in f" {plan} "}
        assert scanned == {partitions.partition_name(first)}, plan
    finally:
        store.close()


def test_an_unpartitioned_database_keeps_its_cells_when_migrated(pg: str) -> None:
    class Before(CentralStore):
        MIGRATIONS: tuple[Migration, ...] = tuple(
            m for m in CentralStore.MIGRATIONS if m[0] < "0010"
        )

        def maintain(self, at_ms: int) -> None:
            """Nothing: the schema before day partitions."""

    start = now_ms() - now_ms() % DAY - 3 * DAY + 11 * 3_600_000
    before = Before.open(pg)
    try:
        _send(before, _site(before), start)
    finally:
        before.close()
    store = CentralStore.open(pg)
    try:
        assert partitions.DEFAULT in store.partitions()
        assert _where(pg, start) == partitions.partition_name(start - start % DAY)
        assert len(store.cells_between("shop-a", start, start + 1)) == 1
    finally:
        store.close()


#: How each table of central would be laid out on Citus: distributed by ``site`` (the sites'
#: own data, co-located), a reference table (small, read everywhere), or kept on the
#: coordinator (the collector's own bookkeeping). docs/central-scale.md lists the same.
DISTRIBUTED = {
    "check_ins",
    "erasure_receipts",
    "idempotency",
    "identified",
    "insight_cells",
    "product_names",
    "rollup_queue",
    "site_days",
    "sync_items",
}
#: A venue's own rows (its days, its agents merged): distributed by ``venue``, co-located
#: with each other.
BY_VENUE = {"venue_days", "venue_queue"}
REFERENCE = {
    "sites",
    "previous_site_tokens",
    "destinations",
    "users",
    "api_tokens",
    "sessions",
    "model_releases",
}
COORDINATOR = {"audit", "forward_queue", "schema_migrations"}


def test_every_table_has_a_place_when_distributed_by_site(pg: str) -> None:
    CentralStore.open(pg).close()
    tables = {
        str(name)
        for (name,) in rows(
            pg,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
        )
    }
    assert tables == DISTRIBUTED | BY_VENUE | REFERENCE | COORDINATOR
    # A distributed table's every primary key and unique constraint holds the distribution
    # column, so each is checked on one shard; its foreign keys point at reference tables or
    # at another distributed table by site.
    problems = []
    for table, name, kind, columns, target in rows(
        pg,
        "SELECT t.relname, c.conname, c.contype, "
        "array(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.conrelid "
        "AND a.attnum = ANY (c.conkey)), f.relname "
        "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
        "LEFT JOIN pg_class f ON f.oid = c.confrelid "
        "WHERE c.contype IN ('p', 'u', 'f') AND NOT t.relispartition",
    ):
        if table not in DISTRIBUTED | BY_VENUE:
            continue
        column = "site" if table in DISTRIBUTED else "venue"
        if kind in ("p", "u") and column not in columns:
            problems.append(f"{table}.{name} ({kind}) lacks {column}: {columns}")
        if kind == "f" and target not in REFERENCE and column not in columns:
            problems.append(f"{table}.{name} points at {target} without {column}")
    assert problems == []
