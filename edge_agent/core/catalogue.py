"""The site's product catalogue: what a catalogue file says, what the tills say, and the name a
screen shows.

Pure: bytes or decoded events in, entries and refusals out. A catalogue file is CSV (with a
header row) or JSON (an array of objects), with the columns of docs/catalogue.md; each row
that cannot be taken is refused with its line (CSV) or index (JSON) and the reason, and the
others are taken.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import orjson

#: The columns a catalogue file may have; only ``product_id`` is required.
COLUMNS = ("product_id", "name", "category", "price", "currency", "available")
MAX_ID = 64
MAX_NAME = 200
MAX_CATEGORY = 100
MAX_PRICE = 1_000_000_000.0
#: The largest catalogue file taken (a large shop's assortment, with room).
MAX_FILE_BYTES = 64 * 1024 * 1024
_CURRENCY = re.compile("[A-Z]{3}")
_TRUE = frozenset({"1", "true", "yes", "y"})
_FALSE = frozenset({"0", "false", "no", "n"})
#: The events whose products tell the catalogue about them, and where their products are.
_ORDER = "Order Completed"
_ONE_PRODUCT = frozenset({"Product Viewed", "Product Added", "Product Removed"})


@dataclass(frozen=True, slots=True)
class Entry:
    """What is known of one product; None: not said (the stored value stays)."""

    product_id: str
    name: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    available: bool | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row of a catalogue file that was not taken: where it is, and why."""

    where: str
    reason: str


def names_of(catalogue: Mapping[str, str], *tills: Mapping[str, str]) -> dict[str, str]:
    """Each product's name: the ``catalogue``'s (the site's word), else the first of the
    ``tills``' mappings that gives it one (an empty name gives none)."""
    out: dict[str, str] = {}
    for told in reversed(tills):
        out.update((item, name) for item, name in told.items() if name)
    return {**out, **catalogue}


def shown_name(product_id: str, name: str | None) -> str:
    """What a screen calls a product: its name, or, visibly, that it has none."""
    if name:
        return name
    short = product_id if len(product_id) <= 12 else product_id[:12] + "…"
    return f"unnamed product {short}"


def _text(value: object, column: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{column} must be text")
    value = value.strip()
    if "\x00" in value or any(c in value for c in "\r\n"):
        raise ValueError(f"{column} holds a control character")
    if len(value) > limit:
        raise ValueError(f"{column} is {len(value)} characters, at most {limit} are taken")
    return value or None


def _price(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("price must be a number")
    try:
        price = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"price {str(value)[:40]!r} is not a number (use a dot: 12.50)") from None
    if not 0 <= price <= MAX_PRICE:
        raise ValueError(f"price {price:g} is not between 0 and {MAX_PRICE:,.0f}")
    return price


def _available(value: object) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"available {str(value)[:20]!r} is not true or false")


def entry(row: Mapping[str, object]) -> Entry:
    """One catalogue row as an entry.

    Raises:
        ValueError: the row says what to fix.
    """
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r}: the columns are {', '.join(COLUMNS)}")
    product_id = _text(row.get("product_id"), "product_id", MAX_ID)
    if product_id is None:
        raise ValueError("product_id is missing")
    currency = _text(row.get("currency"), "currency", 64)
    if currency is not None and not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency {currency!r} is not an ISO 4217 code such as EUR or TWD")
    return Entry(
        product_id,
        _text(row.get("name"), "name", MAX_NAME),
        _text(row.get("category"), "category", MAX_CATEGORY),
        _price(row.get("price")),
        currency,
        _available(row.get("available")),
    )


def parse_file(data: bytes, json_format: bool) -> tuple[list[Entry], list[Refusal]]:
    """The entries of a catalogue file and the rows refused. A product listed twice keeps
    its last row.

    Raises:
        ValueError: the file as a whole cannot be read (not UTF-8, not CSV or JSON, no
            ``product_id`` column, too large).
    """
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"the file is {len(data):,} bytes; at most {MAX_FILE_BYTES:,} are taken")
    rows = _json_rows(data) if json_format else _csv_rows(data)
    taken: dict[str, Entry] = {}
    refused: list[Refusal] = []
    for where, row in rows:
        if isinstance(row, str):
            refused.append(Refusal(where, row))
            continue
        try:
            found = entry(row)
        except ValueError as exc:
            refused.append(Refusal(where, str(exc)))
            continue
        taken[found.product_id] = found
    return list(taken.values()), refused


#: A row as read from the file, or why it cannot be one.
_Row = tuple[str, Mapping[str, object] | str]


def _csv_rows(data: bytes) -> list[_Row]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the file is not UTF-8 (byte {exc.start})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    if "product_id" not in header:
        raise ValueError("the first line must name the columns, product_id among them")
    reader.fieldnames = header
    out: list[_Row] = []
    try:
        for row in reader:
            where = f"line {reader.line_num}"
            if row.get(None):
                out.append((where, "more fields than the first line names"))
                continue
            out.append((where, {k: v for k, v in row.items() if k is not None and v is not None}))
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}: {exc}") from exc
    return out


def _json_rows(data: bytes) -> list[_Row]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the file is not JSON: {exc}") from exc
    if not isinstance(document, list):
        raise ValueError("a JSON catalogue is an array of objects, one per product")
    return [
        (f"item {n}", row if isinstance(row, dict) else "not an object")
        for n, row in enumerate(document)
    ]


def from_event(name: str | None, properties: object) -> Iterable[Entry]:
    """What a till's or shelf's event says about its products (name, category, price)."""
    if not isinstance(properties, dict):
        return []
    if name == _ORDER:
        lines = properties.get("products")
        products = [p for p in lines if isinstance(p, dict)] if isinstance(lines, list) else []
    elif name in _ONE_PRODUCT:
        products = [properties]
    else:
        return []
    out = []
    for product in products:
        fields = {k: product.get(k) for k in ("product_id", "name", "category", "price")}
        try:
            found = entry({k: v for k, v in fields.items() if v is not None})
        except ValueError:
            continue  # the event's schema already bounds these; an odd one teaches nothing
        if found.name or found.category or found.price is not None:
            out.append(found)
    return out


def from_events(events: Iterable[tuple[str | None, str]]) -> list[Entry]:
    """What stored events (name, JSON body) say about their products; only the bodies of
    product events are read."""
    out: list[Entry] = []
    for name, body in events:
        if name == _ORDER or name in _ONE_PRODUCT:
            out.extend(from_event(name, orjson.loads(body).get("properties")))
    return out


#: A model that knows less than this share of the items a site sells does not fit the site
#: (its vocabulary comes from other shops' ids): its empty lists, ``/readyz`` and
#: ``models list`` say so.
MIN_COVERAGE = 0.2


def share_known(vocabulary: Collection[str], sold: Collection[str]) -> float:
    """The share of the items a site sold that a model's ``vocabulary`` knows (1.0 when the
    site sold nothing yet: there is nothing to judge it on)."""
    known = vocabulary if isinstance(vocabulary, (set, frozenset)) else frozenset(vocabulary)
    return sum(1 for item in sold if item in known) / len(sold) if sold else 1.0
