"""Central's retention and hygiene on SQLite and PostgreSQL: idempotency keys and insight item
ids pruned after the window, in bounded batches, and a site's retry after the window still
stored once; site tokens rotated with an overlap (``rotate-token``), the old one refused
after it with a message the site's installer can act on; the audit trail kept."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.collector import hygiene
from edge_agent.collector.app import create_app
from edge_agent.collector.cli import _parser as collector_parser
from edge_agent.collector.store.central import CentralStore, ReplacedToken, Site
from edge_agent.collector.store.engine import now_ms
from edge_agent.core.aggregate import HOUR_MS
from tests.collector_helpers import (
    ADMIN_TOKEN,
    Server,
    collector_cli,
    count,
    day_start,
    hour_cell,
    insight,
    post,
    rows,
    segment_item,
    subject,
    sync_body,
)
from tests.inprocess import in_process

pytestmark = pytest.mark.integration

VENUE = "mall-a"
HOUR = day_start(1_795_700_000_000) + 10 * HOUR_MS
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY_MS = hygiene.DAY_MS
#: Older than the default window by a day.
AGED_MS = (hygiene.KEYS_KEPT_DAYS + 1) * DAY_MS
#: What the hygiene job must never touch.
KEPT_TABLES = ("insight_cells", "identified", "erasure_receipts", "audit")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_site(store: CentralStore, site: str = "shop-a") -> str:
    token = secrets.token_urlsafe(32)
    store.add_site(site, VENUE, digest(token))
    return token


def execute(target: str, statement: str, params: tuple[object, ...] = ()) -> int:
    """Run one changing statement straight on the database; returns the rows changed."""
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as pg:
            return pg.execute(statement.replace("?", "%s"), params).rowcount
    lite = sqlite3.connect(target)
    try:
        with lite:
            return lite.execute(statement, params).rowcount
    finally:
        lite.close()


def age_everything(target: str) -> None:
    """Move every key and item id back past the window, as if a month had gone by."""
    execute(target, "UPDATE idempotency SET created_ms = created_ms - ?", (AGED_MS,))
    execute(target, "UPDATE sync_items SET received_ms = received_ms - ?", (AGED_MS,))


def snapshot(target: str) -> dict[str, list[tuple[object, ...]]]:
    """The tables the job never prunes, whole."""
    return {
        table: sorted(map(tuple, rows(target, f"SELECT * FROM {table}")), key=repr)  # noqa: S608
        for table in KEPT_TABLES
    }


def erasure(person: str, item_id: str, timestamp_ms: int) -> dict[str, object]:
    return {
        "kind": "erasure",
        "id": item_id,
        "subject_hash": subject(person),
        "timestamp_ms": timestamp_ms,
    }


@pytest.fixture
def local(store: CentralStore) -> Iterator[httpx.Client]:
    """An httpx client of the collector app over ``store``, in this process. Its own pruning
    worker keeps 10 years, so that only the tests' own passes prune what they moved back."""
    app = create_app(store, ADMIN_TOKEN)
    hygiene.configure(app, hygiene.Retention(keys_kept_days=hygiene.MAX_DAYS))
    with in_process(app) as http:
        yield http


# --- pruning -------------------------------------------------------------------------------


def test_pruning_removes_only_keys_and_insight_ids_older_than_the_window(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store)
    now = now_ms()
    old = sync_body(
        "shop-a",
        VENUE,
        1000,
        [insight(hour_cell(HOUR, "a", 6, 2), item_id="insight:old"), erasure("mei", "e1", now)],
    )
    assert post(local, "/v1/sync", old, token).json() == {"stored": 2, "duplicate": False}
    batch = {"batch": [segment_item("shop-a", "ana", timestamp_ms=now)]}
    assert post(local, "/v1/batch", batch, token).json()["stored"] == 1
    age_everything(target)
    # Sent after the move back: within the window, kept.
    fresh = sync_body(
        "shop-a", VENUE, 2000, [insight(hour_cell(HOUR + HOUR_MS, "b", 6, 1), item_id="new")]
    )
    assert post(local, "/v1/sync", fresh, token).json()["stored"] == 1
    before = snapshot(target)

    pruned = hygiene.prune(store, hygiene.Retention(), now_ms())

    assert pruned == hygiene.Pruned(idempotency=2, sync_items=1, previous_site_tokens=0, more=False)
    assert count(target, "idempotency") == 1
    # The notice's id stays for good; the fresh insight's is within the window.
    assert sorted(rows(target, "SELECT item_id, kind FROM sync_items")) == [
        ("e1", "erasure"),
        ("new", "insight"),
    ]
    assert snapshot(target) == before
    # Nothing more to do: a second pass deletes nothing.
    assert hygiene.prune(store, hygiene.Retention(), now_ms()).counts() == dict.fromkeys(
        hygiene.TABLES, 0
    )


