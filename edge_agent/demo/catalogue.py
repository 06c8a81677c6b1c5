"""Product catalogue and real baskets from a POS export (the Ta Feng grocery data set).

The package ships four days of the public Ta Feng export with the personal columns
(customer id, age group, postcode) removed and each basket renumbered, so the demo site
sells real baskets at real prices without carrying anyone's data. `load_tafeng` also reads
the original export, whose ``CUSTOMER_ID`` then only serves to group rows into baskets.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import IO

from edge_agent.errors import ConfigError

_PACKAGED = "data/ta_feng_4days.csv.gz"
_COLUMNS = ("TRANSACTION_DT", "PRODUCT_SUBCLASS", "PRODUCT_ID", "AMOUNT", "SALES_PRICE")
# The shipped file has a renumbered basket id; the original export only has the customer.
_BASKET_KEYS = ("BASKET_ID", "CUSTOMER_ID")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Product:
    """A product of the catalogue: its POS id, category (Ta Feng sub-class) and unit price."""

    product_id: str
    category: str
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
    """The lines one customer bought on one day, in the order the export lists them."""

    lines: tuple[BasketLine, ...]

    @property
    def total(self) -> float:
        """The receipt total: the sum of the line totals."""
        return round(sum(line.line_total for line in self.lines), 2)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every product sold in the export, by product id, and every basket."""

    products: Mapping[str, Product]
    baskets: tuple[Basket, ...]


@dataclass(frozen=True, slots=True)
class _Row:
    basket_key: tuple[str, str]
    product_id: str
    category: str
    quantity: int
    line_total: float


def load_tafeng(path: Path | None = None) -> Catalogue:
    """Read a Ta Feng POS export into a catalogue and its baskets.

    A basket is the rows of one day and one basket id (or customer, in the original
    export). A product's catalogue price is its most frequent unit price in the export,
    since the same product rings up at slightly different prices on different days.

    Args:
        path: a CSV file, gzipped or not, with the Ta Feng header; None reads the sample
            shipped in the package.

    Returns:
        The products by id and the baskets in the order they first appear.

    Raises:
        ConfigError: the file is missing or unreadable, lacks a column, holds a value that
            is not a number where one is needed, or has no usable row.
    """
    where = str(path) if path is not None else f"the packaged {_PACKAGED}"
    try:
        with _open(path) as text:
            rows = list(_rows(csv.DictReader(text), where))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"Ta Feng export {where} does not exist: give the path of a Ta Feng CSV "
            "(e.g. ta_feng_all_months_merged.csv) or leave it out to use the packaged sample"
        ) from exc
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"Ta Feng export {where} cannot be read: {exc}") from exc
    if not rows:
        raise ConfigError(f"Ta Feng export {where} has no sale with a positive quantity and price")
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


def _rows(reader: csv.DictReader[str], where: str) -> Iterator[_Row]:
    header = reader.fieldnames or []
    missing = [column for column in _COLUMNS if column not in header]
    basket_column = next((key for key in _BASKET_KEYS if key in header), None)
    if missing or basket_column is None:
        needed = [*missing, *([] if basket_column else [" or ".join(_BASKET_KEYS)])]
        raise ConfigError(
            f"Ta Feng export {where} lacks column(s) {', '.join(needed)}; its header is "
            f"{','.join(header) or '(empty)'}: give a Ta Feng CSV with the original header"
        )
    for record in reader:
        # The public 4-day sample ends in a line cut off mid-row; a short row is not a sale.
        if None in record.values():
            continue
        try:
            quantity = int(record["AMOUNT"])
            line_total = float(record["SALES_PRICE"])
        except ValueError as exc:
            raise ConfigError(
                f"Ta Feng export {where}, line {reader.line_num}: AMOUNT and SALES_PRICE "
                f"must be numbers ({exc})"
            ) from exc
        # Returns and corrections appear in the raw export as rows with a quantity of zero
        # or less, or a negative price: they are not part of any basket that was bought.
        if quantity <= 0 or line_total < 0:
            continue
        yield _Row(
            basket_key=(record["TRANSACTION_DT"], record[basket_column]),
            product_id=record["PRODUCT_ID"],
            category=record["PRODUCT_SUBCLASS"],
            quantity=quantity,
            line_total=line_total,
        )


def _catalogue(rows: list[_Row]) -> Catalogue:
    prices: dict[str, Counter[float]] = {}
    categories: dict[str, str] = {}
    for row in rows:
        prices.setdefault(row.product_id, Counter())[round(row.line_total / row.quantity, 2)] += 1
        categories.setdefault(row.product_id, row.category)
    # most_common keeps first-seen order among ties, so the price is stable for a given file.
    products = {
        product_id: Product(product_id, categories[product_id], seen.most_common(1)[0][0])
        for product_id, seen in prices.items()
    }
    grouped: dict[tuple[str, str], list[BasketLine]] = {}
    for row in rows:
        line = BasketLine(products[row.product_id], row.quantity, row.line_total)
        grouped.setdefault(row.basket_key, []).append(line)
    baskets = tuple(Basket(tuple(lines)) for lines in grouped.values())
    return Catalogue(products=MappingProxyType(products), baskets=baskets)
