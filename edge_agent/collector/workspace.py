"""What the central team reads across sites (viewer role): a period's overview with its change
against the period before (``/v1/overview``), sites side by side (``/v1/comparison``), trends
by day or week (``/v1/trend``), one site's page (``/v1/sites/{site}/page``) and one venue's,
its agents' cells merged (``/v1/venues/{venue}/page``).

The figures come from each site's rolled-up days (`store.rollups`, site-local days), so the
answers cost one indexed query however many sites there are; a table is also CSV
(``format=csv``, as an attachment).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import IO, Annotated, Literal, cast
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edge_agent.collector import analytics, exports, summary, wire
from edge_agent.collector.auth import viewer
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.openapi import errors
from edge_agent.collector.rollup import DASHBOARD_K
from edge_agent.collector.sandbox import Sandbox, SandboxCrashed, SandboxTimedOut
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import Unavailable
from edge_agent.collector.store.rollups import Described, majority
from edge_agent.core.localtime import day_bounds, zone
from edge_agent.core.names import ID_PATTERN

router = APIRouter(route_class=GuardedRoute, dependencies=[Depends(viewer)])

_DAY = r"^\d{4}-\d{2}-\d{2}$"
From = Annotated[str | None, Query(alias="from", pattern=_DAY, description="first site-local day")]
To = Annotated[str | None, Query(alias="to", pattern=_DAY, description="last site-local day")]
Venue = Annotated[str | None, Query(pattern=ID_PATTERN, description="only this venue's sites")]
Format = Literal["json", "csv"]
_TABLE = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
        }
    },
    **errors(401, 403, 422),
}
#: A site page reads the site's hour cells themselves: a quarter at most.
MAX_PAGE_DAYS = 92


def _today() -> datetime:
    return datetime.now(UTC)


def _answer(
    body: object,
    format: Format,
    table: Sequence[Mapping[str, object]],
    name: str,
    head: Sequence[str] = (),
) -> Response:
    if format == "csv":
        return Response(
            summary.table_csv(table, head),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(orjson.dumps(body), media_type="application/json")


# --- the reads the API and the pages share (blocking: run them in the thread pool) ---------


def overview_of(
    store: CentralStore, span: analytics.Period, venue: str | None
) -> dict[str, object]:
    """The period across every site (or a venue's) against the period before."""
    now = store.sums_by(*span.labels(), "site", venue=venue)
    before = store.sums_by(*span.before().labels(), "site", venue=venue)
    sites = len(store.described_sites(venue))
    return {
        **analytics.overview(now, before, sites, span),
        "venue": venue,
        "k": DASHBOARD_K,
        "days_to_roll_up": store.queue_depth(),
    }


def comparison_of(
    store: CentralStore, span: analytics.Period, venue: str | None, sort: str, order: str
) -> list[dict[str, object]]:
    """Every site (or a venue's) side by side, ranked by ``sort``.

    Raises:
        WireError: 422, ``sort`` is not a figure.
    """
    if sort not in analytics.FIGURES:
        raise wire.WireError(422, f"sort: unknown {sort!r}; known: {', '.join(analytics.FIGURES)}")
    names = {
        d.site: {"name": d.name, "venue": d.venue, "timezone": d.timezone}
        for d in store.described_sites(venue)
    }
    now = store.sums_by(*span.labels(), "site", venue=venue)
    before = store.sums_by(*span.before().labels(), "site", venue=venue)
    return analytics.comparison(now, before, names, sort, descending=order == "desc")


def trend_of(
    store: CentralStore, span: analytics.Period, by: str, venue: str | None, site: str | None
) -> list[dict[str, object]]:
    """The figures per day or week of the period, gaps included."""
    rows = store.sums_by(*span.labels(), "day", venue=venue, site=site)
    return analytics.trend(rows, span, by)


def export_of(
    store: CentralStore, span: analytics.Period, sites: Sequence[Described], shape: exports.Shape
) -> Iterator[list[dict[str, object]]]:
    """The export's lines of ``sites`` (`RollupStore.described_sites`), each site's days read
    as the lines are consumed."""
    return exports.rows(
        sites,
        lambda s: store.site_days(*span.labels(), s),
        shape,
        lambda s, ids: store.product_names([s], ids),
    )


def trend_lines(points: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """Trend points as flat lines of a CSV (a gap: the period alone)."""
    return [
        {
            "period": p["period"],
            **cast("dict[str, object]", p["figures"] or {}),
            **cast("dict[str, object]", p["coverage"] or {}),
        }
        for p in points
    ]


def site_page_of(
    store: CentralStore, sandbox: Sandbox, site: str, span: analytics.Period
) -> dict[str, object]:
    """One site over ``span``: its days, heat map, zones, paths and top products (named).

    Raises:
        WireError: 404 no such site, 422 too long a period, 500 a stored cell unreadable.
        Unavailable: the cells took too long to read.
    """
    _check_page(span)
    found = store.described_sites(site=site)
    if not found:
        raise wire.WireError(404, f"no site {site!r} is registered")
    (about,) = found
    tz = zone(about.timezone)
    first_ms, end_ms = day_bounds(span.first, tz)[0], day_bounds(span.last, tz)[1]
    hours = store.cells_between(site, first_ms, end_ms)
    return {
        "site": asdict(about),
        **_place(store, sandbox, span, [about], hours, tz),
        "days": analytics.site_days_table(store.site_days(*span.labels(), site)),
    }


def venue_page_of(
    store: CentralStore, sandbox: Sandbox, venue: str, span: analytics.Period
) -> dict[str, object]:
    """A venue over ``span``, its agents' cells merged hour by hour, so a visitor several
    agents saw counts once: its agents, heat map, zones, paths and top products (named),
    in the time zone most of its agents keep.

    Raises:
        WireError: 404 no such venue, 422 too long a period, 500 a stored cell unreadable.
        Unavailable: the cells took too long to read.
    """
    _check_page(span)
    agents = store.described_sites(venue=venue)
    if not agents:
        raise wire.WireError(404, f"no site of venue {venue!r} is registered")
    zones = Counter(a.timezone for a in agents)
    timezone = majority(zones)
    tz = zone(timezone)
    first_ms, end_ms = day_bounds(span.first, tz)[0], day_bounds(span.last, tz)[1]
    cells = store.insight_cells(first_ms, end_ms, venue, None)
    return {
        "venue": venue,
        "timezone": timezone,
        "timezones": sorted(zones),
        "agents": [asdict(a) for a in agents],
        **_place(store, sandbox, span, agents, [(c.start_ms, c.cell) for c in cells], tz),
    }


def _check_page(span: analytics.Period) -> None:
    if span.days > MAX_PAGE_DAYS:
        raise wire.WireError(422, f"a page spans at most {MAX_PAGE_DAYS} days: ask for fewer")


def _place(
    store: CentralStore,
    sandbox: Sandbox,
    span: analytics.Period,
    sites: Sequence[Described],
    hours: Sequence[tuple[int, str | None]],
    tz: ZoneInfo,
) -> dict[str, object]:
    """The part of a site's or a venue's page read from its hour cells (in the worker
    process: a crafted cell may crash the sketches' C++), its heat map in ``tz``."""
    try:
        period = sandbox.call(summary.place_period, hours, DASHBOARD_K)
    except SandboxCrashed as exc:
        raise wire.WireError(500, f"a stored insight cell cannot be read ({exc})") from exc
    except SandboxTimedOut as exc:
        raise Unavailable(f"the page took too long ({exc}): ask for fewer days") from exc
    total = cast("dict[str, object] | None", period["total"])
    top = cast("list[list[object]]", (total or {}).get("top_products") or [])
    return {
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "k": DASHBOARD_K,
        "heat_map": analytics.heat_map(cast("list[dict[str, object]]", period["hours"]), tz),
        "total": total,
        "suppressed_hours": period["suppressed_hours"],
        "product_names": store.product_names(
            [s.site for s in sites], {str(entry[0]) for entry in top}
        ),
    }


@router.get(
    "/v1/overview",
    responses={
        200: {"content": {"application/json": {"schema": {"type": "object"}}}},
        **errors(401, 403, 422),
    },
    summary="A period across every site (or a venue's), with its change against the period before",
)
async def overview(
    request: Request, start: From = None, end: To = None, venue: Venue = None
) -> Response:
    store: CentralStore = request.app.state.store
    span = analytics.period(start, end, _today().date())
    body = await run_in_threadpool(overview_of, store, span, venue)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/v1/comparison",
    responses=_TABLE,
    summary="Every site (or a venue's) side by side for a period, ranked by a figure",
)
async def comparison(
    request: Request,
    start: From = None,
    end: To = None,
    venue: Venue = None,
    sort: Annotated[
        str, Query(description="rank by: " + ", ".join(analytics.FIGURES))
    ] = "footfall",
    order: Literal["desc", "asc"] = "desc",
    format: Format = "json",
) -> Response:
    store: CentralStore = request.app.state.store
    span = analytics.period(start, end, _today().date())
    rows = await run_in_threadpool(comparison_of, store, span, venue, sort, order)
    body = {
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "venue": venue,
        "sort": sort,
        "order": order,
        "k": DASHBOARD_K,
        "sites": rows,
    }
    table = [comparison_line(row) for row in rows]
    return _answer(body, format, table, f"comparison-{span.first}-{span.last}")


def comparison_line(row: Mapping[str, object]) -> dict[str, object]:
    """A comparison row as a flat line of its CSV."""
    figures = row["figures"]
    coverage = row["coverage"]
    assert isinstance(figures, Mapping)
    assert isinstance(coverage, Mapping)
    return {
        "rank": row["rank"],
        "site": row["site"],
        "name": row["name"],
        "venue": row["venue"],
        **{name: figures[name] for name in analytics.FIGURES},
        "days": coverage["days"],
        "suppressed_days": coverage["suppressed_days"],
        "suppressed_hours": coverage["suppressed_hours"],
        "partial": row["marked"],
    }


@router.get(
    "/v1/trend",
    responses=_TABLE,
    summary="The figures per site-local day or week; a period with nothing reported is a gap",
)
async def trend(
    request: Request,
    start: From = None,
    end: To = None,
    venue: Venue = None,
    site: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    by: Literal["day", "week"] = "day",
    format: Format = "json",
) -> Response:
    store: CentralStore = request.app.state.store
    span = analytics.period(start, end, _today().date(), default_days=28)
    points = await run_in_threadpool(trend_of, store, span, by, venue, site)
    body = {
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "by": by,
        "venue": venue,
        "site": site,
        "points": points,
    }
    return _answer(
        body, format, trend_lines(points), f"trend-{by}-{span.first}-{span.last}", ("period",)
    )


_PAGE = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}},
    **errors(401, 403, 404, 422),
}
PageOf = Callable[[CentralStore, Sandbox, str, analytics.Period], dict[str, object]]


