"""Fleet health's pure rules: the verdict and its reasons, their wording, the check-in's wire
form, and that what the agent reports is what central takes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_agent.app.checkin import CheckIns
from edge_agent.collector import wire
from edge_agent.config import load_settings
from edge_agent.core.fleet import (
    HOUR_MS,
    MINUTE_MS,
    CheckIn,
    Thresholds,
    Verdict,
    duration,
    from_document,
    judge,
    site_time,
    size,
)
from edge_agent.core.wireform import MAX_CHECKIN_MODELS, checkin_problem
from edge_agent.store.database import Store
from edge_agent.sync.checkin import wanted
from edge_agent.sync.client import LAST_OK_KEY
from tests.helpers import SITE, ingest

#: 2026-11-15 09:00 UTC: a time the reports are sent at.
NOW = 1_795_251_600_000
T = Thresholds()


def report(**changes: Any) -> CheckIn:
    """A healthy check-in sent at ``NOW``, with ``changes``."""
    healthy = CheckIn(
        site="shop-a",
        sent_ms=NOW,
        version="1.0.0",
        uptime_s=86_400,
        name="Taipei Xinyi store",
        timezone="Asia/Taipei",
        currency="TWD",
        broker="connected",
        broker_since_ms=NOW - HOUR_MS,
        outbox_items=3,
        outbox_oldest_ms=NOW - 5 * MINUTE_MS,
        dead_letters_last_hour=0,
        duplicates_last_hour=2,
        disk_free_bytes=20 * 10**9,
        disk_free_share=0.6,
        models={"next_basket": "2026.11.01"},
        last_sync_ms=NOW - 10 * MINUTE_MS,
        clock_offset_s=1.0,
    )
    return dataclasses.replace(healthy, **changes)


def said(verdict: Verdict) -> tuple[str, tuple[str, ...]]:
    """A verdict as a pair, to compare."""
    return verdict.health, verdict.reasons


def fresh(checked_in: CheckIn) -> tuple[str, tuple[str, ...]]:
    """The verdict on ``checked_in`` received a minute ago."""
    return said(judge(checked_in, NOW, NOW, NOW + MINUTE_MS, T))


# --- the verdict ---------------------------------------------------------------------------


def test_a_site_with_nothing_wrong_is_healthy_with_no_reason() -> None:
    assert fresh(report()) == ("healthy", ())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param(
            {"broker": "disconnected", "broker_since_ms": NOW - 3 * MINUTE_MS},
            "broker disconnected for 3 min: no event flows",
            id="broker-down",
        ),
        pytest.param(
            {"broker": "stalled", "broker_since_ms": None, "uptime_s": 600},
            "broker stalled for 10 min: no event flows",
            id="broker-stalled-since-start",
        ),
        pytest.param(
            {"outbox_oldest_ms": NOW - 2 * HOUR_MS - 13 * MINUTE_MS, "outbox_items": 420},
            "outbox oldest item 2 h 13 min old, 420 waiting (sync failing?)",
            id="outbox-old",
        ),
        pytest.param(
            {"dead_letters_last_hour": 10},
            "10 dead letters in the last hour",
            id="dead-letters",
        ),
        pytest.param(
            {"disk_free_share": 0.05, "disk_free_bytes": 830 * 10**6},
            "disk 95% full (830 MB free)",
            id="disk-full",
        ),
        pytest.param({"clock_offset_s": 400.0}, "clock 6 min behind central", id="clock-behind"),
        pytest.param(
            {"clock_offset_s": -3 * 3600.0}, "clock 3 h ahead of central", id="clock-ahead"
        ),
        pytest.param(
            {"last_sync_ms": NOW - 3 * HOUR_MS},
            "last successful sync 3 h ago",
            id="sync-stale",
        ),
        pytest.param(
            {"last_sync_ms": None, "uptime_s": 3 * 3600},
            "no successful sync since the agent started 3 h ago",
            id="never-synced",
        ),
        pytest.param(
            {"models": {}},
            "no model serving: staff screens show no recommendations",
            id="no-model",
        ),
    ],
)
def test_each_problem_degrades_the_site_with_its_reason(
    changes: dict[str, Any], reason: str
) -> None:
    assert fresh(report(**changes)) == ("degraded", (reason,))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            {"broker": "disconnected", "broker_since_ms": NOW - MINUTE_MS}, id="broker-blip"
        ),
        pytest.param({"broker": "unknown", "broker_since_ms": None, "uptime_s": 30}, id="start"),
        pytest.param({"outbox_oldest_ms": NOW - HOUR_MS}, id="outbox-at-the-bound"),
        pytest.param({"outbox_items": 0, "outbox_oldest_ms": None}, id="outbox-empty"),
        pytest.param({"dead_letters_last_hour": 9}, id="dead-letters-under"),
        pytest.param({"disk_free_share": 0.10}, id="disk-at-the-bound"),
        pytest.param({"clock_offset_s": -300.0}, id="clock-at-the-bound"),
        pytest.param({"clock_offset_s": None}, id="clock-not-measured"),
        pytest.param({"last_sync_ms": None, "uptime_s": 600}, id="not-synced-yet"),
    ],
)
def test_what_is_within_the_thresholds_stays_healthy(changes: dict[str, Any]) -> None:
    assert fresh(report(**changes)) == ("healthy", ())


def test_every_problem_is_named_at_once() -> None:
    health, reasons = fresh(
        report(dead_letters_last_hour=50, disk_free_share=0.01, models={}, clock_offset_s=900.0)
    )
    assert health == "degraded"
    assert len(reasons) == 4


def test_a_site_quiet_past_the_bound_is_silent_at_its_own_clock() -> None:
    verdict = judge(report(), NOW, NOW, NOW + 16 * MINUTE_MS, T)
    # 09:00 UTC is 17:00 in Taipei: the analyst reads the site's own time.
    assert said(verdict) == (
        "silent",
        ("silent: no check-in for 16 min (last at 17:00 site time)",),
    )
    assert judge(report(), NOW, NOW, NOW + 15 * MINUTE_MS, T).health == "healthy"


def test_silence_follows_the_configured_bound() -> None:
    quick = Thresholds(silent_after_ms=MINUTE_MS)
    assert judge(report(), NOW, NOW, NOW + 2 * MINUTE_MS, quick).health == "silent"


def test_a_silent_sites_report_no_longer_counts() -> None:
    # Its last report said the disk was full: that is old news once it is silent.
    verdict = judge(report(disk_free_share=0.0), NOW, NOW, NOW + HOUR_MS, T)
    assert verdict.health == "silent"
    assert len(verdict.reasons) == 1


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "Europe", "", "../etc"])
def test_a_zone_central_does_not_know_is_shown_in_utc(timezone: str) -> None:
    assert site_time(NOW, timezone) == "09:00"
    assert (
        "last at 09:00" in judge(report(timezone=timezone), NOW, NOW, NOW + HOUR_MS, T).reasons[0]
    )


def test_a_site_never_heard_from_is_silent() -> None:
    assert said(judge(None, None, None, NOW, T)) == (
        "silent",
        ("never heard from: no check-in and no sync yet",),
    )


def test_an_old_agent_that_syncs_but_never_checks_in_is_degraded_until_its_syncs_stop() -> None:
    health, (reason,) = said(judge(None, None, NOW - 20 * MINUTE_MS, NOW, T))
    # Syncs come every 15 min plus jitter: 20 min after the last one is no silence yet.
    assert health == "degraded"
    assert reason == (
        "never checked in: agent older than the check-in feature? (last sync 20 min ago); "
        "upgrade it to see its health"
    )
    assert said(judge(None, None, NOW - 3 * HOUR_MS, NOW, T)) == (
        "silent",
        ("silent: never checked in, last sync 3 h ago",),
    )


def test_a_site_that_syncs_while_its_check_ins_fail_is_degraded_not_silent() -> None:
    verdict = judge(report(), NOW, NOW + 40 * MINUTE_MS, NOW + HOUR_MS, T)
    assert said(verdict) == (
        "degraded",
        (
            "no check-in for 1 h, though it synced 20 min ago: its check-ins fail (the agent "
            "logs check_in_failed with the reason)",
        ),
    )


# --- wording -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "said"),
    [
        (-5_000, "0 s"),
        (0, "0 s"),
        (45_999, "45 s"),
        (60_000, "1 min"),
        (14 * MINUTE_MS + 59_000, "14 min"),
        (HOUR_MS, "1 h"),
        (2 * HOUR_MS + 13 * MINUTE_MS, "2 h 13 min"),
        (47 * HOUR_MS, "47 h"),
        (48 * HOUR_MS, "2 d"),
        (76 * HOUR_MS + 30 * MINUTE_MS, "3 d 4 h"),
    ],
)
def test_durations_are_said_as_people_say_them(ms: int, said: str) -> None:
    assert duration(ms) == said


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (12_345, "12 kB"),
        (830 * 10**6 + 999, "830 MB"),
        (999_999_999, "999 MB"),
        (1_240_000_000, "1.2 GB"),
    ],
)
def test_sizes_are_said_as_people_say_them(n: int, said: str) -> None:
    assert size(n) == said


# --- the wire form -------------------------------------------------------------------------


def document(**changes: object) -> dict[str, object]:
    """A valid check-in body, with ``changes``."""
    return report().as_document() | changes


def test_a_valid_check_in_passes_and_travels_unchanged() -> None:
    body = document()
    assert checkin_problem(body) is None
    assert from_document(orjson.loads(orjson.dumps(body))) == report()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(
            document(uptime=5), "body: unknown field 'uptime': a check-in holds only", id="unknown"
        ),
        pytest.param(
            document(version="1.0\x00"), "NUL (\\u0000), which cannot be stored", id="nul"
        ),
        pytest.param(
            document(models={"next\x00basket": "1"}), "NUL (\\u0000)", id="nul-in-a-model-name"
        ),
        pytest.param(document(broker="flaky"), "broker", id="bad-broker-state"),
        pytest.param(document(broker=None), "broker", id="no-broker-state"),
        pytest.param(document(protocol=2), "protocol", id="other-protocol"),
        pytest.param(
            {k: v for k, v in document().items() if k != "sent_ms"}, "sent_ms", id="missing"
        ),
        pytest.param(document(outbox_items=-1), "outbox_items", id="negative-count"),
        pytest.param(document(disk_free_share=1.5), "disk_free_share", id="share-over-one"),
        pytest.param(document(name="Shop\x1b[2J"), "name", id="control-character-in-name"),
        pytest.param(document(name="n" * 81), "name", id="name-too-long"),
        pytest.param(document(timezone=""), "timezone", id="empty-timezone"),
        pytest.param(document(currency="twd"), "currency", id="bad-currency"),
        pytest.param(document(site=""), "site", id="empty-site-id"),
        pytest.param(
            document(models={f"m{i}": "1" for i in range(MAX_CHECKIN_MODELS + 1)}),
            "models",
            id="too-many-models",
        ),
        pytest.param(document(last_sync_ms="yesterday"), "last_sync_ms", id="text-for-a-time"),
        pytest.param([document()], "", id="not-an-object"),
    ],
)
def test_a_malformed_check_in_is_refused_by_name(body: object, problem: str) -> None:
    said = checkin_problem(body)
    assert said is not None
    assert problem in said


# --- the agent's report --------------------------------------------------------------------


def test_the_agents_report_from_a_real_store_is_what_central_takes(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[site]\nid = "{SITE}"\nname = "Café Ünïcode 台北"\ntimezone = "Asia/Taipei"\n'
        f'data_dir = "{tmp_path / "data"}"\n[sync]\nurl = "http://127.0.0.1:9"\n'
        'token = "t"\n'
    )
    settings = load_settings(config, environ={})
    started = NOW - 2 * HOUR_MS
    assert ingest(settings, [], NOW - MINUTE_MS, junk=[b"not json", b"{}"]) == 2
    with Store.open(settings.database) as store:
        store.state.set("broker", "disconnected", NOW - 5 * MINUTE_MS)
        store.state.set(LAST_OK_KEY, str(NOW - 30 * MINUTE_MS), NOW - 30 * MINUTE_MS)
        store.outbox.queue_notice("erasure", None, {"subject": "x"}, NOW - 2 * MINUTE_MS)
    check_ins = CheckIns(settings, started)

    made = check_ins.report(NOW)
    body = made.as_document()
    assert checkin_problem(body) is None
    # What central parses is what the agent meant.
    assert wire.parse_checkin(orjson.dumps(body), SITE, wire.Clock(NOW)) == made
    assert (made.site, made.name, made.timezone, made.currency) == (
        SITE,
        "Café Ünïcode 台北",
        "Asia/Taipei",
        "",
    )
    assert (made.broker, made.broker_since_ms) == ("disconnected", NOW - 5 * MINUTE_MS)
    assert (made.outbox_items, made.outbox_oldest_ms) == (1, NOW - 2 * MINUTE_MS)
    assert made.dead_letters_last_hour == 2
    assert made.last_sync_ms == NOW - 30 * MINUTE_MS
    assert made.uptime_s == 7200
    assert made.clock_offset_s is None
    assert made.disk_free_bytes > 0
    assert 0 < made.disk_free_share <= 1
    # No model on a fresh site: central says so, and the broker down for 5 min.
    assert judge(made, NOW, NOW, NOW, T).reasons == (
        "broker disconnected for 5 min: no event flows",
        "no model serving: staff screens show no recommendations",
    )

    # The receiver records each failed reconnection again: the outage still dates from its
    # start, and the duplicates counted are those of the last hour only.
    with Store.open(settings.database) as store:
        store.state.set("broker", "disconnected", NOW + MINUTE_MS)
    later = check_ins.report(NOW + 2 * MINUTE_MS)
    assert later.broker_since_ms == NOW - 5 * MINUTE_MS
    assert later.duplicates_last_hour == 0


@pytest.mark.parametrize("timezone", ["Europe", "Mars/Olympus"])
def test_central_refuses_a_check_in_whose_zone_it_cannot_read(timezone: str) -> None:
    body = orjson.dumps(document(timezone=timezone))
    with pytest.raises(wire.WireError, match="timezone") as refused:
        wire.parse_checkin(body, SITE, wire.Clock(NOW))
    assert refused.value.status == 422


@pytest.mark.parametrize(
    ("body", "asked"),
    [
        (b'{"received_ms": 1, "products_wanted": ["tea", "cake", "tea"]}', ("tea", "cake")),
        (b'{"received_ms": 1}', ()),
        (b"not json", ()),
        (b'["tea"]', ()),
        (b'{"products_wanted": "tea"}', ()),
        (b'{"products_wanted": ["", 5, null, "' + b"x" * 65 + b'", "ok", "a\\u0000b"]}', ("ok",)),
        (
            orjson.dumps({"products_wanted": [str(i) for i in range(500)]}),
            tuple(map(str, range(50))),
        ),
    ],
)
def test_the_agent_takes_only_well_formed_asks_from_centrals_answer(
    body: bytes, asked: tuple[str, ...]
) -> None:
    assert wanted(body) == asked
