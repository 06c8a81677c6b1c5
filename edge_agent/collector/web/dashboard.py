"""The central team's pages (docs/central-workspace.md): the overview, the comparison, trends,
a site's page, a venue's page, the fleet's health and the audit trail.

Rendered here from the same reads as the JSON API (`edge_agent.collector.workspace`), with
charts drawn as SVG (`charts`): a page works without script, loads nothing from elsewhere and
every table on it downloads as CSV from the API. Every text from a site is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from html import escape
from typing import Annotated, Literal, cast
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from edge_agent.collector import analytics, fleet, summary, workspace
from edge_agent.collector.auth import Admin, Principal, Viewer
from edge_agent.collector.guarded import GuardedRoute
from edge_agent.collector.rollup import DASHBOARD_K
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import now_ms
from edge_agent.collector.web.charts import heat_level, line_chart, number
from edge_agent.collector.web.page import page
from edge_agent.core.fleet import duration
from edge_agent.core.names import ID_PATTERN

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)

_DAY = r"^\d{4}-\d{2}-\d{2}$"
From = Annotated[str | None, Query(alias="from", pattern=_DAY)]
To = Annotated[str | None, Query(alias="to", pattern=_DAY)]
Venue = Annotated[str | None, Query(pattern=ID_PATTERN)]
#: What the pages call each figure.
LABELS = {
    "footfall": "Footfall",
    "visits": "Visits",
    "conversion": "Conversion",
    "orders": "Orders",
    "revenue": "Revenue",
    "nps": "NPS",
    "ces": "CES",
    "identified_share": "Identified share",
}
_PERCENT = {"conversion", "identified_share"}
DASH = "\N{EN DASH}"
CURRENT = ' aria-current="page"'


def _today() -> date:
    return datetime.now(UTC).date()


def _link(path: str, **params: str | None) -> str:
    kept = {k: v for k, v in params.items() if v is not None}
    return escape(path + ("?" + urlencode(kept) if kept else ""))


def _show(name: str, value: object) -> str:
    """A figure for a table cell."""
    if name == "revenue":
        money = cast("Mapping[str, float]", value or {})
        return "<br>".join(f"{number(v, 2)} {escape(c)}" for c, v in money.items()) or DASH
    if value is None:
        return DASH
    if name in _PERCENT:
        return f"{100 * float(cast('float', value)):.1f} %"
    if name in ("nps", "ces"):
        return number(float(cast("float", value)), 1)
    return number(float(cast("float", value)))


def _change(name: str, value: object) -> str:
    """A change against the period before, with its direction in words for screen readers."""
    if name == "revenue":
        parts = [
            _change("orders", v) + f" {escape(c)}"
            for c, v in cast("Mapping[str, float | None]", value or {}).items()
            if v is not None
        ]
        return " ".join(parts) or '<span class="flat">no earlier figure</span>'
    if value is None:
        return '<span class="flat">no earlier figure</span>'
    delta = float(cast("float", value))
    way = "up" if delta > 0 else "down" if delta < 0 else "flat"
    if name in _PERCENT:
        text = f"{100 * delta:+.1f} pts"
    elif name in ("nps", "ces"):
        text = f"{delta:+.1f}"
    else:
        text = f"{100 * delta:+.1f} %"
    return f'<span class="{way}">{text}</span>'


def _nav(user: Principal, here: str) -> str:
    items = [
        ("/overview", "Overview"),
        ("/comparison", "Comparison"),
        ("/trends", "Trends"),
        ("/fleet", "Fleet health"),
    ]
    if user.role == "admin":
        items.append(("/audit", "Audit trail"))
    items.append(("/docs", "API"))
    links = "".join(
        f'<a href="{href}"{CURRENT if href == here else ""}>{text}</a>' for href, text in items
    )
    return f'<nav class="tabs" aria-label="Sections">{links}</nav>'


def _period_form(
    action: str, span: analytics.Period, venue: str | None = None, extra: str = ""
) -> str:
    """The period's form; with a venue field unless ``venue`` is None (a place's own page)."""
    venue_field = (
        ""
        if venue is None
        else f"""<label>Venue <input name="venue" value="{escape(venue)}" placeholder="all venues"
 pattern="[A-Za-z0-9_.\\-]{{1,64}}" maxlength="64"></label>
"""
    )
    return f"""<form class="period" method="get" action="{escape(action)}">
