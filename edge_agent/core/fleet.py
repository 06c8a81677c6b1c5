"""A site's check-in, and central's verdict on it: healthy, degraded or silent, with reasons
an analyst can act on.

Pure: the report, when it arrived and the time now are given. Durations the site measured
(broker down, outbox age, last sync) are taken on the site's clock, from the report's
``sent_ms``, so a site clock that is off does not stretch them; only silence is measured on
central's clock. The thresholds are in docs/fleet-health.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from edge_agent.core.localtime import zone
from edge_agent.core.sync import CLOCK_WARNING_S
from edge_agent.core.wireform import PROTOCOL

Health = Literal["healthy", "degraded", "silent"]
HEALTH: tuple[Health, ...] = ("healthy", "degraded", "silent")
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


@dataclass(frozen=True, slots=True)
class CheckIn:
    """What a site says of itself (``POST /v1/checkin``; its form is
    `edge_agent.core.wireform.CHECKIN_SCHEMA`)."""

    site: str
    sent_ms: int
    version: str
    uptime_s: int
    name: str
    timezone: str
    currency: str
    #: ``connected``, ``disconnected``, ``stalled`` or ``unknown``, and since when (site clock).
    broker: str
    broker_since_ms: int | None
    outbox_items: int
    outbox_oldest_ms: int | None
    dead_letters_last_hour: int
    duplicates_last_hour: int
    disk_free_bytes: int
    disk_free_share: float
    #: The serving version of each model, by name.
    models: Mapping[str, str]
    last_sync_ms: int | None
    #: Central's clock minus the site's, seconds (None: not measured yet).
    clock_offset_s: float | None
    protocol: int = PROTOCOL
    #: The catalogue's name of each product central asked for ("" where it has none).
    products: Mapping[str, str] = field(default_factory=dict)

    def as_document(self) -> dict[str, object]:
        """The check-in as it travels (JSON-ready)."""
        document = asdict(self)
        document["models"] = dict(self.models)
        document["products"] = dict(self.products)
        return document


def from_document(document: Mapping[str, Any]) -> CheckIn:
    """A `CheckIn` from a document `edge_agent.core.wireform.checkin_problem` accepted."""

    def ms(key: str) -> int | None:
        value = document[key]
        return None if value is None else int(value)

    offset = document["clock_offset_s"]
    # JSON Schema counts 5.0 as an integer: int() so the database always gets one.
    return CheckIn(
        site=str(document["site"]),
        sent_ms=int(document["sent_ms"]),
        version=str(document["version"]),
        uptime_s=int(document["uptime_s"]),
        name=str(document["name"]),
        timezone=str(document["timezone"]),
        currency=str(document["currency"]),
        broker=str(document["broker"]),
        broker_since_ms=ms("broker_since_ms"),
        outbox_items=int(document["outbox_items"]),
        outbox_oldest_ms=ms("outbox_oldest_ms"),
        dead_letters_last_hour=int(document["dead_letters_last_hour"]),
        duplicates_last_hour=int(document["duplicates_last_hour"]),
        disk_free_bytes=int(document["disk_free_bytes"]),
        disk_free_share=float(document["disk_free_share"]),
        models={str(k): str(v) for k, v in document["models"].items()},
        last_sync_ms=ms("last_sync_ms"),
        clock_offset_s=None if offset is None else float(offset),
        products={str(k): str(v) for k, v in document.get("products", {}).items()},
    )


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a site stops being healthy (docs/fleet-health.md lists them)."""

    #: No check-in for longer than this: silent (``serve --silent-after-s``).
    silent_after_ms: int = 15 * MINUTE_MS
    #: The broker not connected for longer than this.
    broker_down_ms: int = 2 * MINUTE_MS
    #: The oldest item waiting for central older than this: the sync is failing.
    outbox_oldest_ms: int = HOUR_MS
    #: Dead letters in the last hour from this many.
    dead_letters_per_hour: int = 10
    #: Free space of the data disk under this share.
    disk_free_share: float = 0.10
    #: The site's clock off central's by more than this (the agent's own warning's bound).
    clock_offset_s: float = CLOCK_WARNING_S
    #: No successful sync for longer than this (the default sync runs every 15 min).
    last_sync_ms: int = 2 * HOUR_MS


@dataclass(frozen=True, slots=True)
class Verdict:
    """A site's health and why it is not healthy (empty when it is)."""

    health: Health
    reasons: tuple[str, ...] = field(default=())