def test_a_backlog_is_pruned_in_bounded_batches(store: CentralStore, target: str) -> None:
    add_site(store)
    old = now_ms() - AGED_MS
    with store.write() as tx:
        for n in range(25):
            tx.run(
                "INSERT INTO idempotency (site, idempotency_key, endpoint, body_sha256, "
                "response, created_ms) VALUES ('shop-a', ?, 'sync', '', '{}', ?)",
                (f"{n:064x}", old + n),
            )
            tx.run(
                "INSERT INTO sync_items (site, item_id, kind, received_ms) "
                "VALUES ('shop-a', ?, 'insight', ?)",
                (f"insight:{n}", old + n),
            )
    retention = hygiene.Retention(batch_rows=10)
    passes = [hygiene.prune(store, retention, now_ms()) for _ in range(4)]
    assert [(p.idempotency, p.sync_items, p.more) for p in passes] == [
        (10, 10, True),
        (10, 10, True),
        (5, 5, False),
        (0, 0, False),
    ]
    assert count(target, "idempotency") == count(target, "sync_items") == 0


def test_a_replay_after_the_window_stores_nothing_twice(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store)
    erased_ms = now_ms() - 60_000
    # An hour's cell and mei's erasure; then mei consents again: her newer data is kept.
    first = sync_body(
        "shop-a",
        VENUE,
        1000,
        [
            insight(hour_cell(HOUR, "a", 6, 2), item_id="insight:1") | {"revision": 1},
            erasure("mei", "erasure:1", erased_ms),
        ],
    )
    ana = {"batch": [segment_item("shop-a", "ana", timestamp_ms=erased_ms)]}
    mei_again = {"batch": [segment_item("shop-a", "mei", timestamp_ms=erased_ms + 30_000)]}
    sent = [("/v1/sync", first), ("/v1/batch", ana), ("/v1/batch", mei_again)]
    assert [post(local, path, body, token).json()["stored"] for path, body in sent] == [2, 1, 1]
    age_everything(target)
    assert hygiene.prune(store, hygiene.Retention(), now_ms()).idempotency == 3
    assert count(target, "idempotency") == 0
    before = snapshot(target)

    # An agent that never saw the answers sends the same three requests again, keys and all.
    replies = [post(local, path, body, token) for path, body in sent]

    assert [r.json() for r in replies] == [{"stored": 0, "duplicate": False}] * 3
    # The same cell (received_ms included: not even rewritten), mei's newer row still there,
    # one erasure receipt, no new audit line.
    assert snapshot(target) == before
    assert rows(target, "SELECT subject_hash FROM identified ORDER BY subject_hash") == sorted(
        [(subject("ana"),), (subject("mei"),)]
    )

    # A later version of the hour, then the first again after the window: the later stays.
    second = sync_body(
        "shop-a",
        VENUE,
        3000,
        [insight(hour_cell(HOUR, "a", 6, 5), item_id="insight:2") | {"revision": 2}],
    )
    assert post(local, "/v1/sync", second, token).json()["stored"] == 1
    age_everything(target)
    hygiene.prune(store, hygiene.Retention(), now_ms())
    assert post(local, "/v1/sync", first, token).json() == {"stored": 0, "duplicate": False}
    assert rows(target, "SELECT item_id, revision FROM insight_cells") == [("insight:2", 2)]
    assert count(target, "erasure_receipts") == 1