<label>From <input type="date" name="from" value="{span.first}" required></label>
<label>To <input type="date" name="to" value="{span.last}" required></label>
{venue_field}{extra}<button type="submit">Show</button>
</form>"""


def _render(request: Request, user: Principal, title: str, here: str, body: str) -> HTMLResponse:
    name: str = request.app.state.collector_name
    return HTMLResponse(page(name, title, _nav(user, here) + body, user))


def _span(start: str | None, end: str | None, days: int = 7) -> analytics.Period:
    return analytics.period(start, end, _today(), default_days=days)


def _empty_hint(store_sites: int) -> str:
    if store_sites == 0:
        return (
            "No site is registered yet: <code>edge-agent-collector add-site SITE</code> gives "
            "a site its token."
        )
    return (
        "No site has reported a day in this period yet. A site sends each hour once it has "
        "ended, at its next sync (every 15 minutes by default), and its day is shown a few "
        'seconds later. <a href="/fleet">Fleet health</a> shows when each site was last heard '
        "from."
    )


# --- pages ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def home(_user: Viewer) -> RedirectResponse:
    return RedirectResponse("/overview", status_code=303)


@router.get("/overview", response_class=HTMLResponse)
async def overview(
    request: Request, user: Viewer, start: From = None, end: To = None, venue: Venue = None
) -> HTMLResponse:
    store: CentralStore = request.app.state.store
    span = _span(start, end)
    found = await run_in_threadpool(workspace.overview_of, store, span, venue)
    points = await run_in_threadpool(workspace.trend_of, store, span, "day", venue, None)
    figures = cast("dict[str, object]", found["figures"])
    change = cast("dict[str, object]", found["change"])
    coverage = cast("dict[str, int]", found["coverage"])
    previous = cast("dict[str, str]", found["previous"])
    cards = _cards(figures, change)
    notes = []
    if not found["sites_reporting"]:
        notes.append(_empty_hint(cast("int", found["sites"])))
    hours, days = coverage["suppressed_hours"], coverage["suppressed_days"]
    if hours or days:
        said = " and ".join(p for p in (_count(hours, "hour"), _count(days, "whole day")) if p)
        one = hours + days == 1
        notes.append(
            f"{said} {'is' if one else 'are'} left out: fewer than {DASHBOARD_K} distinct "
            f"visitors were seen in {'it' if one else 'them'}."
        )
    if found["days_to_roll_up"]:
        notes.append(f"{found['days_to_roll_up']} newly arrived hours are still being added in.")
    note = "".join(f'<p class="note">{n}</p>' for n in notes)
    chart = line_chart(
        "Footfall per day",
        [(str(p["period"])[5:], None if p["figures"] is None else _footfall(p)) for p in points],
    )
    scope = f"Venue {escape(venue)}" if venue else "All sites"
    params = {"from": str(span.first), "to": str(span.last), "venue": venue}
    body = f"""<h1>Overview</h1>
{_period_form("/overview", span, venue or "")}
<p class="lede">{scope}, {span.first} to {span.last}: {found["sites_reporting"]} of
{found["sites"]} sites reported. Changes are against {previous["from"]} to {previous["to"]}.</p>
{note}
<section class="kpis" aria-label="Figures">{cards}</section>
<section class="card"><h2>Footfall per day</h2>{chart}
<p class="links"><a href="{_link("/trends", **params)}">Trends</a>
· <a href="{_link("/comparison", **params)}">Compare the sites</a></p>
</section>"""
    return _render(request, user, "Overview", "/overview", body)


def _cards(figures: Mapping[str, object], change: Mapping[str, object]) -> str:
    """A card per figure: its value and its change against the period before."""
    out = []
    for name in analytics.FIGURES:
        money = (
            " money"
            if name == "revenue" and len(cast("dict[str, float]", figures[name])) > 1
            else ""
        )
        out.append(
            f'<div class="kpi"><h2>{LABELS[name]}</h2><p class="value{money}">'
            f"{_show(name, figures[name])}</p>"
            f'<p class="change">{_change(name, change[name])}</p></div>'
        )
    return "".join(out)


def _footfall(point: Mapping[str, object]) -> float | None:
    figures = cast("Mapping[str, object]", point["figures"])
    value = figures.get("footfall")
    return None if value is None else float(cast("float", value))


@router.get("/comparison", response_class=HTMLResponse)
async def comparison(
    request: Request,
    user: Viewer,
    start: From = None,
    end: To = None,
    venue: Venue = None,
    sort: str = "footfall",
    order: Literal["desc", "asc"] = "desc",
) -> HTMLResponse:
    store: CentralStore = request.app.state.store
    span = _span(start, end)
    rows = await run_in_threadpool(workspace.comparison_of, store, span, venue, sort, order)
    params = {"from": str(span.first), "to": str(span.last), "venue": venue}
    head = "".join(_sort_header(name, sort, order, params) for name in analytics.FIGURES)
    lines = "".join(_comparison_row(row, params) for row in rows)
    download = _link("/v1/comparison", **params, sort=sort, order=order, format="csv")
    keep_sort = f'<input type="hidden" name="sort" value="{escape(sort)}">'
    empty = f'<tr><td colspan="11">{_empty_hint(0)}</td></tr>'
    body = f"""<h1>Comparison</h1>
{_period_form("/comparison", span, venue or "", keep_sort)}
<p class="lede">Every site side by side, ranked by {LABELS.get(sort, sort).lower()}. A site
marked <span class="badge">partial</span> had hours with fewer than {DASHBOARD_K} visitors:
they are left out of its figures, not hidden.</p>
<p class="links"><a href="{download}" download>Download CSV</a></p>
<div class="table-wrap"><table class="data">
<thead><tr><th scope="col">Rank</th><th scope="col">Site</th>{head}
<th scope="col">Days</th></tr></thead>
<tbody>{lines or empty}</tbody>
</table></div>"""
    return _render(request, user, "Comparison", "/comparison", body)


def _sort_header(name: str, sort: str, order: str, params: Mapping[str, str | None]) -> str:
    flip = "asc" if sort == name and order == "desc" else "desc"
    mark = ""
    aria = ""
    if sort == name:
        mark = " ▼" if order == "desc" else " ▲"
        aria = f' aria-sort="{"descending" if order == "desc" else "ascending"}"'
    href = _link("/comparison", **params, sort=name, order=flip)
    return f'<th scope="col"{aria}><a href="{href}">{LABELS[name]}{mark}</a></th>'


def _comparison_row(row: Mapping[str, object], params: Mapping[str, str | None]) -> str:
    figures = cast("Mapping[str, object]", row["figures"])
    coverage = cast("Mapping[str, int]", row["coverage"])
    site = str(row["site"])
    name = row.get("name")
    label = escape(str(name)) if name else escape(site)
    badge = ""
    if row["marked"]:
        badge = (
            f' <span class="badge" title="{coverage["suppressed_hours"]} hours, '
            f"{coverage['suppressed_days']} days left out (fewer than {DASHBOARD_K} "
            'visitors)">partial</span>'
        )
    if not row.get("reporting"):
        badge += ' <span class="badge quiet">no data</span>'
    cells = "".join(f"<td>{_show(n, figures[n])}</td>" for n in analytics.FIGURES)
    rank = row["rank"] if row["rank"] is not None else DASH
    href = _link(f"/sites/{site}", **{"from": params["from"], "to": params["to"]})
    venue = escape(str(row.get("venue") or ""))
    venue_href = _link(f"/venues/{row.get('venue') or ''}")
    return (
        f'<tr><td>{rank}</td><th scope="row"><a href="{href}">{label}</a>{badge}'
        f'<div class="sub">{escape(site)} · venue <a href="{venue_href}">{venue}</a></div></th>'
        f"{cells}<td>{coverage['days']}</td></tr>"
    )


@router.get("/trends", response_class=HTMLResponse)
async def trends(
    request: Request,
    user: Viewer,
    start: From = None,
    end: To = None,
    venue: Venue = None,
    site: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    by: Literal["day", "week"] = "day",
) -> HTMLResponse:
    store: CentralStore = request.app.state.store
    span = _span(start, end, 28)
    points = await run_in_threadpool(workspace.trend_of, store, span, by, venue, site)
    charts = "".join(
        f'<section class="card"><h2>{LABELS[name]} per {by}</h2>'
        + line_chart(f"{LABELS[name]} per {by}", _series(points, name), _digits(name))
        + "</section>"
        for name in ("footfall", "orders", "conversion", "nps")
    )
    rows = "".join(
        f'<tr><th scope="row">{escape(str(p["period"]))}</th>'
        + (
            "".join(
                f"<td>{_show(n, cast('Mapping[str, object]', p['figures'])[n])}</td>"
                for n in analytics.FIGURES
            )
            if p["figures"] is not None
            else f'<td colspan="{len(analytics.FIGURES)}" class="gap-cell">nothing reported</td>'
        )
        + "</tr>"
        for p in points
    )
    params = {"from": str(span.first), "to": str(span.last), "venue": venue, "site": site}
    toggle = "week" if by == "day" else "day"
    extra = (
        f'<input type="hidden" name="site" value="{escape(site)}">' if site else ""
    ) + f'<input type="hidden" name="by" value="{by}">'
    head = "".join(f'<th scope="col">{LABELS[n]}</th>' for n in analytics.FIGURES)
    scope = f"Site {escape(site)}" if site else (f"Venue {escape(venue)}" if venue else "All sites")
    body = f"""<h1>Trends</h1>
{_period_form("/trends", span, venue or "", extra)}
<p class="lede">{scope}, per site-local {by}. A break in a line is a {by} with nothing
reported, not a zero. <a href="{_link("/trends", **params, by=toggle)}">Per {toggle}</a> ·
<a href="{_link("/v1/trend", **params, by=by, format="csv")}" download>Download CSV</a></p>
<div class="charts">{charts}</div>
<div class="table-wrap"><table class="data">
<thead><tr><th scope="col">{by.title()}</th>{head}</tr></thead>
<tbody>{rows}</tbody></table></div>"""
    return _render(request, user, "Trends", "/trends", body)


def _digits(name: str) -> int:
    return 2 if name in _PERCENT else 0


def _series(points: Sequence[Mapping[str, object]], name: str) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for p in points:
        value = None if p["figures"] is None else cast("Mapping[str, object]", p["figures"])[name]
        label = str(p["period"])[5:]
        out.append((label, None if value is None else float(cast("float", value))))
    return out


@router.get("/sites/{site}", response_class=HTMLResponse)
async def site_page(
    request: Request,
    user: Viewer,
    site: Annotated[str, Path(pattern=ID_PATTERN)],
    start: From = None,
    end: To = None,
) -> HTMLResponse:
    span = _span(start, end, 28)
    found = await workspace.read_place(request, workspace.site_page_of, site, span)
    about = cast("Mapping[str, object]", found["site"])
    title = str(about.get("name") or site)
    total = cast("Mapping[str, object] | None", found["total"])
    days = cast("list[dict[str, object]]", found["days"])
    params = {"from": str(span.first), "to": str(span.last)}
    venue = str(about["venue"])
    venue_href = _link(f"/venues/{venue}")
    export_href = _link("/v1/export", **params, site=site, shape="wide")
    quality = line_chart(
        "Dead letters per day",
        [(str(d["day"])[5:], float(cast("float", d["dead_letters"]))) for d in days],
    )
    body = f"""<h1>{escape(title)}</h1>
