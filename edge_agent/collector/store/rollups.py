"""Each site's days, rolled up from its hour cells for the dashboard and the exports.

A day is the site's own (its time zone, from its check-ins; UTC until it says one), so a
day here is what the store manager calls a day. Storing an hour cell queues its hour
(`queue_hour`, in the same transaction); the rollup worker (`edge_agent.collector.rollup`)
takes queued hours, recomputes their days from the stored cells and writes them here with
their figures in columns that add up across days and sites (footfall, orders, revenue per
currency, answers), so an overview of a thousand sites over a month is one indexed scan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import orjson

from edge_agent.collector.store import products
from edge_agent.collector.store.engine import Database, Migration, Tx, now_ms
from edge_agent.collector.summary import DAY_SUMS

MIGRATIONS: tuple[Migration, ...] = (
    (
        "0007_rollups",
        """
        CREATE TABLE rollup_queue (
            site TEXT NOT NULL REFERENCES sites (site),
            start_ms BIGINT NOT NULL,
            queued_ms BIGINT NOT NULL,
            PRIMARY KEY (site, start_ms)
        );
        CREATE TABLE site_days (
            site TEXT NOT NULL REFERENCES sites (site),
            day TEXT NOT NULL,
            venue TEXT NOT NULL,
            timezone TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            end_ms BIGINT NOT NULL,
            k INTEGER NOT NULL,
            hours INTEGER NOT NULL,
            suppressed_hours INTEGER NOT NULL,
            suppressed INTEGER NOT NULL,
            footfall_in BIGINT NOT NULL,
            footfall_out BIGINT NOT NULL,
            visits BIGINT NOT NULL,
            visitors BIGINT NOT NULL,
            identified_visits BIGINT NOT NULL,
            orders BIGINT NOT NULL,
            unpriced_orders BIGINT NOT NULL,
            revenue DOUBLE PRECISION NOT NULL,
            currency TEXT NOT NULL,
            items BIGINT NOT NULL,
            nps_answers BIGINT NOT NULL,
            promoters BIGINT NOT NULL,
            detractors BIGINT NOT NULL,
            ces_answers BIGINT NOT NULL,
            ces_sum BIGINT NOT NULL,
            duplicates BIGINT NOT NULL,
            dead_letters BIGINT NOT NULL,
            detail TEXT NOT NULL,
            computed_ms BIGINT NOT NULL,
            PRIMARY KEY (site, day)
        );
        CREATE INDEX site_days_day ON site_days (day, site);
        CREATE VIEW bi_site_days AS
            SELECT d.site, s.name AS site_name, d.venue, d.timezone, d.day,
                   d.start_ms, d.end_ms, d.k, d.hours, d.suppressed_hours, d.suppressed,
                   d.footfall_in, d.footfall_out, d.visits, d.visitors, d.identified_visits,
                   d.orders, d.unpriced_orders, d.revenue, d.currency, d.items,
                   d.nps_answers, d.promoters, d.detractors, d.ces_answers, d.ces_sum,
                   d.duplicates, d.dead_letters
            FROM site_days d JOIN sites s ON s.site = d.site;
        CREATE VIEW bi_sites AS
            SELECT site, name AS site_name, venue, COALESCE(timezone, 'UTC') AS timezone,
                   currency, created_ms, last_seen_ms
            FROM sites
        """,
    ),
    # What a summary shows of each day (`summary.day_summary`): a site's in site_days, a
    # venue's, its agents' hours merged, in venue_days. Every stored hour is queued again so
    # that the days made before have theirs.
    (
        "0012_day_summaries",
        """
        ALTER TABLE site_days ADD COLUMN summary TEXT;
        CREATE TABLE venue_days (
            venue TEXT NOT NULL,
            day TEXT NOT NULL,
            timezone TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            end_ms BIGINT NOT NULL,
            k INTEGER NOT NULL,
            summary TEXT NOT NULL,
            computed_ms BIGINT NOT NULL,
            PRIMARY KEY (venue, day)
        );
        CREATE TABLE venue_queue (
            venue TEXT NOT NULL,
            day TEXT NOT NULL,
            queued_ms BIGINT NOT NULL,
            PRIMARY KEY (venue, day)
        );
        INSERT INTO rollup_queue (site, start_ms, queued_ms)
            SELECT site, start_ms, 0 FROM insight_cells WHERE 1 = 1 ON CONFLICT DO NOTHING
        """,
    ),
)

#: The columns of a rolled-up day, in the order `RollupStore.save_days` writes them.
DAY_COLUMNS = (
    "site",
    "day",
    "venue",
    "timezone",
    "start_ms",
    "end_ms",
    "k",
    "hours",
    "suppressed_hours",
    "suppressed",
    *DAY_SUMS,
    "currency",
    "detail",
    "computed_ms",
)


@dataclass(frozen=True, slots=True)
class SiteDay:
    """One site's day as rolled up: its figures that add up, and the rest in ``detail``.

    ``suppressed`` is true when every hour was seen by fewer than ``k`` visitors: then every
    sum is 0 and ``detail`` is empty. ``revenue`` is in ``currency``; orders in other
    currencies are in ``detail["other_revenue"]``.
    """

    site: str
    day: str
    venue: str
    timezone: str
    start_ms: int
    end_ms: int
    k: int
    hours: int
    suppressed_hours: int
    suppressed: bool
    sums: dict[str, float]
    currency: str
    detail: dict[str, object]
    #: The day as a summary row shows it (`summary.day_summary`); None when read back.
    summary: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class VenueDay:
    """A venue's day in its time zone, its agents' hours merged (`summary.day_summary`)."""

    venue: str
    day: str
    timezone: str
    start_ms: int
    end_ms: int
    k: int
    summary: dict[str, object]


@dataclass(frozen=True, slots=True)
class QueuedDay:
    """A site's day to roll up: its bounds in the site's time zone."""

    site: str
    venue: str
    timezone: str
    day: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class DaySums:
    """Days added up: per what (a site, a day or a venue) and currency, how many days, how
    many of them wholly suppressed, their suppressed hours, and their sums."""

    key: str
    currency: str
    days: int
    suppressed_days: int
    suppressed_hours: int
    sums: dict[str, float]


@dataclass(frozen=True, slots=True)
class Described:
    """A site as the dashboard names it: its venue, and what its check-ins said of it."""

    site: str
    venue: str
    name: str | None
    timezone: str
    currency: str | None


def queue_hour(tx: Tx, site: str, start_ms: int) -> None:
    """Mark the day of a site's hour for rolling up again (its cell was stored or replaced)."""
    tx.run(
        "INSERT INTO rollup_queue (site, start_ms, queued_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (site, start_ms) DO UPDATE SET queued_ms = excluded.queued_ms",
        (site, start_ms, now_ms()),
    )


