"""Products and real receipts from a shop's sales export (the UCI "Online Retail" data set).

The package ships the first 10,000 lines of the public Online Retail export (a UK gift
shop, 1-5 December 2010: its columns but the country; see ``data/README.md`` for the source
and licence), so the demo site sells real baskets with real names at real prices, and its
loyalty members replay real, anonymous customers' histories in the order they happened.
`load_sales` reads the packaged file or any export with that header.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import IO

from edge_agent.errors import ConfigError

_PACKAGED = "data/online_retail_4days.csv.gz"
_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
)
_GZIP_MAGIC = b"\x1f\x8b"
#: Sold goods have a numeric stock code (``85123A``); postage, manual lines, bank charges
#: and the like (``POST``, ``M``, ``BANK CHARGES``) are not products anyone would suggest.
_PRODUCT_CODE = re.compile(r"\d{5}[A-Za-z]{0,3}")
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%y %H:%M")


@dataclass(frozen=True, slots=True)
class Product:
    """A product of the catalogue: its stock code, the name on the receipt, its unit price."""

    product_id: str
    name: str
    price: float


@dataclass(frozen=True, slots=True)
class BasketLine:
    """One line of a real receipt: the product, how many, and what the line cost."""

    product: Product
    quantity: int
    line_total: float

    @property
    def unit_price(self) -> float:
        """What one item cost on this receipt (may differ from the catalogue price)."""
        return round(self.line_total / self.quantity, 2)


@dataclass(frozen=True, slots=True)
class Basket:
    """One receipt: its lines in the export's order, when it was rung up (UTC), and the
    export's anonymous customer number (None: a customer the shop does not know)."""

    lines: tuple[BasketLine, ...]
    at: datetime
    customer: str | None = None

    @property
    def total(self) -> float:
        """The receipt total: the sum of the line totals."""
        return round(sum(line.line_total for line in self.lines), 2)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every product sold in the export, by product id, and every receipt in time order."""

    products: Mapping[str, Product]
    baskets: tuple[Basket, ...]


@dataclass(frozen=True, slots=True)
class _Row:
    invoice: str
    at: datetime
    customer: str | None
    product_id: str
    name: str
    quantity: int
    unit_price: float


def load_sales(path: Path | None = None) -> Catalogue:
    """Read an Online Retail export into a catalogue and its receipts.

    A receipt is the lines of one invoice. Cancelled invoices (``C…``), returns, free lines
    and non-product lines (postage, manual, fees) are not sold baskets and are left out. A
    product's name is the first description it has, its price its most frequent unit price
    (the same product rings up at different prices for different quantities). Names are
    written in sentence case, as a screen shows them.

    Args:
        path: a CSV file, gzipped or not, with the Online Retail header; None reads the
            sample shipped in the package.

    Returns:
        The products by id and the receipts in the order they were rung up.

    Raises:
        ConfigError: the file is missing or unreadable, lacks a column, holds a value that
            is not a number or a date where one is needed, or has no usable line.
    """
    where = str(path) if path is not None else f"the packaged {_PACKAGED}"
    try:
        with _open(path) as text:
            rows = list(_rows(csv.DictReader(text), where))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"sales export {where} does not exist: give the path of an Online Retail CSV "
            "or leave it out to use the packaged sample"
        ) from exc
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"sales export {where} cannot be read: {exc}") from exc
    if not rows:
        raise ConfigError(f"sales export {where} has no sale with a positive quantity and price")
    return _catalogue(rows)


@contextmanager
def _open(path: Path | None) -> Iterator[IO[str]]:
    source = resources.files("edge_agent.demo").joinpath(_PACKAGED) if path is None else path
    with source.open("rb") as raw:
        # Sniffed rather than judged by the name: a user's export may be gzipped as .csv.
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        binary: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        )
        with io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
            yield text


def _when(value: str, where: str, line: int) -> datetime:
    for form in _DATE_FORMATS:
        try:
            return datetime.strptime(value.strip(), form).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ConfigError(
        f"sales export {where}, line {line}: InvoiceDate {value[:40]!r} is not a date "
        "(YYYY-MM-DD HH:MM:SS or M/D/YYYY H:MM)"
    )


def _rows(reader: csv.DictReader[str], where: str) -> Iterator[_Row]:
    header = reader.fieldnames or []
    missing = [column for column in _COLUMNS if column not in header]
    if missing:
        raise ConfigError(
            f"sales export {where} lacks column(s) {', '.join(missing)}; its header is "
            f"{','.join(header) or '(empty)'}: give an Online Retail CSV with its header"
        )
    for record in reader:
        # A line cut off mid-row (a truncated copy) is not a sale.
        if None in record.values():
            continue
        code = record["StockCode"].strip()
        if record["InvoiceNo"].startswith("C") or not _PRODUCT_CODE.fullmatch(code):
            continue
        try:
            quantity = int(record["Quantity"])
            unit_price = float(record["UnitPrice"])
        except ValueError as exc:
            raise ConfigError(
                f"sales export {where}, line {reader.line_num}: Quantity and UnitPrice "
                f"must be numbers ({exc})"
            ) from exc
        # The export writes names in capitals; a screen reads better in sentence case.
        name = " ".join(record["Description"].split()).capitalize()
        # Returns, corrections and free samples: not part of a basket anyone paid for.
        if quantity <= 0 or unit_price <= 0 or not name:
            continue
        customer = record["CustomerID"].strip().removesuffix(".0") or None
        yield _Row(
            invoice=record["InvoiceNo"],
            at=_when(record["InvoiceDate"], where, reader.line_num),
            customer=customer,
            product_id=code,
            name=name,
            quantity=quantity,
            unit_price=unit_price,
        )


def _catalogue(rows: list[_Row]) -> Catalogue:
    prices: dict[str, Counter[float]] = {}
    names: dict[str, str] = {}
    for row in rows:
        prices.setdefault(row.product_id, Counter())[row.unit_price] += 1
        names.setdefault(row.product_id, row.name)
    # most_common keeps first-seen order among ties, so the price is stable for a given file.
    products = {
        product_id: Product(product_id, names[product_id], seen.most_common(1)[0][0])
        for product_id, seen in prices.items()
    }
    grouped: dict[str, list[_Row]] = {}
    for row in rows:
        grouped.setdefault(row.invoice, []).append(row)
    baskets = [
        Basket(
            tuple(
                BasketLine(products[r.product_id], r.quantity, round(r.quantity * r.unit_price, 2))
                for r in lines
            ),
            at=lines[0].at,
            customer=lines[0].customer,
        )
        for lines in grouped.values()
    ]
    baskets.sort(key=lambda basket: basket.at)
    return Catalogue(products=MappingProxyType(products), baskets=tuple(baskets))
