"""The ingest loop's view of the data disk: free space measured on a real folder, and the
start and the end of a shortage each said once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.core.health import MB
from edge_agent.errors import StorageError
from edge_agent.ops.disk import DiskWatch, free_bytes


def test_a_shortage_is_said_once_when_it_starts_and_once_when_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    changes: list[bool] = []
    above_free = free_bytes(tmp_path) // MB + 1_000_000
    watch = DiskWatch(tmp_path, above_free, changes.append, every_s=0)
    with caplog.at_level(logging.INFO, logger="edge_agent.ops.disk"):
        assert all(watch.is_short() for _ in range(5))
        watch.min_free_mb = 1
        assert not any(watch.is_short() for _ in range(5))
    assert changes == [True, False]
    said = [getattr(r, "event", "") for r in caplog.records]
    assert said == ["disk_pressure_started", "disk_pressure_ended"]


def test_the_verdict_is_kept_between_measurements(tmp_path: Path) -> None:
    watch = DiskWatch(tmp_path, 1, every_s=3600)
    assert not watch.is_short()
    watch.min_free_mb = free_bytes(tmp_path) // MB + 1_000_000
    assert not watch.is_short()  # measured again only after every_s


def test_no_floor_means_no_check(tmp_path: Path) -> None:
    assert not DiskWatch(tmp_path / "not-there", 0, every_s=0).is_short()


def test_a_disk_that_cannot_be_examined_counts_as_short(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="free space"):
        free_bytes(tmp_path / "not-there")
    assert DiskWatch(tmp_path / "not-there", 200, every_s=0).is_short()