async def read_place(
    request: Request, page_of: PageOf, place: str, span: analytics.Period
) -> dict[str, object]:
    """A site's or a venue's page (``page_of``: `site_page_of`, `venue_page_of`) over
    ``span``, read in the thread pool with the app's store and sandbox."""
    state = request.app.state
    return await run_in_threadpool(page_of, state.store, state.sandbox, place, span)


async def _page(request: Request, page_of: PageOf, place: str, start: From, end: To) -> Response:
    span = analytics.period(start, end, _today().date(), default_days=28)
    body = await read_place(request, page_of, place, span)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/v1/sites/{site}/page",
    responses=_PAGE,
    summary="One site over a period: its days, an hour-by-weekday heat map, zones, paths, "
    "top products and its data quality per day",
)
async def site_page(
    request: Request,
    site: Annotated[str, Path(pattern=ID_PATTERN)],
    start: From = None,
    end: To = None,
) -> Response:
    return await _page(request, site_page_of, site, start, end)


@router.get(
    "/v1/venues/{venue}/page",
    responses=_PAGE,
    summary="One venue over a period, its agents' hour cells merged (a visitor several agents "
    "saw counted once): heat map, zones, paths, top products",
)
async def venue_page(
    request: Request,
    venue: Annotated[str, Path(pattern=ID_PATTERN)],
    start: From = None,
    end: To = None,
) -> Response:
    return await _page(request, venue_page_of, venue, start, end)


@router.get(
    "/v1/export",
    responses={
        200: {
            "content": {
                exports.MEDIA["csv"]: {"schema": {"type": "string"}},
                exports.MEDIA["parquet"]: {"schema": {"type": "string", "format": "binary"}},
            }
        },
        **errors(401, 403, 422),
    },
    summary="Each site's days in a fixed schema for BI tools: long (tidy) or wide, CSV or Parquet",
)
async def export(
    request: Request,
    start: From = None,
    end: To = None,
    venue: Venue = None,
    site: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    shape: exports.Shape = "long",
    format: Literal["csv", "parquet"] = "csv",
) -> Response:
    store: CentralStore = request.app.state.store
    span = analytics.period(start, end, _today().date())
    first, last = span.labels()
    sites = await run_in_threadpool(store.described_sites, venue, site)
    chunks = export_of(store, span, sites, shape)
    name = f"edge-{shape}-{first}-{last}.{format}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        # Written as read, a site at a time, in the server's thread pool.
        return StreamingResponse(
            exports.csv_chunks(chunks, shape), media_type=exports.MEDIA["csv"], headers=disposition
        )
    made = await run_in_threadpool(exports.parquet_file, chunks, shape)
    return StreamingResponse(
        _pieces(made), media_type=exports.MEDIA["parquet"], headers=disposition
    )


def _pieces(file: IO[bytes]) -> Iterator[bytes]:
    with file:
        while piece := file.read(1 << 16):
            yield piece
