"""The BI exports (docs/central-workspace.md): each site's rolled-up days in a fixed schema,
as CSV or Parquet, whatever the data holds.

Two shapes: **wide**, one line per site and day with a column per figure (`WIDE`), and
**long** (tidy), one line per site, day, metric and dimension (`LONG`: a zone, a product, a
reason, a currency), which is what a BI tool pivots. The columns never change with the data:
a day a site suppressed has its figures empty and ``suppressed`` true; times are ISO 8601
with the site's UTC offset; money carries its currency; truth values are ``true``/``false``.

Rows are made a site at a time (`rows`), so an export of a thousand sites over a quarter is
written as it is read, never held whole.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import IO, TYPE_CHECKING, Literal, cast

from edge_agent.collector.store.rollups import Described, SiteDay
from edge_agent.collector.summary import DAY_SUMS, spreadsheet_safe
from edge_agent.core.localtime import zone

if TYPE_CHECKING:
    import pyarrow as pa

Shape = Literal["long", "wide"]
#: Export formats and their media types.
MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}

_KEY = (
    ("site", "string"),
    ("site_name", "string"),
    ("venue", "string"),
    ("timezone", "string"),
    ("day", "string"),
    ("period_start", "string"),
    ("period_end", "string"),
)
#: Ratios a wide line adds to its sums (the same definitions as the dashboard's).
_RATIOS = ("conversion", "nps", "ces", "basket_value_mean", "identified_share")
#: The wide shape: the key, the day's coverage, every sum, the currency and the ratios.
WIDE: tuple[tuple[str, str], ...] = (
    *_KEY,
    ("hours", "int64"),
    ("suppressed_hours", "int64"),
    ("suppressed", "bool"),
    *((name, "float64" if name == "revenue" else "int64") for name in DAY_SUMS),
    ("currency", "string"),
    *((name, "float64") for name in _RATIOS),
)
#: The long shape: the key, then what is measured, of what, its value and currency.
LONG: tuple[tuple[str, str], ...] = (
    *_KEY,
    ("metric", "string"),
    ("dimension", "string"),
    ("dimension_name", "string"),
    ("value", "float64"),
    ("currency", "string"),
    ("suppressed", "bool"),
)
#: The figures of a day's detail that the long shape lists per dimension, and their metric.
_LISTS = {
    "top_products": "top_product_count",
    "top_categories": "top_category_count",
    "top_paths": "top_path_count",
}
_SINGLES = {
    "occupancy_peak": "occupancy_peak",
    "basket_value_median": "basket_value_median",
    "basket_size_median": "basket_size_median",
}


def columns(shape: Shape) -> tuple[str, ...]:
    """The columns of ``shape``, in order."""
    return tuple(name for name, _ in (WIDE if shape == "wide" else LONG))


def schema(shape: Shape) -> pa.Schema:
    """The fixed Arrow schema of ``shape``. pyarrow is loaded here, for a Parquet export
    only: it weighs tens of MB a collector that never writes Parquet need not carry."""
    import pyarrow as pa

    return pa.schema(
        [
            (name, pa.bool_() if kind == "bool" else pa.type_for_alias(kind))
            for name, kind in (WIDE if shape == "wide" else LONG)
        ]
    )


def _stamp(ms: int, timezone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, zone(timezone)).isoformat(timespec="seconds")


def _key(day: SiteDay, name: str | None) -> dict[str, object]:
    return {
        "site": day.site,
        "site_name": name or "",
        "venue": day.venue,
        "timezone": day.timezone,
        "day": day.day,
        "period_start": _stamp(day.start_ms, day.timezone),
        "period_end": _stamp(day.end_ms, day.timezone),
    }


def _ratio(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return round(scale * numerator / denominator, 4) if denominator else None


def wide_line(day: SiteDay, name: str | None) -> dict[str, object]:
    """One site's day as a wide line (`WIDE`)."""
    s = day.sums
    released = not day.suppressed
    line: dict[str, object] = {
        **_key(day, name),
        "hours": day.hours,
        "suppressed_hours": day.suppressed_hours,
        "suppressed": day.suppressed,
    }
    for column in DAY_SUMS:
        value = s.get(column, 0.0)
        line[column] = (value if column == "revenue" else int(value)) if released else None
    line["currency"] = day.currency
    ratios = {
        "conversion": _ratio(s["orders"], s["footfall_in"]),
        "nps": _ratio(s["promoters"] - s["detractors"], s["nps_answers"], 100),
        "ces": _ratio(s["ces_sum"], s["ces_answers"]),
        "basket_value_mean": _ratio(s["revenue"], s["orders"] - s["unpriced_orders"]),
        "identified_share": _ratio(s["identified_visits"], s["visits"]),
    }
    for column, ratio in ratios.items():
        line[column] = ratio if released else None
    return line