def test_the_serve_process_prunes_in_the_background_and_counts_it(
    store: CentralStore, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = add_site(store)
    app = create_app(store, ADMIN_TOKEN)
    with in_process(app) as http:
        cell = insight(hour_cell(HOUR, "a", 6, 2))
        assert post(http, "/v1/sync", sync_body("shop-a", VENUE, 1, [cell]), token).is_success
    age_everything(target)
    store.rotate_token("shop-a", digest(secrets.token_urlsafe(32)), 0)
    execute(target, "UPDATE previous_site_tokens SET expires_ms = expires_ms - ?", (AGED_MS,))

    caplog.set_level(logging.INFO, logger="edge_agent.collector.hygiene")
    app = create_app(store, ADMIN_TOKEN)
    hygiene.configure(app, hygiene.Retention(every_s=0.2))
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        deadline = time.monotonic() + 20
        while count(target, "previous_site_tokens") or count(target, "idempotency"):
            assert time.monotonic() < deadline, "the serve process pruned nothing"
            time.sleep(0.05)
        while not any(getattr(r, "event", None) == "pruned" for r in caplog.records):
            assert time.monotonic() < deadline, "the pruning was not logged"
            time.sleep(0.05)
        scraped = http.get("/metrics", headers=ADMIN)
    assert scraped.status_code == 200, scraped.text
    found = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    assert found[("edge_collector_pruned_rows_total", (("table", "idempotency"),))] == 1
    assert found[("edge_collector_pruned_rows_total", (("table", "sync_items"),))] == 1
    assert found[("edge_collector_pruned_rows_total", (("table", "previous_site_tokens"),))] == 1
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "pruned"]
    assert line.fields == {  # type: ignore[attr-defined]
        "keys_kept_days": hygiene.KEYS_KEPT_DAYS,
        "idempotency": 1,
        "sync_items": 1,
        "previous_site_tokens": 1,
    }
    assert count(target, "insight_cells") == 1
    assert [a for (a,) in rows(target, "SELECT action FROM audit ORDER BY id")] == [
        "site_added",
        "token_rotated",
    ]


# --- token rotation ------------------------------------------------------------------------


def test_both_tokens_work_during_the_overlap_and_the_old_one_is_refused_after(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    old = add_site(store)
    new = secrets.token_urlsafe(32)
    rotation = store.rotate_token("shop-a", digest(new), 3600_000)
    assert rotation.expires_ms - rotation.replaced_ms == 3600_000
    body = sync_body("shop-a", VENUE, 1, [insight(hour_cell(HOUR, "a", 6, 2))])
    for token in (old, new):
        assert post(local, "/v1/sync", body, token).status_code == 200, token

    # The overlap ends.
    execute(target, "UPDATE previous_site_tokens SET expires_ms = ?", (now_ms() - 1000,))
    refused = post(local, "/v1/sync", body, old)
    assert refused.status_code == 401
    detail = refused.json()["detail"]
    assert "this site's token was replaced on" in detail
    assert "install the new one" in detail
    assert "shop-a" not in detail
    assert post(local, "/v1/sync", body, new).status_code == 200
    # A token never issued gets the usual answer.
    unknown = post(local, "/v1/sync", body, secrets.token_urlsafe(32))
    assert unknown.status_code == 401
    assert "unknown or missing site token" in unknown.json()["detail"]

    audit = local.get("/v1/audit", params={"site": "shop-a"}, headers=ADMIN).json()["lines"]
    assert [line["action"] for line in audit] == ["token_rotated", "site_added"]
    assert audit[0]["detail"]["overlap_ms"] == 3600_000
    text = str(rows(target, "SELECT * FROM audit"))
    for secret in (old, new, digest(old), digest(new)):
        assert secret not in text

    # Pruned a window after it ended, the old token is only unknown.
    execute(target, "UPDATE previous_site_tokens SET expires_ms = expires_ms - ?", (AGED_MS,))
    assert hygiene.prune(store, hygiene.Retention(), now_ms()).previous_site_tokens == 1
    assert "unknown" in post(local, "/v1/sync", body, old).json()["detail"]


def test_a_second_rotation_within_the_overlap_never_extends_the_first(
    store: CentralStore,
) -> None:
    first = add_site(store)
    second, third, fourth = (secrets.token_urlsafe(32) for _ in range(3))
    day = 24 * 3600_000
    one = store.rotate_token("shop-a", digest(second), day)
    two = store.rotate_token("shop-a", digest(third), 2 * day)
    assert (one.earlier_valid, two.earlier_valid) == (0, 1)
    ends = {
        token: store.read(
            "SELECT expires_ms FROM previous_site_tokens WHERE token_sha256 = ?", (digest(token),)
        )[0][0]
        for token in (first, second)
    }
    assert ends == {first: one.expires_ms, second: two.expires_ms}
    site = Site("shop-a", VENUE)
    assert [store.site_for_token(t) for t in (first, second, third)] == [site] * 3

    # A leaked token: overlap 0 ends every old token at once.
    assert store.rotate_token("shop-a", digest(fourth), 0).earlier_valid == 0
    for token in (first, second, third):
        refused = store.site_for_token(token)
        assert isinstance(refused, ReplacedToken), token
        assert refused.expired_ms <= now_ms()
    assert store.site_for_token(fourth) == site


def test_rotating_an_unknown_site_is_refused(store: CentralStore) -> None:
    add_site(store)
    with pytest.raises(Exception, match="no site 'shop-b'"):
        store.rotate_token("shop-b", digest("x"), 0)


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}


