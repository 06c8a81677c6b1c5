"""The collector's packages are an extra: without them its command says how to get them."""

from __future__ import annotations

import pytest

from edge_agent.collector.cli import EXTRA, check_extra
from edge_agent.errors import CollectorError


def test_a_missing_collector_package_names_the_install_command() -> None:
    with pytest.raises(
        CollectorError, match=r"psycopg missing.*pip install 'edge-agent\[collector\]'"
    ):
        check_extra(lambda name: None if name == "psycopg" else object())


def test_with_the_extra_installed_nothing_is_said() -> None:
    check_extra(lambda name: object())
    assert set(EXTRA) == {"fastapi", "pydantic", "psycopg"}
