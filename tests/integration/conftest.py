"""Fixtures of the collector's tests: a fresh central database on each engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.collector.store.central import CentralStore
from tests.collector_helpers import database


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh collector database on each engine."""
    with database(request.param, tmp_path, request) as made:
        yield made


@pytest.fixture
def store(target: str) -> Iterator[CentralStore]:
    """The collector's store over ``target``."""
    opened = CentralStore.open(target)
    yield opened
    opened.close()