def top_products(days: Iterable[SiteDay]) -> set[str]:
    """The products the days list among their top ones."""
    return {
        str(entry[0])
        for day in days
        for entry in cast("list[list[object]]", day.detail.get("top_products") or [])
    }


def long_lines(
    day: SiteDay, name: str | None, products: Mapping[str, str] | None = None
) -> Iterator[dict[str, object]]:
    """One site's day as long lines (`LONG`): each sum, revenue in every currency, and the
    detail per zone, product (its name beside, from ``products``), category, path and
    dead-letter reason."""
    key = _key(day, name)
    product_names = products or {}

    def line(
        metric: str, value: float | None, dimension: str = "", currency: str = ""
    ) -> dict[str, object]:
        return {
            **key,
            "metric": metric,
            "dimension": dimension,
            "dimension_name": product_names.get(dimension, "")
            if metric == "top_product_count"
            else "",
            "value": value,
            "currency": currency,
            "suppressed": day.suppressed,
        }

    yield line("hours", day.hours)
    yield line("suppressed_hours", day.suppressed_hours)
    for column in DAY_SUMS:
        value = None if day.suppressed else day.sums.get(column, 0.0)
        yield line(column, value, currency=day.currency if column == "revenue" else "")
    if day.suppressed:
        return
    detail = day.detail
    other = detail.get("other_revenue")
    if isinstance(other, Mapping):
        for code, amount in sorted(other.items()):
            yield line("revenue", float(amount), currency=str(code))
    for source, metric in _SINGLES.items():
        single = detail.get(source)
        if isinstance(single, int | float):
            yield line(metric, float(single))
    dwell = detail.get("dwell_s")
    if isinstance(dwell, Mapping):
        for zone_name, figures in sorted(dwell.items()):
            if not isinstance(figures, Mapping):
                continue
            if figures.get("suppressed"):
                yield {**line("dwell_median_s", None, str(zone_name)), "suppressed": True}
                continue
            for field, metric in (("median", "dwell_median_s"), ("p90", "dwell_p90_s")):
                quantile = figures.get(field)
                if isinstance(quantile, int | float):
                    yield line(metric, float(quantile), str(zone_name))
    for source, metric in _LISTS.items():
        entries = detail.get(source)
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, list | tuple) and len(entry) == 2:
                    yield line(metric, float(entry[1]), str(entry[0]))
    reasons = detail.get("dead_letters_by_reason")
    if isinstance(reasons, Mapping):
        for reason, n in sorted(reasons.items()):
            yield line("dead_letters", float(n), str(reason))


def lines(
    days: Iterable[SiteDay],
    names: Mapping[str, str | None],
    shape: Shape,
    products: Mapping[str, str] | None = None,
) -> Iterator[dict[str, object]]:
    """The export's lines for ``days`` in ``shape`` (long lines name products from
    ``products``)."""
    for day in days:
        name = names.get(day.site)
        if shape == "wide":
            yield wide_line(day, name)
        else:
            yield from long_lines(day, name, products)


def rows(
    sites: Sequence[Described],
    days_of: Callable[[str], list[SiteDay]],
    shape: Shape,
    products_of: Callable[[str, set[str]], Mapping[str, str]],
) -> Iterator[list[dict[str, object]]]:
    """The export's lines a site at a time: ``days_of(site)`` reads one site's days,
    ``products_of(site, ids)`` the names of the products they list (long lines only)."""
    for site in sites:
        days = days_of(site.site)
        products = products_of(site.site, top_products(days)) if shape == "long" else {}
        yield list(lines(days, {site.site: site.name}, shape, products))


def csv_chunks(chunks: Iterable[Sequence[Mapping[str, object]]], shape: Shape) -> Iterator[str]:
    """The export as CSV text, the header first, then a piece per chunk of lines; every text
    made `spreadsheet_safe`, an empty figure an empty field."""
    names = columns(shape)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for chunk in chunks:
        writer.writerows({k: spreadsheet_safe(v) for k, v in line.items()} for line in chunk)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def write_parquet(
    chunks: Iterable[Sequence[Mapping[str, object]]], shape: Shape, sink: IO[bytes]
) -> None:
    """The export as one Parquet file on ``sink``, a row group per chunk that holds lines."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fixed = schema(shape)
    with pq.ParquetWriter(sink, fixed, compression="zstd") as writer:
        wrote = False
        for chunk in chunks:
            if chunk:
                writer.write_table(pa.Table.from_pylist(list(chunk), schema=fixed))
                wrote = True
        if not wrote:
            writer.write_table(fixed.empty_table())


def parquet_file(chunks: Iterable[Sequence[Mapping[str, object]]], shape: Shape) -> IO[bytes]:
    """The export as Parquet in a temporary file (in memory while small), rewound."""
    sink = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 - returned
    write_parquet(chunks, shape, sink)
    sink.seek(0)
    return sink
