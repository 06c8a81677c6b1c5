"""Central's view of its fleet: what each site says of itself when it checks in."""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson

from edge_agent.collector.store import products, rollups
from edge_agent.collector.store.engine import Database, Migration
from edge_agent.core.fleet import CheckIn, from_document

MIGRATIONS: tuple[Migration, ...] = (
    # What each site says of itself in its check-ins (NULL until its first): its name, time
    # zone and currency, and its latest health report (JSON, `core.fleet.CheckIn`).
    (
        "0004_check_ins",
        """
        ALTER TABLE sites ADD COLUMN name TEXT;
        ALTER TABLE sites ADD COLUMN timezone TEXT;
        ALTER TABLE sites ADD COLUMN currency TEXT;
        CREATE TABLE check_ins (
            site TEXT PRIMARY KEY REFERENCES sites (site),
            sent_ms BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            report TEXT NOT NULL
        )
        """,
    ),
)


@dataclass(frozen=True, slots=True)
class FleetSite:
    """A site, when it was last heard from, and its latest check-in (None: never)."""

    site: str
    venue: str
    name: str | None
    created_ms: int
    last_seen_ms: int | None
    received_ms: int | None
    report: CheckIn | None


class FleetStore(Database):
    """Check-ins: each site's latest health report."""

    def record_check_in(self, site: str, report: CheckIn, received_ms: int) -> list[str]:
        """Keep ``report`` as the site's latest (unless a later one is kept already), take
        its name, time zone and currency (a new zone has the site's days made again) and the
        product names it carries, and mark the site seen at ``received_ms``. Returns the
        products whose names its next check-in is asked for (`products.wanted`)."""
        # The names are kept by product, not as part of the site's health report.
        kept = orjson.dumps(replace(report, products={}).as_document()).decode()
        with self.write() as tx:
            newer = tx.run(
                "INSERT INTO check_ins (site, sent_ms, received_ms, report) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET sent_ms = excluded.sent_ms, "
                "received_ms = excluded.received_ms, report = excluded.report "
                "WHERE check_ins.sent_ms <= excluded.sent_ms",
                (site, report.sent_ms, received_ms, kept),
            )
            if newer:
                tx.run(
                    "UPDATE sites SET name = ?, timezone = ?, currency = ? WHERE site = ?",
                    (report.name or None, report.timezone, report.currency or None, site),
                )
                rollups.zone_changed(tx, site, report.timezone)
            tx.run(
                "UPDATE sites SET last_seen_ms = ? WHERE site = ? "
                "AND (last_seen_ms IS NULL OR last_seen_ms < ?)",
                (received_ms, site, received_ms),
            )
            products.named(tx, site, report.products, received_ms)
            return products.wanted(tx, site)

    def fleet(self) -> list[FleetSite]:
        """Every site with its latest check-in, by id."""
        return [
            FleetSite(
                site,
                venue,
                name,
                created,
                seen,
                received,
                None if report is None else from_document(orjson.loads(report)),
            )
            for site, venue, name, created, seen, received, report in self.read(
                "SELECT s.site, s.venue, s.name, s.created_ms, s.last_seen_ms, c.received_ms, "
                "c.report FROM sites s LEFT JOIN check_ins c ON c.site = s.site ORDER BY s.site"
            )
        ]
