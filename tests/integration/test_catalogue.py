"""The Ta Feng catalogue: the packaged sample, the original export's format, bad files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from edge_agent.demo.catalogue import Basket, BasketLine, Catalogue, Product, load_tafeng
from edge_agent.errors import ConfigError

RAW_HEADER = (
    '"TRANSACTION_DT","CUSTOMER_ID","AGE_GROUP","PIN_CODE","PRODUCT_SUBCLASS","PRODUCT_ID",'
    '"AMOUNT","ASSET","SALES_PRICE"\n'
)


@pytest.fixture(scope="module")
def packaged() -> Catalogue:
    return load_tafeng()


def test_packaged_sample_has_every_basket_and_product(packaged: Catalogue) -> None:
    assert len(packaged.baskets) == 2397
    assert len(packaged.products) == 4896
    assert all(basket.lines for basket in packaged.baskets)


def test_packaged_prices_and_quantities_are_positive(packaged: Catalogue) -> None:
    assert all(product.price > 0 for product in packaged.products.values())
    lines = [line for basket in packaged.baskets for line in basket.lines]
    assert all(line.quantity >= 1 and line.line_total > 0 for line in lines)


def test_first_row_of_the_export_maps_to_product_and_basket_line(packaged: Catalogue) -> None:
    # "11/1/2000","01104905","45-49","115","110411","4710199010372","2","24","30"
    product = packaged.products["4710199010372"]
    assert product == Product("4710199010372", category="110411", price=15.0)
    first = packaged.baskets[0].lines[0]
    assert first == BasketLine(product, quantity=2, line_total=30.0)
    assert first.unit_price == 15.0


def test_catalogue_price_is_the_most_frequent_unit_price(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_text(
        RAW_HEADER
        + '"11/1/2000","1","","","110411","A","2","24","30"\n'
        + '"11/2/2000","2","","","110411","A","2","24","28"\n'
        + '"11/3/2000","3","","","110411","A","10","120","150"\n',
        encoding="utf-8",
    )
    assert load_tafeng(export).products["A"].price == 15.0


def test_original_export_groups_by_day_and_customer_and_skips_returns(tmp_path: Path) -> None:
    export = tmp_path / "raw.csv.gz"
    rows = (
        '"11/1/2000","007","30-34","115","100201","A","1","10","12"\n'
        '"11/1/2000","008","30-34","115","100202","B","3","10","30"\n'
        '"11/1/2000","007","30-34","115","100202","B","2","10","21"\n'
        '"11/2/2000","007","30-34","115","100201","A","-1","-10","-12"\n'
        '"11/2/2000","007","30-34","115","100201","A","0","0","0"\n'
        '"11/2/2000","007","30-34","115","100203","C","1","5","7"\n'
        '"11/2/2000","009","30-34","115","100201","A","1","-10","-12"\n'
        '"11/4/2000","00056595","40-44","221","500207","471450'
    )
    export.write_bytes(gzip.compress((RAW_HEADER + rows).encode("utf-8")))

    catalogue = load_tafeng(export)

    a, b, c = (catalogue.products[key] for key in "ABC")
    assert catalogue.baskets == (
        Basket((BasketLine(a, 1, 12.0), BasketLine(b, 2, 21.0))),
        Basket((BasketLine(b, 3, 30.0),)),
        Basket((BasketLine(c, 1, 7.0),)),
    )
    assert catalogue.baskets[0].total == 33.0
    # 10.0 and 10.5 each rang up once: a tie goes to the price seen first.
    assert b.price == 10.0


def test_missing_file_says_which_and_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.csv does not exist.*Ta Feng CSV"):
        load_tafeng(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        pytest.param(
            "TRANSACTION_DT,BASKET_ID,PRODUCT_ID,AMOUNT\n", "PRODUCT_SUBCLASS", id="columns"
        ),
        pytest.param(
            "TRANSACTION_DT,PRODUCT_SUBCLASS,PRODUCT_ID,AMOUNT,SALES_PRICE\n",
            "BASKET_ID or CUSTOMER_ID",
            id="basket-key",
        ),
        pytest.param("", "TRANSACTION_DT", id="empty-file"),
    ],
)
def test_missing_columns_are_named(tmp_path: Path, header: str, missing: str) -> None:
    export = tmp_path / "export.csv"
    export.write_text(header, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"lacks column.*{missing}"):
        load_tafeng(export)


def test_non_numeric_amount_names_the_line(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_text(
        RAW_HEADER + '"11/1/2000","1","","","1","A","two","1","2"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="line 2: AMOUNT and SALES_PRICE must be numbers"):
        load_tafeng(export)


def test_file_with_only_returns_has_no_catalogue(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_text(
        RAW_HEADER + '"11/1/2000","1","","","1","A","-1","1","-2"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="no sale"):
        load_tafeng(export)


def test_corrupt_gzip_is_a_config_error(tmp_path: Path) -> None:
    export = tmp_path / "export.csv.gz"
    export.write_bytes(gzip.compress(RAW_HEADER.encode("utf-8"))[:12])
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tafeng(export)
