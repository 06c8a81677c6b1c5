"""Readiness and disk pressure: verdicts from figures the adapters measured.

Each check says whether it holds, a one-word state and, when it does not hold, what an
installer can do about it. The agent is ready only when every check holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_agent.core.catalogue import MIN_COVERAGE

MB = 1024 * 1024
#: The ingest loop writes its heartbeat this often ...
HEARTBEAT_EVERY_S = 10.0
#: ... and three missed mean it is stuck (``edge-agent status`` says so at the same point).
HEARTBEAT_STALE_MS = int(3 * HEARTBEAT_EVERY_S * 1000)


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check: its name, whether it holds, its state and why."""

    name: str
    ok: bool
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the agent is ready, and every check that decided it."""

    ready: bool
    checks: tuple[Check, ...]

    def as_dict(self) -> dict[str, object]:
        """The verdict as JSON-ready values."""
        return {
            "status": "ready" if self.ready else "not_ready",
            "checks": [
                {"name": c.name, "ok": c.ok, "state": c.state, "reason": c.reason}
                for c in self.checks
            ],
        }


def verdict(checks: Sequence[Check]) -> Verdict:
    """Ready when every check holds (and there is at least one)."""
    return Verdict(bool(checks) and all(c.ok for c in checks), tuple(checks))


def short_of_space(free_bytes: int, min_free_mb: int) -> bool:
    """Whether the data disk's free space is under ``[store] min_free_mb`` (0: never)."""
    return min_free_mb > 0 and free_bytes < min_free_mb * MB


def disk_check(free_bytes: int, min_free_mb: int, folder: str) -> Check:
    """The data disk has room for new events."""
    free_mb = free_bytes // MB
    if short_of_space(free_bytes, min_free_mb):
        return Check(
            "disk",
            False,
            "low",
            f"{free_mb} MB free on the disk of {folder}, under [store] min_free_mb "
            f"{min_free_mb}: new events wait at the broker until space is freed there",
        )
    return Check("disk", True, "ok", f"{free_mb} MB free on the disk of {folder}")


def broker_check(state: tuple[str, int] | None, broker: str) -> Check:
    """The receiver is connected and subscribed to the broker (``agent_state`` ``broker``)."""
    if state is None:
        return Check(
            "broker",
            False,
            "unknown",
            f"the agent has not reached the MQTT broker at {broker} yet: check that it runs "
            "and that [mqtt] host, port, username and password are right",
        )
    value, _ = state
    if value == "connected":
        return Check("broker", True, "connected", f"subscribed at {broker}")
    if value == "stalled":
        return Check(
            "broker",
            False,
            value,
            "the agent's MQTT receiver process does not answer (stopped or hung), so no event "
            "flows: the agent restarts it after 30 s; see receiver_stalled in its log",
        )
    return Check(
        "broker",
        False,
        value,
        f"the MQTT broker at {broker} is not reachable or refuses the agent: check that it "
        "runs and that [mqtt] host, port, username and password are right; the agent retries",
    )


def database_check(heartbeat: tuple[str, int] | None, now_ms: int, stale_after_ms: int) -> Check:
    """The ingest loop wrote to the database lately (its heartbeat, ``agent_state``)."""
    if heartbeat is None or heartbeat[0] != "alive":
        return Check(
            "database",
            False,
            "not_started",
            "the ingest loop has not written its heartbeat: see the agent's log",
        )
    age_ms = now_ms - heartbeat[1]
    if age_ms > stale_after_ms:
        return Check(
            "database",
            False,
            "stale",
            f"the ingest loop last wrote to the database {age_ms // 1000} s ago: look for "
            "commit_failed in the agent's log (a full disk, file permissions, a locked database)",
        )
    return Check("database", True, "writable", "the ingest loop writes to the database")


def models_check(
    failures: Mapping[str, str], serving: int, coverage: Mapping[str, float] | None = None
) -> Check:
    """Every serving model loads (``failures``: model name -> why not), and knows the items
    the site sells (``coverage``: model name -> the share it knows; under ``MIN_COVERAGE``
    the check still passes, since the model answers, but says so)."""
    if failures:
        named = "; ".join(f"{name}: {why}" for name, why in sorted(failures.items()))
        return Check(
            "models",
            False,
            "failed",
            f"{named}. Roll back with `edge-agent models rollback NAME`, or pull the release again",
        )
    if serving == 0:
        return Check("models", True, "none", "no model serves yet")
    low = {name: share for name, share in (coverage or {}).items() if share < MIN_COVERAGE}
    if low:
        named = "; ".join(f"{name} knows {share:.0%}" for name, share in sorted(low.items()))
        return Check(
            "models",
            True,
            "low_coverage",
            f"{serving} serving models load, but of the items sold here in the last 30 days "
            f"{named} (under {MIN_COVERAGE:.0%}): they cannot suggest most of this shop's "
            "products. Train the site's own with `edge-agent models train` once it has orders",
        )
    return Check("models", True, "loaded", f"{serving} serving models load")