def zone_changed(tx: Tx, site: str, timezone: str) -> None:
    """The site now keeps ``timezone``: if its days were made in another zone, they begin
    at other hours now, so they are dropped and every hour of the site queued again."""
    if not tx.rows(
        "SELECT 1 FROM site_days WHERE site = ? AND timezone <> ? LIMIT 1", (site, timezone)
    ):
        return
    tx.run("DELETE FROM site_days WHERE site = ?", (site,))
    tx.run(
        "INSERT INTO rollup_queue (site, start_ms, queued_ms) "
        "SELECT site, start_ms, ? FROM insight_cells WHERE site = ? "
        "ON CONFLICT (site, start_ms) DO UPDATE SET queued_ms = excluded.queued_ms",
        (now_ms(), site),
    )


def _where(
    first_day: str, last_day: str, site: str | None, venue: str | None
) -> tuple[str, list[object]]:
    """The WHERE clause of days from ``first_day`` to ``last_day``, of one site or venue."""
    clauses = ["day >= ?", "day <= ?"]
    params: list[object] = [first_day, last_day]
    for column, value in (("site", site), ("venue", venue)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def _rolled(
    first_day: str, last_day: str, k: int, venue: str | None, site: str | None
) -> tuple[str, str, list[object]]:
    """Where `RollupStore.rolled_days` reads: a site's days when ``site`` is named, else the
    venues' (the table, its WHERE clause and parameters)."""
    where, params = _where(first_day, last_day, site, venue)
    if site is not None:
        return "site_days", f"{where} AND k = ? AND summary IS NOT NULL", [*params, k]
    return "venue_days", f"{where} AND k = ?", [*params, k]


class RollupStore(Database):
    """The queue of hours to roll up, and the rolled-up days."""

    def queued_hours(self, limit: int) -> list[tuple[str, str, str, int, int]]:
        """Up to ``limit`` queued hours, oldest first: site, venue, time zone (UTC when the
        site never said), hour start and when it was queued."""
        return [
            (str(site), str(venue), str(tz), int(start), int(queued))
            for site, venue, tz, start, queued in self.read(
                "SELECT q.site, s.venue, COALESCE(s.timezone, 'UTC'), q.start_ms, q.queued_ms "
                "FROM rollup_queue q JOIN sites s ON s.site = q.site "
                "ORDER BY q.queued_ms, q.site, q.start_ms LIMIT ?",
                (limit,),
            )
        ]

    def queue_depth(self) -> int:
        """How many hours wait to be rolled up."""
        return int(self.read("SELECT count(*) FROM rollup_queue")[0][0])

    def cells_between(self, site: str, start_ms: int, end_ms: int) -> list[tuple[int, str | None]]:
        """A site's stored hour cells in ``[start_ms, end_ms)``: start and JSON document
        (None when the site released only a suppressed marker)."""
        return [
            (int(start), None if cell is None else str(cell))
            for start, cell in self.read(
                "SELECT start_ms, cell FROM insight_cells WHERE site = ? AND start_ms >= ? "
                "AND start_ms < ? ORDER BY start_ms",
                (site, start_ms, end_ms),
            )
        ]

    def save_days(
        self,
        days: Sequence[SiteDay],
        done: Sequence[tuple[str, int, int]],
        venue_days: Sequence[tuple[str, str]] = (),
        venue_copies: Sequence[VenueDay] = (),
    ) -> None:
        """Write rolled-up days, take their hours off the queue, queue the ``venue_days``
        (venue, day) they are part of and write the ``venue_copies`` (the days of venues of
        one site), in one transaction.

        ``done`` holds (site, hour start, queued_ms) as read: an hour queued again since (its
        cell replaced while the day was computed) stays queued.
        """
        at = now_ms()
        columns = (*DAY_COLUMNS, "summary")
        placeholders = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
        with self.write() as tx:
            for day in days:
                tx.run(
                    f"INSERT INTO site_days ({', '.join(columns)}) VALUES ({placeholders}) "
                    f"ON CONFLICT (site, day) DO UPDATE SET {updates}",
                    (
                        day.site,
                        day.day,
                        day.venue,
                        day.timezone,
                        day.start_ms,
                        day.end_ms,
                        day.k,
                        day.hours,
                        day.suppressed_hours,
                        int(day.suppressed),
                        *(day.sums.get(column, 0) for column in DAY_SUMS),
                        day.currency,
                        orjson.dumps(day.detail).decode(),
                        at,
                        None if day.summary is None else orjson.dumps(day.summary).decode(),
                    ),
                )
                top = cast("list[list[object]]", day.detail.get("top_products") or [])
                products.seen(tx, day.site, (str(entry[0]) for entry in top), at)
            for site, start_ms, queued_ms in done:
                tx.run(
                    "DELETE FROM rollup_queue WHERE site = ? AND start_ms = ? AND queued_ms <= ?",
                    (site, start_ms, queued_ms),
                )
            for venue, day_label in dict.fromkeys(venue_days):
                tx.run(
                    "INSERT INTO venue_queue (venue, day, queued_ms) VALUES (?, ?, ?) "
                    "ON CONFLICT (venue, day) DO UPDATE SET queued_ms = excluded.queued_ms",
                    (venue, day_label, at),
                )
            for venue_day in venue_copies:
                _write_venue_day(tx, venue_day, at)

    def queued_venue_days(self, limit: int) -> list[tuple[str, str, int]]:
        """Up to ``limit`` queued venue days, oldest first: venue, day, when queued."""
        return [
            (str(venue), str(day), int(queued))
            for venue, day, queued in self.read(
                "SELECT venue, day, queued_ms FROM venue_queue ORDER BY queued_ms, venue, day "
                "LIMIT ?",
                (limit,),
            )
        ]

    def save_venue_days(
        self, days: Sequence[VenueDay], done: Sequence[tuple[str, str, int]]
    ) -> None:
        """Write venue days and take them off the queue (unless queued again since), in one
        transaction."""
        at = now_ms()
        with self.write() as tx:
            for day in days:
                _write_venue_day(tx, day, at)
            for venue, day_label, queued_ms in done:
                tx.run(
                    "DELETE FROM venue_queue WHERE venue = ? AND day = ? AND queued_ms <= ?",
                    (venue, day_label, queued_ms),
                )

    def rolled_days(
        self, first_day: str, last_day: str, k: int, venue: str | None, site: str | None
    ) -> list[tuple[str, str | None, str, int, str]]:
        """The summaries the rollup made at ``k`` from ``first_day`` to ``last_day``: of each
        venue (or the one named), or of ``site`` when named. Rows: venue, site (None for a
        venue's), day, start_ms, summary JSON."""
        table, where, params = _rolled(first_day, last_day, k, venue, site)
        columns = "venue, site" if site is not None else "venue, NULL"
        return [
            (str(v), None if s is None else str(s), str(d), int(start), str(summary))
            for v, s, d, start, summary in self.read(
                f"SELECT {columns}, day, start_ms, summary FROM {table} WHERE {where}", params
            )
        ]

    def count_rolled_days(
        self, first_day: str, last_day: str, k: int, venue: str | None, site: str | None
    ) -> int:
        """How many rows `rolled_days` would return (without reading their summaries)."""
        table, where, params = _rolled(first_day, last_day, k, venue, site)
        return int(self.read(f"SELECT count(*) FROM {table} WHERE {where}", params)[0][0])

    def pending(
        self, first_ms: int, end_ms: int, venue: str | None, site: str | None
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
        """What the rollup has yet to do in ``[first_ms, end_ms)``: queued hours (site, venue,
        start) and queued venue days (venue, day), of one venue or site when named."""
        clauses = ["q.start_ms >= ?", "q.start_ms < ?"]
        params: list[object] = [first_ms, end_ms]
        for column, value in (("s.venue", venue), ("s.site", site)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        hours = [
            (str(s), str(v), int(start))
            for s, v, start in self.read(
                "SELECT q.site, s.venue, q.start_ms FROM rollup_queue q "
                f"JOIN sites s ON s.site = q.site WHERE {' AND '.join(clauses)}",
                params,
            )
        ]
        kept = [] if venue is None else [venue]
        venues = [
            (str(v), str(d))
            for v, d in self.read(
                "SELECT venue, day FROM venue_queue"
                + (" WHERE venue = ?" if venue is not None else ""),
                kept,
            )
        ]
        return hours, venues

    def site_days(
        self, first_day: str, last_day: str, site: str | None = None, venue: str | None = None
    ) -> list[SiteDay]:
        """The rolled-up days from ``first_day`` to ``last_day`` (site-local, inclusive), of
        every site, one site or one venue's, in order of site and day."""
        where, params = _where(first_day, last_day, site, venue)
        return [
            _site_day(row)
            for row in self.read(
                f"SELECT {', '.join(DAY_COLUMNS[:-1])} FROM site_days "
                f"WHERE {where} ORDER BY site, day",
                params,
            )
        ]

    def sums_by(
        self,
        first_day: str,
        last_day: str,
        by: str,
        venue: str | None = None,
        site: str | None = None,
    ) -> list[DaySums]:
        """The days' sums added up per ``by`` (``site``, ``day`` or ``venue``) and currency,
        of every site, one venue's or one site. Computed by the database: an overview of a whole
        fleet never loads its days."""
        if by not in ("site", "day", "venue"):
            raise ValueError(f"cannot add up days by {by!r}")
        where, params = _where(first_day, last_day, site, venue)
        sums = ", ".join(f"SUM({c})" for c in DAY_SUMS)
        return [
            DaySums(
                str(key),
                str(currency),
                int(days),
                int(suppressed),
                int(hours),
                dict(zip(DAY_SUMS, (float(v) for v in values), strict=True)),
            )
            for key, currency, days, suppressed, hours, *values in self.read(
                f"SELECT {by}, currency, COUNT(*), SUM(suppressed), SUM(suppressed_hours), "
                f"{sums} FROM site_days WHERE {where} "
                f"GROUP BY {by}, currency ORDER BY {by}, currency",
                params,
            )
        ]

    def venues(self) -> dict[str, tuple[str, int]]:
        """Each venue's time zone, the one most of its sites keep (UTC for a site that never
        said; ties to the first by name: a venue is one place, so they mostly agree), and how
        many sites it has."""
        counts: dict[str, Counter[str]] = {}
        for venue, tz, n in self.read(
            "SELECT venue, COALESCE(timezone, 'UTC'), count(*) FROM sites GROUP BY venue, "
            "COALESCE(timezone, 'UTC')"
        ):
            counts.setdefault(str(venue), Counter())[str(tz)] = int(n)
        return {venue: (majority(found), found.total()) for venue, found in counts.items()}

    def venue_zones(self) -> dict[str, str]:
        """Each venue's time zone (`venues`)."""
        return {venue: tz for venue, (tz, _) in self.venues().items()}

    def described_sites(self, venue: str | None = None, site: str | None = None) -> list[Described]:
        """Every site (or one venue's, or one site), by id, with its name, time zone (UTC when
        the site never said one) and currency."""
        kept = [(c, v) for c, v in (("venue", venue), ("site", site)) if v is not None]
        where = ("WHERE " + " AND ".join(f"{c} = ?" for c, _ in kept)) if kept else ""
        params = [v for _, v in kept]
        return [
            Described(str(site), str(its_venue), name, str(tz), currency)
            for site, its_venue, name, tz, currency in self.read(
                "SELECT site, venue, name, COALESCE(timezone, 'UTC'), currency FROM sites "
                f"{where} ORDER BY site",
                params,
            )
        ]


def _write_venue_day(tx: Tx, day: VenueDay, at_ms: int) -> None:
    # A venue whose zone changed has its days of the other zone dropped: they begin at other
    # hours (its hours are queued again with its sites').
    tx.run("DELETE FROM venue_days WHERE venue = ? AND timezone <> ?", (day.venue, day.timezone))
    if not day.summary.get("sites"):
        # No agent's hour falls in it (an agent in another zone has a day that only overlaps
        # it): a summary made from the hours has no such row, so neither does the rollup.
        tx.run("DELETE FROM venue_days WHERE venue = ? AND day = ?", (day.venue, day.day))
        return
    tx.run(
        "INSERT INTO venue_days (venue, day, timezone, start_ms, end_ms, k, summary, "
        "computed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (venue, day) DO "
        "UPDATE SET timezone = excluded.timezone, start_ms = excluded.start_ms, "
        "end_ms = excluded.end_ms, k = excluded.k, summary = excluded.summary, "
        "computed_ms = excluded.computed_ms",
        (
            day.venue,
            day.day,
            day.timezone,
            day.start_ms,
            day.end_ms,
            day.k,
            orjson.dumps(day.summary).decode(),
            at_ms,
        ),
    )


def majority(zones: Counter[str]) -> str:
    """The zone most sites keep, the first by name among equals."""
    return min(zones, key=lambda z: (-zones[z], z))


def _site_day(row: Sequence[object]) -> SiteDay:
    named = dict(zip(DAY_COLUMNS, row, strict=False))
    return SiteDay(
        site=str(named["site"]),
        day=str(named["day"]),
        venue=str(named["venue"]),
        timezone=str(named["timezone"]),
        start_ms=int(str(named["start_ms"])),
        end_ms=int(str(named["end_ms"])),
        k=int(str(named["k"])),
        hours=int(str(named["hours"])),
        suppressed_hours=int(str(named["suppressed_hours"])),
        suppressed=bool(named["suppressed"]),
        sums={c: float(str(named[c])) for c in DAY_SUMS},
        currency=str(named["currency"]),
        detail=orjson.loads(str(named["detail"])),
    )
