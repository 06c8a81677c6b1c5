"""The catalogue file's rows and refusals, what the tills' events teach, and shown names."""

from __future__ import annotations

import orjson
import pytest

from edge_agent.core.catalogue import Entry, from_event, from_events, parse_file, shown_name

GOOD = (
    "product_id,name,category,price,currency,available\n"
    "4710001,Espresso beans 500 g,coffee,12.50,EUR,true\n"
    "4710002,Oat milk 1 l,dairy,,,no\n"
)


def test_a_csv_catalogue_is_taken_row_by_row() -> None:
    entries, refused = parse_file(b"\xef\xbb\xbf" + GOOD.encode(), json_format=False)
    assert refused == []
    assert entries == [
        Entry("4710001", "Espresso beans 500 g", "coffee", 12.5, "EUR", True),
        Entry("4710002", "Oat milk 1 l", "dairy", None, None, False),
    ]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (",Nameless,,,,", "product_id is missing"),
        ("47103,Tea,tea,twelve,,", "price 'twelve' is not a number (use a dot: 12.50)"),
        ("47104,Tea,tea,-1,,", "price -1 is not between 0 and 1,000,000,000"),
        ("47105,Tea,tea,1,euro,", "currency 'euro' is not an ISO 4217 code such as EUR or TWD"),
        ("47106,Tea,tea,1,EUR,maybe", "available 'maybe' is not true or false"),
        ("47107,Tea,tea,1,EUR,yes,extra", "more fields than the first line names"),
        ("47108," + "x" * 201 + ",,,,", "name is 201 characters, at most 200 are taken"),
    ],
)
def test_a_bad_row_is_refused_with_its_line_and_the_others_are_taken(row: str, reason: str) -> None:
    entries, refused = parse_file((GOOD + row + "\n").encode(), json_format=False)
    assert [e.product_id for e in entries] == ["4710001", "4710002"]
    assert [(r.where, r.reason) for r in refused] == [("line 4", reason)]


def test_a_json_catalogue_and_its_refusals_by_index() -> None:
    rows = [
        {"product_id": "a1", "name": "Green tea", "price": 3},
        "not a row",
        {"product_id": "a2", "colour": "red"},
        {"product_id": "a1", "name": "Green tea 250 g"},
    ]
    entries, refused = parse_file(orjson.dumps(rows), json_format=True)
    assert entries == [Entry("a1", "Green tea 250 g")]  # a product listed twice: the last row
    assert [(r.where, r.reason[:30]) for r in refused] == [
        ("item 1", "not an object"),
        ("item 2", "unknown column 'colour': the c"),
    ]


@pytest.mark.parametrize(
    ("data", "json_format", "message"),
    [
        (b"name,price\nTea,1\n", False, "product_id among them"),
        (b"\xff\xfe", False, "not UTF-8"),
        (b"{}", True, "an array of objects"),
        (b"[oops", True, "not JSON"),
    ],
)
def test_a_file_that_is_no_catalogue_is_refused_whole(
    data: bytes, json_format: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_file(data, json_format)


def test_the_tills_events_teach_names_categories_and_prices() -> None:
    order = {
        "products": [
            {"product_id": "p1", "name": "Bread", "price": 2.0, "quantity": 1},
            {"product_id": "p2", "quantity": 2},
            {"product_id": "p3", "category": "fruit"},
        ],
        "total": 6.0,
    }
    assert [e.product_id for e in from_event("Order Completed", order)] == ["p1", "p3"]
    viewed = {"product_id": "p4", "name": "Jam", "price": 4.5}
    assert from_event("Product Viewed", viewed) == [Entry("p4", "Jam", None, 4.5)]
    assert from_event("Zone Entered", {"zone": "a"}) == []
    body = orjson.dumps({"properties": viewed}).decode()
    assert from_events([("Product Added", body), ("Door Counted", "not even JSON")]) == [
        Entry("p4", "Jam", None, 4.5)
    ]


def test_a_product_without_a_name_is_said_to_have_none() -> None:
    assert shown_name("p1", "Bread") == "Bread"
    assert shown_name("p1", None) == "unnamed product p1"
    assert shown_name("4711985005572123", "") == "unnamed product 471198500557…"
