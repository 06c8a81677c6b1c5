"""The demo's sales: the packaged Online Retail sample, the export's format, bad files."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.demo.catalogue import Basket, BasketLine, Catalogue, Product, load_sales
from edge_agent.errors import ConfigError

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


@pytest.fixture(scope="module")
def packaged() -> Catalogue:
    return load_sales()


def test_packaged_sample_has_every_receipt_and_product(packaged: Catalogue) -> None:
    assert len(packaged.baskets) == 423
    assert len(packaged.products) == 1985
    assert all(basket.lines for basket in packaged.baskets)
    assert all(a.at <= b.at for a, b in zip(packaged.baskets, packaged.baskets[1:], strict=False))
    # Known customers come back: the demo's personal suggestions need their histories.
    customers = [b.customer for b in packaged.baskets if b.customer is not None]
    assert sum(customers.count(c) >= 2 for c in set(customers)) == 43


def test_packaged_prices_quantities_and_names_are_real(packaged: Catalogue) -> None:
    assert all(product.price > 0 and product.name for product in packaged.products.values())
    lines = [line for basket in packaged.baskets for line in basket.lines]
    assert all(line.quantity >= 1 and line.line_total > 0 for line in lines)


def test_first_row_of_the_export_maps_to_product_and_receipt_line(packaged: Catalogue) -> None:
    # 536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850
    product = packaged.products["85123A"]
    assert product.name == "White hanging heart t-light holder"
    first = packaged.baskets[0]
    assert first.lines[0] == BasketLine(product, quantity=6, line_total=15.3)
    assert first.lines[0].unit_price == 2.55
    assert first.customer == "17850"
    assert first.at == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)


def test_receipts_leave_out_cancellations_returns_and_non_products(tmp_path: Path) -> None:
    export = tmp_path / "sales.csv.gz"
    rows = (
        "1,85123A,WHITE HEART,2,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
        "1,71053,  WHITE   LANTERN ,1,2010-12-01 08:26:00,3.39,17850.0,United Kingdom\n"
        "1,POST,POSTAGE,1,2010-12-01 08:26:00,18,17850.0,United Kingdom\n"
        "2,71053,WHITE LANTERN,3,12/1/2010 9:00,3.00,,United Kingdom\n"
        "C3,85123A,WHITE HEART,-1,2010-12-01 10:00:00,2.55,17850,United Kingdom\n"
        "4,85123A,WHITE HEART,1,2010-12-01 11:00:00,0,17850,United Kingdom\n"
        "5,85123A,WHITE HEART,1,2010-12-01 1"
    )
    export.write_bytes(gzip.compress((HEADER + rows).encode("utf-8")))

    catalogue = load_sales(export)

    heart, lantern = catalogue.products["85123A"], catalogue.products["71053"]
    assert heart == Product("85123A", "White heart", 2.55)
    assert lantern.name == "White lantern"
    assert catalogue.baskets == (
        Basket(
            (BasketLine(heart, 2, 5.1), BasketLine(lantern, 1, 3.39)),
            datetime(2010, 12, 1, 8, 26, tzinfo=UTC),
            "17850",
        ),
        Basket((BasketLine(lantern, 3, 9.0),), datetime(2010, 12, 1, 9, 0, tzinfo=UTC), None),
    )
    assert catalogue.baskets[0].total == 8.49
    # 3.39 and 3.00 each rang up once: a tie goes to the price seen first.
    assert lantern.price == 3.39


def test_missing_file_says_which_and_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.csv does not exist.*Online Retail CSV"):
        load_sales(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        pytest.param("InvoiceNo,StockCode,Quantity\n", "Description", id="columns"),
        pytest.param("", "InvoiceNo", id="empty-file"),
    ],
)
def test_missing_columns_are_named(tmp_path: Path, header: str, missing: str) -> None:
    export = tmp_path / "export.csv"
    export.write_text(header, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"lacks column.*{missing}"):
        load_sales(export)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param(
            "1,85123A,HEART,two,2010-12-01 08:26:00,2.55,1,UK\n",
            "line 2: Quantity and UnitPrice must be numbers",
            id="quantity",
        ),
        pytest.param(
            "1,85123A,HEART,2,yesterday,2.55,1,UK\n",
            "line 2: InvoiceDate 'yesterday' is not a date",
            id="date",
        ),
    ],
)
def test_a_bad_value_names_the_line(tmp_path: Path, row: str, message: str) -> None:
    export = tmp_path / "export.csv"
    export.write_text(HEADER + row, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_sales(export)


def test_file_with_only_returns_has_no_catalogue(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_text(HEADER + "C1,85123A,HEART,-1,2010-12-01 08:26:00,2.55,1,UK\n")
    with pytest.raises(ConfigError, match="no sale"):
        load_sales(export)


def test_corrupt_gzip_is_a_config_error(tmp_path: Path) -> None:
    export = tmp_path / "export.csv.gz"
    export.write_bytes(gzip.compress(HEADER.encode("utf-8"))[:12])
    with pytest.raises(ConfigError, match="cannot be read"):
        load_sales(export)