def test_rotate_token_prints_the_new_token_once_or_writes_it_to_a_private_file(
    target: str, tmp_path: Path
) -> None:
    env = _cli_env()
    added = collector_cli("add-site", "shop-a", "--venue", VENUE, "--db", target, env=env)
    assert added.returncode == 0, added.stderr
    first = added.stdout.strip()

    rotated = collector_cli("rotate-token", "--site", "shop-a", "--db", target, env=env)
    assert rotated.returncode == 0, rotated.stderr
    second = rotated.stdout.strip()
    assert len(second) >= 40
    assert second != first
    assert "shown only now" in rotated.stderr
    assert "[sync] token" in rotated.stderr
    assert "refused after" in rotated.stderr
    assert rows(target, "SELECT token_sha256 FROM sites") == [(digest(second),)]
    ((ends,),) = rows(target, "SELECT expires_ms - replaced_ms FROM previous_site_tokens")
    assert ends == 24 * 3600_000

    written = tmp_path / "shop-a.token"
    to_file = collector_cli(
        "rotate-token", "--site", "shop-a", "--overlap-hours", "2", "--token-file",
        str(written), "--db", target, env=env,
    )  # fmt: skip
    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == ""
    third = written.read_text(encoding="utf-8").strip()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert rows(target, "SELECT token_sha256 FROM sites") == [(digest(third),)]
    assert "1 token(s) of earlier rotations" in to_file.stderr

    # An existing file is never overwritten, and nothing is rotated.
    again = collector_cli(
        "rotate-token", "--site", "shop-a", "--token-file", str(written), "--db", target, env=env
    )
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1
    assert "exists" in again.stderr
    assert written.read_text(encoding="utf-8").strip() == third
    assert rows(target, "SELECT token_sha256 FROM sites") == [(digest(third),)]
    audit = rows(target, "SELECT action FROM audit WHERE action = 'token_rotated'")
    assert len(audit) == 2

    # A leaked token: every old one is refused at once, and the command says so.
    leaked = collector_cli(
        "rotate-token", "--site", "shop-a", "--overlap-hours", "0", "--db", target, env=env
    )
    assert leaked.returncode == 0, leaked.stderr
    assert "The old token is refused from now on." in leaked.stderr
    assert "earlier rotations" not in leaked.stderr
    central = CentralStore.open(target)
    try:
        for old in (first, second, third):
            assert isinstance(central.site_for_token(old), ReplacedToken)
        assert central.site_for_token(leaked.stdout.strip()) == Site("shop-a", VENUE)
    finally:
        central.close()


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        pytest.param(["--site", "shop-b"], "no site 'shop-b'", id="unknown-site"),
        pytest.param(["--site", "shop-a", "--overlap-hours", "1000"], "at most 720", id="long"),
        pytest.param(["--site", "shop-a", "--overlap-hours", "nan"], "at most 720", id="nan"),
        pytest.param(["--site", "shop-a", "--overlap-hours", "-1"], "negative", id="negative"),
        pytest.param([], "--site", id="no-site"),
    ],
)
def test_rotate_token_refusals_say_what_to_fix(
    target: str, tmp_path: Path, arguments: list[str], said: str
) -> None:
    env = _cli_env()
    assert collector_cli("add-site", "shop-a", "--db", target, env=env).returncode == 0
    written = tmp_path / "new.token"
    done = collector_cli(
        "rotate-token", *arguments, "--token-file", str(written), "--db", target, env=env
    )
    assert done.returncode == 2
    assert said in done.stderr
    assert not written.exists()
    assert count(target, "previous_site_tokens") == 0


@pytest.mark.parametrize("days", ["0", "3651", "-5"])
def test_serve_refuses_a_window_out_of_bounds(tmp_path: Path, days: str) -> None:
    env = {**_cli_env(), "EDGE_COLLECTOR_ADMIN_TOKEN": ADMIN_TOKEN}
    db = str(tmp_path / "central.db")
    done = collector_cli("serve", "--db", db, "--port", "0", "--keys-kept-days", days, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert f"--keys-kept-days {days}: give 1-3650 days" in done.stderr
    assert not Path(db).exists()


def test_serve_defaults_to_the_documented_window() -> None:
    args = collector_parser().parse_args(["serve"])
    assert args.keys_kept_days == hygiene.KEYS_KEPT_DAYS == hygiene.Retention().keys_kept_days
