"""bench.fleet at a tiny size: every phase runs on each engine, nothing is refused, the
catch-up leaves no site with a backlog, and every read is answered."""

from __future__ import annotations

import pytest

from bench import fleet

pytestmark = pytest.mark.integration

TINY = [
    "--sites", "20", "--steady-s", "1", "--warm-up-s", "0", "--speedup", "1,100",
    "--clients", "1", "--read-sites", "12", "--days", "5", "--reads", "4",
    "--read-budget-s", "20", "--burst-timeout-s", "60", "--cell-pool", "20",
]  # fmt: skip


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_bench_fleet_runs_every_phase(engine: str, request: pytest.FixtureRequest) -> None:
    admin = ["--pg-admin", request.getfixturevalue("postgres")] if engine == "postgresql" else []
    args = fleet.parse([*TINY, "--engine", engine, *admin])
    report = fleet.run(args)
    result = report.engines[engine]
    f = result.fleet
    assert f.steady[-1].tally.stored > 0
    for tally in (*(s.tally for s in f.steady), f.burst):
        assert not tally.errors
    # Every site's catch-up was stored, and the outage's tries were refused connections.
    assert f.burst.left == 0
    assert f.burst.stored >= 20
    assert f.outage.retried["ConnectError"] >= 20
    assert f.cells > 0
    assert f.db_bytes > 0
    assert f.burst_memory.worker_mb > 0
    assert result.reads is not None
    assert result.reads.day_rows == 12 * 5
    for name, read in result.reads.reads.items():
        assert read.statuses == {"200": 4}, name
    assert "catch-up after" in fleet.render(report, args)