<p class="lede">Site {escape(site)} · venue <a href="{venue_href}">{escape(venue)}</a>
· hours in {escape(str(about["timezone"]))}, {span.first} to {span.last}.
<a href="{export_href}" download>Download its days (CSV)</a></p>
{_period_form(f"/sites/{site}", span)}
{"" if total is not None else f'<p class="note">{_empty_hint(1)}</p>'}
{_place_sections(found, span)}
<section class="card"><h2>Data quality</h2>{quality}{_days_table(days)}</section>"""
    return _render(request, user, title, "", body)


def _place_sections(found: Mapping[str, object], span: analytics.Period) -> str:
    """A site's or a venue's sections read from its hour cells over ``span``: heat map,
    zones, products (by name where the sites gave one), paths, and a venue's gates, halls
    and sessions."""
    total = cast("Mapping[str, object] | None", found["total"])
    names = cast("Mapping[str, str]", found["product_names"])
    return f"""<section class="card"><h2>Footfall by hour and weekday</h2>
<p class="sub">The mean door count of each hour of the day (site time) per weekday; blank
where the site was closed or the hour had fewer than {DASHBOARD_K} visitors.</p>
{_heat_map(cast("Mapping[str, object]", found["heat_map"]))}</section>
<div class="columns">
<section class="card"><h2>Zones</h2>{_zones(total)}</section>
<section class="card"><h2>Top products</h2>{_top(total, "top_products", "Product", names)}</section>
<section class="card"><h2>Paths</h2>{_top(total, "top_paths", "Path")}</section>
</div>{_venue_sections(total, span.days == 1)}"""


def _venue_sections(total: Mapping[str, object] | None, one_day: bool) -> str:
    """The gates, halls and badge places of a venue's period; nothing where no ticket or
    badge was scanned. How long the venue took to fill is said of one day only: over
    several, it would run from the first day's first entry."""
    venue = cast("Mapping[str, object] | None", (total or {}).get("venue"))
    if not venue:
        return ""
    fill = cast("Mapping[str, object] | None", venue.get("fill_minutes")) or {}
    lede = (
        f"{number(cast('float', venue.get('entries')))} entries, "
        f"{number(cast('float', venue.get('exits')))} exits and "
        f"{number(cast('float', venue.get('rejected')))} rejected scans; "
        f"{number(cast('float', venue.get('holders')))} distinct ticket holders; at the busiest "
        f"5 minutes {number(cast('float | None', venue.get('peak_entries_per_minute')), 1)} "
        "entries a minute"
        + (
            f"; half of the entries came in the first {fill['50']} minutes, 90 % in {fill['90']}"
            if one_day and fill.get("50") is not None
            else ""
        )
        + "."
    )
    parts = {
        key: cast("Mapping[str, Mapping[str, object]]", venue.get(key) or {})
        for key in ("gates", "halls", "places")
    }
    return f"""<section class="card"><h2>Gates</h2><p class="sub">{lede}</p>
{_gates(parts["gates"])}</section>
<div class="columns">
<section class="card"><h2>Halls</h2>{_halls(parts["halls"])}</section>
<section class="card"><h2>Booths and sessions</h2>{_places(parts["places"])}</section>
</div>"""


