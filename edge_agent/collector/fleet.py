"""Fleet health (docs/fleet-health.md): sites check in (``POST /v1/checkin``), admins read
each site's verdict (``GET /v1/fleet``) and monitoring scrapes the fleet's figures
(``GET /metrics``).

The verdicts are worked out when asked, from each site's latest check-in and central's clock
(`edge_agent.core.fleet.judge`), never stored: a site that stops checking in turns silent
with nothing written. ``/metrics`` holds fleet-wide figures only, no series per site, so a
fleet of ten thousand sites is still a dozen series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from edge_agent import __version__, logs
from edge_agent.collector import wire
from edge_agent.collector.auth import AdminBearer, SiteBearer, admin, site_of, viewer
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.openapi import CheckedInBody, FleetBody, errors, raw_body
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import now_ms
from edge_agent.collector.store.fleet import FleetSite
from edge_agent.core.fleet import HEALTH, Thresholds, duration, judge
from edge_agent.core.wireform import CHECKIN_SCHEMA

logger = logging.getLogger("edge_agent.collector")
router = APIRouter(route_class=GuardedRoute)
# The routes' summary= documents them: FastAPI would publish a docstring as the operation's
# description in the OpenAPI document.

#: ``serve --silent-after-s``'s default: a site that checks in every minute has missed 15.
SILENT_AFTER_S = 900


@dataclass(frozen=True, slots=True)
class Options:
    """How the fleet is judged and shown (``serve --silent-after-s``, ``--metrics-open``)."""

    silent_after_s: float = SILENT_AFTER_S
    metrics_open: bool = False

    @property
    def thresholds(self) -> Thresholds:
        """The verdict's thresholds, with this silence bound."""
        return Thresholds(silent_after_ms=int(self.silent_after_s * 1000))


def install(app: FastAPI, options: Options | None = None) -> None:
    """Add the fleet's routes to the collector's ``app``, judged with ``options``."""
    app.state.fleet = options or Options()
    registry = CollectorRegistry()
    registry.register(FleetFigures(app))
    app.state.fleet_registry = registry
    app.include_router(router)


def configure(app: FastAPI, options: Options) -> None:
    """Judge the fleet of ``app`` (made by `create_app`) with ``options`` from now on."""
    app.state.fleet = options