def judge(
    report: CheckIn | None,
    received_ms: int | None,
    last_seen_ms: int | None,
    now_ms: int,
    thresholds: Thresholds,
) -> Verdict:
    """The verdict on a site from its latest check-in (``report``, which central received at
    ``received_ms``; None: it never checked in) and when central last heard from it, by a
    sync or a check-in (``last_seen_ms``)."""
    silent = thresholds.silent_after_ms
    # Syncs come every [sync] every_s (15 min by default, plus jitter): a site heard from by
    # its syncs alone is silent only past the last-sync bound, or it would flap every sync.
    synced_recently = last_seen_ms is not None and now_ms - last_seen_ms <= max(
        silent, thresholds.last_sync_ms
    )
    if report is None or received_ms is None:
        if last_seen_ms is None:
            return Verdict("silent", ("never heard from: no check-in and no sync yet",))
        ago = duration(now_ms - last_seen_ms)
        if not synced_recently:
            return Verdict("silent", (f"silent: never checked in, last sync {ago} ago",))
        return Verdict(
            "degraded",
            (
                f"never checked in: agent older than the check-in feature? (last sync {ago} "
                "ago); upgrade it to see its health",
            ),
        )
    if now_ms - received_ms > silent:
        quiet = duration(now_ms - received_ms)
        if synced_recently and last_seen_ms is not None and last_seen_ms > received_ms:
            return Verdict(
                "degraded",
                (
                    f"no check-in for {quiet}, though it synced {duration(now_ms - last_seen_ms)}"
                    " ago: its check-ins fail (the agent logs check_in_failed with the reason)",
                ),
            )
        return Verdict(
            "silent",
            (
                f"silent: no check-in for {quiet} "
                f"(last at {site_time(report.sent_ms, report.timezone)} site time)",
            ),
        )
    reasons = problems(report, thresholds)
    return Verdict("degraded" if reasons else "healthy", reasons)


def problems(report: CheckIn, thresholds: Thresholds) -> tuple[str, ...]:
    """What in a fresh check-in is wrong, each in words an analyst can act on."""
    t = thresholds
    at = report.sent_ms
    found: list[str] = []
    if report.broker != "connected":
        since = report.broker_since_ms
        down_ms = at - since if since is not None else report.uptime_s * 1000
        if down_ms > t.broker_down_ms:
            found.append(f"broker {report.broker} for {duration(down_ms)}: no event flows")
    oldest = report.outbox_oldest_ms
    if oldest is not None and at - oldest > t.outbox_oldest_ms:
        found.append(
            f"outbox oldest item {duration(at - oldest)} old, {report.outbox_items} waiting "
            "(sync failing?)"
        )
    if report.dead_letters_last_hour >= t.dead_letters_per_hour:
        found.append(f"{report.dead_letters_last_hour} dead letters in the last hour")
    if report.disk_free_share < t.disk_free_share:
        found.append(
            f"disk {1 - report.disk_free_share:.0%} full ({size(report.disk_free_bytes)} free)"
        )
    offset = report.clock_offset_s
    if offset is not None and abs(offset) > t.clock_offset_s:
        way = "behind" if offset > 0 else "ahead of"
        found.append(f"clock {duration(abs(offset) * 1000)} {way} central")
    last = report.last_sync_ms
    if last is None:
        if report.uptime_s * 1000 > t.last_sync_ms:
            found.append(
                f"no successful sync since the agent started {duration(report.uptime_s * 1000)} ago"
            )
    elif at - last > t.last_sync_ms:
        found.append(f"last successful sync {duration(at - last)} ago")
    if not report.models:
        found.append("no model serving: staff screens show no recommendations")
    return tuple(found)


def duration(ms: float) -> str:
    """A span as people say it: ``45 s``, ``14 min``, ``2 h 13 min``, ``3 d 4 h``."""
    s = max(0, int(ms // 1000))
    if s < 60:
        return f"{s} s"
    minutes = s // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def size(n: int) -> str:
    """Bytes as people say them: ``830 MB``, ``1.2 GB``."""
    if n >= 10**9:
        return f"{n / 10**9:.1f} GB"
    for unit, scale in (("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


def site_time(ms: int, timezone: str) -> str:
    """``HH:MM`` at the site (UTC when its zone is unknown here)."""
    try:
        tz = zone(timezone)
    except (ValueError, OSError):
        # OSError too: zoneinfo raises IsADirectoryError for a region such as "Europe", and
        # the name comes from the site, whose tzdata may also be newer than central's.
        tz = zone("UTC")
    return f"{datetime.fromtimestamp(ms / 1000, tz):%H:%M}"