def _few(columns: int) -> str:
    return f'<td colspan="{columns}" class="gap-cell">fewer than {DASHBOARD_K} holders</td>'


def _gates(gates: Mapping[str, Mapping[str, object]]) -> str:
    if not gates:
        return '<p class="sub">No gate scans in this period.</p>'
    rows = "".join(
        f'<tr><th scope="row">{escape(gate)}</th>'
        + (
            _few(6)
            if g.get("suppressed")
            else "".join(
                f"<td>{number(cast('float | None', g.get(n)), d)}</td>"
                for n, d in (
                    ("entries", 0),
                    ("reentry", 0),
                    ("exit", 0),
                    ("rejected", 0),
                    ("peak_entries_per_minute", 1),
                )
            )
            + f"<td>{_share(g.get('rejection_rate'))}{_reasons(g.get('reasons'))}</td>"
        )
        + "</tr>"
        for gate, g in gates.items()
    )
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in (
            "Gate", "Entries", "Re-entries", "Exits", "Rejected", "Peak entries a minute",
            "Rejected share",
        )
    )  # fmt: skip
    return (
        f'<div class="table-wrap"><table class="data" aria-label="Gates"><thead><tr>{head}'
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _share(value: object) -> str:
    return "\N{EN DASH}" if not isinstance(value, int | float) else f"{100 * value:.1f} %"


def _reasons(reasons: object) -> str:
    if not isinstance(reasons, Mapping) or not reasons:
        return ""
    said = ", ".join(f"{escape(str(r))} {number(float(n))}" for r, n in reasons.items())
    return f'<div class="sub">{said}</div>'


def _halls(halls: Mapping[str, Mapping[str, object]]) -> str:
    if not halls:
        return '<p class="sub">No hall gates in this period.</p>'
    rows = "".join(
        f'<tr><th scope="row">{escape(hall)}</th>'
        + (
            _few(3)
            if h.get("suppressed")
            else "".join(
                f"<td>{number(cast('float | None', h.get(n)))}</td>"
                for n in ("entries", "exits", "occupancy_peak")
            )
        )
        + "</tr>"
        for hall, h in halls.items()
    )
    return (
        '<table class="data"><thead><tr><th scope="col">Hall</th><th scope="col">Entries</th>'
        '<th scope="col">Exits</th><th scope="col">Most inside</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _places(places: Mapping[str, Mapping[str, object]]) -> str:
    if not places:
        return '<p class="sub">No badge scans in this period.</p>'
    rows = "".join(
        f'<tr><th scope="row">{escape(str(p.get("kind", "")).capitalize())} '
        f"{escape(key.split(':', 1)[-1])}</th>"
        + (
            _few(2)
            if p.get("suppressed")
            else f"<td>{number(cast('float | None', p.get('badges')))}</td>"
            f"<td>{number(cast('float | None', p.get('scans')))}</td>"
        )
        + "</tr>"
        for key, p in places.items()
    )
    return (
        '<table class="data"><thead><tr><th scope="col">Place</th><th scope="col">People '
        '(badges)</th><th scope="col">Scans</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _heat_map(heat: Mapping[str, object]) -> str:
    cells = cast("list[list[float | None]]", heat["cells"])
    top = max((v for row in cells for v in row if v is not None), default=0.0)
    head = "".join(f'<th scope="col">{h:02d}</th>' for h in range(24))
    rows = "".join(
        f'<tr><th scope="row">{analytics.WEEKDAYS[d]}</th>'
        + "".join(
            f'<td class="{heat_level(v, top)}" title="{analytics.WEEKDAYS[d]} {h:02d}:00: '
            f'{number(v, 1)}">{"" if v is None else number(v)}</td>'
            for h, v in enumerate(row)
        )
        + "</tr>"
        for d, row in enumerate(cells)
    )
    return (
        f'<div class="table-wrap"><table class="heat"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _zones(total: Mapping[str, object] | None) -> str:
    dwell = cast("Mapping[str, Mapping[str, object]]", (total or {}).get("dwell_s") or {})
    if not dwell:
        return '<p class="sub">No zone visits in this period.</p>'
    rows = "".join(
        f'<tr><th scope="row">{escape(zone)}</th>'
        + (
            f'<td colspan="2" class="gap-cell">fewer than {DASHBOARD_K} visitors</td>'
            if figures.get("suppressed")
            else f"<td>{number(cast('float | None', figures.get('median')))} s</td>"
            f"<td>{number(cast('float | None', figures.get('p90')))} s</td>"
        )
        + "</tr>"
        for zone, figures in dwell.items()
    )
    return (
        '<div class="table-wrap"><table class="data"><thead><tr><th scope="col">Zone</th>'
        '<th scope="col">Median dwell</th><th scope="col" title="90th percentile">90 % stay under'
        f"</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _top(
    total: Mapping[str, object] | None,
    key: str,
    what: str,
    names: Mapping[str, str] | None = None,
) -> str:
    entries = cast("list[list[object]]", (total or {}).get(key) or [])
    if not entries:
        return '<p class="sub">None in this period.</p>'
    known = names or {}

    def label(item: str) -> str:
        name = known.get(item)
        if names is None or not name:
            return escape(item)
        return f'{escape(name)}<div class="sub">{escape(item)}</div>'

    rows = "".join(
        f'<tr><th scope="row">{label(str(item))}</th>'
        f"<td>{number(float(cast('float', n)))}</td></tr>"
        for item, n in entries
    )
    return (
        f'<table class="data"><thead><tr><th scope="col">{what}</th><th scope="col">Count</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _days_table(days: Sequence[Mapping[str, object]]) -> str:
    if not days:
        return ""
    rows = "".join(
        f'<tr><th scope="row">{escape(str(d["day"]))}</th>'
        + "".join(
            f"<td>{_show(n, cast('Mapping[str, object]', d['figures'])[n])}</td>"
            for n in ("footfall", "orders", "revenue")
        )
        + f"<td>{number(float(cast('float', d['dead_letters'])))}</td>"
        f"<td>{number(float(cast('float', d['duplicates'])))}</td>"
        f"<td>{d['suppressed_hours']}</td></tr>"
        for d in days
    )
    return (
        '<div class="table-wrap"><table class="data"><thead><tr><th scope="col">Day</th>'
        '<th scope="col">Footfall</th><th scope="col">Orders</th><th scope="col">Revenue</th>'
        '<th scope="col">Dead letters</th><th scope="col">Duplicates</th>'
        f'<th scope="col">Hours left out</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )


@router.get("/venues/{venue}", response_class=HTMLResponse)
async def venue_page(
    request: Request,
    user: Viewer,
    venue: Annotated[str, Path(pattern=ID_PATTERN)],
    start: From = None,
    end: To = None,
) -> HTMLResponse:
    store: CentralStore = request.app.state.store
    span = _span(start, end, 28)
    merged = await workspace.read_place(request, workspace.venue_page_of, venue, span)
    found = await run_in_threadpool(workspace.overview_of, store, span, venue)
    rows = await run_in_threadpool(workspace.comparison_of, store, span, venue, "footfall", "desc")
    figures = cast("dict[str, object]", found["figures"])
    change = cast("dict[str, object]", found["change"])
    cards = _cards(figures, change)
    params = {"from": str(span.first), "to": str(span.last), "venue": venue}
    agents = "".join(_comparison_row(row, params) for row in rows)
    head = "".join(f'<th scope="col">{LABELS[n]}</th>' for n in analytics.FIGURES)
    agents_csv = _link("/v1/comparison", **params, format="csv")
    hourly = _link(
        "/v1/insights",
        **{"from": str(span.first), "to": str(span.last), "venue": venue, "format": "csv"},
    )
    total = cast("Mapping[str, object] | None", merged["total"])
    timezones = cast("list[str]", merged["timezones"])
    zones_note = (
        ""
        if len(timezones) < 2
        else f" Its agents keep different time zones ({escape(', '.join(timezones))}): hours "
        f"are shown in {escape(str(merged['timezone']))}."
    )
    visitors = (
        ""
        if total is None
        else '<div class="kpi"><h2>Distinct visitors</h2><p class="value">'
        f"{number(cast('float', total.get('visitors')))}</p>"
        '<p class="change">each counted once, however many agents saw them</p></div>'
    )
    body = f"""<h1>Venue {escape(venue)}</h1>
{_period_form(f"/venues/{venue}", span)}
<p class="lede">{_agents(len(rows))}, {span.first} to {span.last}. The
figures below add up the agents' days; the heat map, zones and products merge their hour
cells.{zones_note} <a href="{agents_csv}" download>Download the agents' table (CSV)</a> ·
<a href="{hourly}" download>the merged hours (CSV)</a></p>
{"" if found["sites_reporting"] else f'<p class="note">{_empty_hint(len(rows))}</p>'}
<section class="kpis" aria-label="Figures">{cards}{visitors}</section>
<div class="table-wrap"><table class="data" aria-label="Agents"><thead><tr>
<th scope="col">Rank</th><th scope="col">Agent</th>{head}<th scope="col">Days</th></tr></thead>
<tbody>{agents}</tbody></table></div>
{_place_sections(merged, span)}"""
    return _render(request, user, f"Venue {venue}", "", body)


def _count(n: int, what: str) -> str:
    """``n`` of ``what`` as said ("1 hour", "3 hours"), empty for none."""
    return "" if n == 0 else f"{n} {what}" + ("" if n == 1 else "s")


def _agents(n: int) -> str:
    return "The venue's only agent" if n == 1 else f"The venue's {n} agents together"


@router.get("/fleet", response_class=HTMLResponse)
async def fleet_page(request: Request, user: Viewer) -> HTMLResponse:
    store: CentralStore = request.app.state.store
    options: fleet.Options = request.app.state.fleet
    sites = await run_in_threadpool(store.fleet)
    listed = fleet.entries(sites, now_ms(), options)
    counts = fleet.counts(listed)
    rows = "".join(_fleet_row(e) for e in fleet.worst_first(listed))
    summary = " · ".join(f'<span class="state {h}">{counts[h]} {h}</span>' for h in counts)
    body = f"""<h1>Fleet health</h1>
<p class="lede">{summary}. A site that has not checked in for
{duration(options.silent_after_s * 1000)} is silent.
<a href="/fleet.csv" download>Download CSV</a> · <a href="/v1/fleet">As JSON</a></p>
<div class="table-wrap"><table class="data"><thead><tr><th scope="col">Site</th>
<th scope="col">Health</th><th scope="col">Last check-in</th><th scope="col">Version</th>
<th scope="col">Outbox</th><th scope="col">Disk free</th><th scope="col">Why</th></tr></thead>
<tbody>{rows or '<tr><td colspan="7">No site is registered yet.</td></tr>'}</tbody></table></div>"""
    return _render(request, user, "Fleet health", "/fleet", body)


def _fleet_row(entry: Mapping[str, object]) -> str:
    seen = cast("Mapping[str, int] | None", entry["check_in"])
    report = cast("Mapping[str, object] | None", entry["report"])
    age = "never" if seen is None else f"{duration(seen['age_s'] * 1000)} ago"
    reasons = cast("list[str]", entry["reasons"])
    why = "<br>".join(escape(r) for r in reasons) or DASH
    version = escape(str(report["version"])) if report else DASH
    outbox = number(float(cast("float", report["outbox_items"]))) if report else DASH
    disk = f"{100 * float(cast('float', report['disk_free_share'])):.0f} %" if report else DASH
    name = entry.get("name")
    site = str(entry["site"])
    label = escape(str(name)) if name else escape(site)
    health = escape(str(entry["health"]))
    return (
        f'<tr><th scope="row"><a href="{_link(f"/sites/{site}")}">{label}</a>'
        f'<div class="sub">{escape(site)}</div></th><td><span class="state {health}">{health}'
        f"</span></td><td>{age}</td><td>{version}</td><td>{outbox}</td><td>{disk}</td>"
        f'<td class="why">{why}</td></tr>'
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, user: Admin) -> HTMLResponse:
    store: CentralStore = request.app.state.store
    lines = await run_in_threadpool(store.audit, None, 200)
    rows = "".join(
        f"<tr><td>{datetime.fromtimestamp(line.ts_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC</td>"
        f"<td>{escape(line.site or DASH)}</td><td>{escape(line.action.replace('_', ' '))}</td>"
        f"<td>{escape(', '.join(f'{k}: {v}' for k, v in line.detail.items()))}</td></tr>"
        for line in lines
    )
    body = f"""<h1>Audit trail</h1>
<p class="lede">The newest 200 lines: erasures, consent withdrawals, sites, users and
destinations added or removed. <a href="/audit.csv" download>Download CSV</a> (the newest
1,000) · <a href="/v1/audit?limit=1000">As JSON</a></p>
<div class="table-wrap"><table class="data"><thead><tr><th scope="col">When</th>
<th scope="col">Site</th><th scope="col">What</th><th scope="col">Detail</th></tr></thead>
<tbody>{rows or '<tr><td colspan="4">Nothing yet.</td></tr>'}</tbody></table></div>"""
    return _render(request, user, "Audit trail", "/audit", body)


def _csv(lines: Sequence[Mapping[str, object]], head: Sequence[str], name: str) -> Response:
    return Response(
        summary.table_csv(lines, head),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


#: The fleet's CSV columns: the same whatever each site reported.
FLEET_COLUMNS = (
    "site", "name", "venue", "health", "reasons", "last_check_in", "check_in_age_s",
    "version", "uptime_s", "broker", "outbox_items", "outbox_oldest", "dead_letters_last_hour",
    "duplicates_last_hour", "disk_free_bytes", "disk_free_share", "models", "last_sync",
    "clock_offset_s",
)  # fmt: skip


def _iso(ms: object) -> str:
    if not isinstance(ms, int):
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@router.get("/fleet.csv")
async def fleet_csv(request: Request, _user: Viewer) -> Response:
    store: CentralStore = request.app.state.store
    options: fleet.Options = request.app.state.fleet
    listed = fleet.entries(await run_in_threadpool(store.fleet), now_ms(), options)
    lines = []
    for e in listed:
        seen = cast("Mapping[str, int] | None", e["check_in"])
        report = cast("Mapping[str, object]", e["report"] or {})
        models = cast("Mapping[str, str]", report.get("models") or {})
        lines.append(
            {
                "site": e["site"],
                "name": e["name"] or "",
                "venue": e["venue"],
                "health": e["health"],
                "reasons": "; ".join(cast("list[str]", e["reasons"])),
                "last_check_in": _iso(seen["received_ms"]) if seen else "",
                "check_in_age_s": seen["age_s"] if seen else "",
                "version": report.get("version", ""),
                "uptime_s": report.get("uptime_s", ""),
                "broker": report.get("broker", ""),
                "outbox_items": report.get("outbox_items", ""),
                "outbox_oldest": _iso(report.get("outbox_oldest_ms")),
                "dead_letters_last_hour": report.get("dead_letters_last_hour", ""),
                "duplicates_last_hour": report.get("duplicates_last_hour", ""),
                "disk_free_bytes": report.get("disk_free_bytes", ""),
                "disk_free_share": report.get("disk_free_share", ""),
                "models": "; ".join(f"{k}={v}" for k, v in sorted(models.items())),
                "last_sync": _iso(report.get("last_sync_ms")),
                "clock_offset_s": report.get("clock_offset_s") or "",
            }
        )
    return _csv(lines, FLEET_COLUMNS, "fleet")


@router.get("/audit.csv")
async def audit_csv(request: Request, _user: Admin) -> Response:
    store: CentralStore = request.app.state.store
    found = await run_in_threadpool(store.audit, None, 1000)
    lines = [
        {
            "at": _iso(line.ts_ms),
            "site": line.site or "",
            "action": line.action,
            "detail": orjson.dumps(line.detail).decode(),
        }
        for line in found
    ]
    return _csv(lines, ("at", "site", "action", "detail"), "audit")