def worst_first(listed: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """Sites as ``GET /v1/fleet`` lists them, silent first, then degraded, then healthy,
    each by id."""
    order: dict[str, int] = {health: n for n, health in enumerate(reversed(HEALTH))}
    return sorted(listed, key=lambda e: (order[str(e["health"])], str(e["site"])))


def table(listed: Sequence[dict[str, object]]) -> str:
    """The fleet as an analyst reads it: one line per site, the worst first, with its first
    reason and how long ago it checked in (``edge-agent-collector fleet``)."""
    rows = [("SITE", "NAME", "HEALTH", "CHECK-IN", "REASON")]
    for e in worst_first(listed):
        seen = e["check_in"]
        age = "never" if not isinstance(seen, dict) else duration(seen["age_s"] * 1000) + " ago"
        reasons = cast("list[str]", e["reasons"])
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        rows.append(
            (
                str(e["site"]),
                str(e["name"] or ""),
                str(e["health"]),
                age,
                (reasons[0] + more) if reasons else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


# --- what sites send -----------------------------------------------------------------------


@router.post(
    "/v1/checkin",
    response_model=CheckedInBody,
    responses=errors(400, 401, 403, 413, 415, 422),
    openapi_extra=raw_body(CHECKIN_SCHEMA),
    summary="A site's health report: sent every [sync] check_in_s, data or not",
)
async def check_in(request: Request, bearer: SiteBearer) -> dict[str, object]:
    site = await site_of(bearer.credentials if bearer else None, request)
    wire.check_content_type(request.headers.get("content-type"))
    # The body limit of the app (a small JSON body) holds before this reads it.
    raw = await request.body()
    data = await run_in_threadpool(wire.decompress, raw, request.headers.get("content-encoding"))
    limits: wire.Limits = request.app.state.limits
    received = now_ms()
    report = wire.parse_checkin(data, site.site, wire.Clock(received, limits.skew_ms))
    store: CentralStore = request.app.state.store
    wanted = await run_in_threadpool(store.record_check_in, site.site, report, received)
    # Every site every minute: worth a line only when asked for.
    logs.log(logger, logging.DEBUG, "check_in_stored", "check-in stored", site=site.site)
    return {"received_ms": received, "products_wanted": wanted}


# --- what admins read ----------------------------------------------------------------------


def entries(sites: Sequence[FleetSite], at_ms: int, options: Options) -> list[dict[str, object]]:
    """Each site as ``GET /v1/fleet`` shows it: its verdict, reasons and latest figures."""
    thresholds = options.thresholds
    out: list[dict[str, object]] = []
    for s in sites:
        verdict = judge(s.report, s.received_ms, s.last_seen_ms, at_ms, thresholds)
        report = s.report
        out.append(
            {
                "site": s.site,
                "venue": s.venue,
                "name": s.name,
                "health": verdict.health,
                "reasons": list(verdict.reasons),
                "last_seen_ms": s.last_seen_ms,
                "check_in": None
                if s.received_ms is None
                else {"received_ms": s.received_ms, "age_s": max(0, at_ms - s.received_ms) // 1000},
                "report": None if report is None else report.as_document(),
            }
        )
    return out


def counts(listed: Iterable[dict[str, object]]) -> dict[str, int]:
    """How many sites have each verdict (every verdict named, 0 included)."""
    found: dict[str, int] = dict.fromkeys(HEALTH, 0)
    for entry in listed:
        found[str(entry["health"])] += 1
    return found


@router.get(
    "/v1/fleet",
    response_model=FleetBody,
    responses=errors(401, 403),
    dependencies=[Depends(viewer)],
    summary="Every site's health (healthy, degraded, silent) with the reasons, and counts",
)
async def fleet(request: Request) -> dict[str, object]:
    store: CentralStore = request.app.state.store
    options: Options = request.app.state.fleet
    sites = await run_in_threadpool(store.fleet)
    at = now_ms()
    listed = entries(sites, at, options)
    return {
        "now_ms": at,
        "silent_after_s": options.silent_after_s,
        "counts": counts(listed),
        "sites": listed,
    }


# --- what monitoring scrapes ---------------------------------------------------------------


async def metrics_reader(request: Request, bearer: AdminBearer) -> None:
    """A dependency of ``/metrics``: the admin token, unless ``serve --metrics-open``.

    Raises:
        wire.WireError: 401, no admin token or another one.
    """
    options: Options = request.app.state.fleet
    if not options.metrics_open:
        await admin(request, bearer)


MetricsReader = Annotated[None, Depends(metrics_reader)]


@router.get(
    "/metrics",
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **errors(401, 403),
    },
    summary="The fleet's figures for Prometheus (no series per site)",
)
async def metrics(request: Request, _reader: MetricsReader) -> Response:
    registry: CollectorRegistry = request.app.state.fleet_registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


class FleetFigures(Collector):
    """The fleet's figures, read from the store when scraped. The figures of a report count
    only while its site is not silent: a dead site's last outbox is no news."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the registry then never reads the store just to learn names."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The figures (an unreachable database fails the scrape, as it should)."""
        store: CentralStore = self.app.state.store
        options: Options = self.app.state.fleet
        at = now_ms()
        sites = store.fleet()
        listed = entries(sites, at, options)
        by_state = GaugeMetricFamily(
            "edge_collector_sites", "Registered sites by verdict", labels=["state"]
        )
        for state, n in counts(listed).items():
            by_state.add_metric([state], n)
        yield by_state
        fresh = [
            s.report
            for s, e in zip(sites, listed, strict=True)
            if s.report is not None and e["health"] != "silent"
        ]
        yield _gauge(
            "edge_collector_outbox_items_max",
            "The most items one site has waiting for central (sites not silent)",
            max((r.outbox_items for r in fresh), default=0),
        )
        yield _gauge(
            "edge_collector_outbox_oldest_seconds_max",
            "The age of the oldest item waiting at any site (sites not silent), seconds",
            max(
                (
                    (r.sent_ms - r.outbox_oldest_ms) / 1000
                    for r in fresh
                    if r.outbox_oldest_ms is not None
                ),
                default=0,
            ),
        )
        yield _gauge(
            "edge_collector_dead_letters_last_hour_sum",
            "Dead letters in the last hour, all sites not silent together",
            sum(r.dead_letters_last_hour for r in fresh),
        )
        yield _gauge(
            "edge_collector_check_in_age_seconds_max",
            "Seconds since the stalest check-in of the sites that ever checked in",
            max(
                (max(0, at - s.received_ms) / 1000 for s in sites if s.received_ms is not None),
                default=0,
            ),
        )
        info = InfoMetricFamily("edge_collector_build", "The collector's version")
        info.add_metric([], {"version": __version__})
        yield info


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge
