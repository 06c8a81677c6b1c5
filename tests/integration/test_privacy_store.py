"""Site key file, retention and the privacy commands, on real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_agent.app import clock
from edge_agent.app.retention import expire_once
from edge_agent.config import load_settings
from edge_agent.core.identity import holder, holders_hashed, pseudonym
from edge_agent.core.retention import DAY_MS
from edge_agent.errors import ConfigError
from edge_agent.ops import keyfile
from edge_agent.store.database import Store
from tests.helpers import SITE, cli, ingest, track


def test_site_key_is_created_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "site.key"
    first = keyfile.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keyfile.load_or_create(path) == first
    assert first.secret.hex() not in repr(first)


def test_a_bad_site_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    path.write_bytes(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="restore it from backup"):
        keyfile.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        keyfile.load_or_create(path)


def _site(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n')
    return config


def _ingest(config: Path, events: list[dict[str, object]], now_ms: int) -> None:
    ingest(load_settings(config, environ={}), events, now_ms, device="loyalty-1")


def test_retention_deletes_old_raw_events_and_dead_letters(tmp_path: Path) -> None:
    config = _site(tmp_path)
    now = clock.now_ms()
    old = track("Door Counted", {"direction": "in", "count": 1}, "loyalty-1")
    _ingest(
        config, [old, track("Door Counted", {"direction": "out", "count": 1}, "loyalty-1")], now
    )
    settings = load_settings(config, environ={})
    removed = expire_once(settings, now + 31 * DAY_MS)
    assert removed == {"events": 2, "dead_letters": 0, "outbox_identified": 0}
    assert expire_once(settings, now + 31 * DAY_MS) == {
        "events": 0,
        "dead_letters": 0,
        "outbox_identified": 0,
    }


def test_identified_items_waiting_for_central_expire_with_the_events(tmp_path: Path) -> None:
    config = _site(tmp_path)
    now = clock.now_ms()
    consent = {"analytics": False, "personalization": False, "crm_sync": True}
    user = {"userId": "member-0a1b2c3d"}
    _ingest(
        config,
        [
            track("Consent Updated", {"purposes": consent, "source": "kiosk"}, "loyalty-1", **user),
            track("Product Viewed", {"product_id": "p1"}, "loyalty-1", **user),
        ],
        now,
    )
    settings = load_settings(config, environ={})
    assert expire_once(settings, now + DAY_MS)["outbox_identified"] == 0
    assert expire_once(settings, now + 31 * DAY_MS)["outbox_identified"] == 1
    with Store.open(settings.database) as store:
        assert store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        losses = store.db.execute("SELECT class, reason, count FROM outbox_losses").fetchall()
    assert losses == [("identified", "expired", 1)]


def test_export_person_and_forget(tmp_path: Path) -> None:
    config = _site(tmp_path)
    user = "member-5d1c0e77"
    consent = track(
        "Consent Updated",
        {
            "purposes": {"analytics": True, "personalization": True, "crm_sync": True},
            "source": "app",
        },
        "loyalty-1",
        userId=user,
    )
    _ingest(config, [consent], clock.now_ms())
    exported = cli("--config", str(config), "export-person", user)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert document["held"]["identity_vault"][0]["user_id"] == user
    assert len(document["held"]["consent"]) == 3
    forgotten = cli("--config", str(config), "forget", user)
    assert forgotten.returncode == 0, forgotten.stderr
    receipt = json.loads(forgotten.stdout)
    assert receipt["removed"]["consent"] == 3
    assert receipt["removed"]["identity_vault"] == 1
    settings = load_settings(config, environ={})
    person = pseudonym(keyfile.load_or_create(settings.site_key), user)
    assert user not in forgotten.stdout
    assert person not in forgotten.stdout
    again = json.loads(cli("--config", str(config), "export-person", user).stdout)
    assert all(rows == [] for rows in again["held"].values())


def test_forgetting_an_unknown_person_gives_a_receipt_of_nothing(tmp_path: Path) -> None:
    config = _site(tmp_path)
    _ingest(config, [], clock.now_ms())
    done = cli("--config", str(config), "forget", "never-seen")
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout)
    assert set(receipt["removed"].values()) == {0}
    assert len(receipt["digest"]) == 64


def test_privacy_commands_need_a_database(tmp_path: Path) -> None:
    config = _site(tmp_path)
    done = cli("--config", str(config), "forget", "someone")
    assert done.returncode == 2
    assert "no database at" in done.stderr


def test_a_ticket_holder_is_exported_and_forgotten_by_the_ticket(tmp_path: Path) -> None:
    config = _site(tmp_path)
    gate = {"gate": "north", "result": "accepted"}
    _ingest(
        config,
        [
            track("Ticket Scanned", {"ticket_id": "TKT-81", **gate}, "loyalty-1"),
            track("Ticket Scanned", {"ticket_id": "TKT-81", **gate, "result": "exit"}, "loyalty-1"),
            track("Ticket Scanned", {"ticket_id": "TKT-82", **gate}, "loyalty-1"),
        ],
        clock.now_ms(),
    )
    exported = cli("--config", str(config), "export-person", "--ticket", "TKT-81")
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert len(document["held"]["events"]) == 2
    assert "TKT-81" not in json.dumps(document["held"])
    forgotten = cli("--config", str(config), "forget", "--ticket", "TKT-81")
    assert forgotten.returncode == 0, forgotten.stderr
    assert json.loads(forgotten.stdout)["removed"]["events"] == 2
    left = json.loads(cli("--config", str(config), "export-person", "--ticket", "TKT-82").stdout)
    assert len(left["held"]["events"]) == 1
    neither = cli("--config", str(config), "forget")
    assert neither.returncode != 0
    assert "user_id" in neither.stderr or "--ticket" in neither.stderr


def test_ticket_ids_an_older_release_stored_raw_are_hashed_once(tmp_path: Path) -> None:
    config = _site(tmp_path)
    _ingest(config, [track("Door Counted", {"direction": "in", "count": 1}, "loyalty-1")], 1)
    settings = load_settings(config, environ={})
    key = keyfile.load_or_create(settings.site_key)
    raw = track("Badge Scanned", {"badge_id": "BDG-1", "place": "b-12"}, "loyalty-1")
    with Store.open(settings.database) as store:
        with store.db.conn:
            store.db.execute(
                "INSERT INTO events (message_id, type, event, ts_ms, received_ms, stored_ms, "
                "device_id, schema_version, body) VALUES ('old', 'track', 'Badge Scanned', 1, 1, "
                "1, 'loyalty-1', 'v1', ?)",
                [json.dumps(raw)],
            )
            store.db.execute("INSERT INTO holders_unhashed (after_id) VALUES (0)")
        assert store.events.hash_holders(lambda body: holders_hashed(body, key), chunk=1) == 1
        assert store.events.hash_holders(lambda body: holders_hashed(body, key)) == 0
        body, held = store.db.execute(
            "SELECT body, holder FROM events WHERE message_id = 'old'"
        ).fetchone()
    assert "BDG-1" not in body
    assert held == holder(key, "badge", "BDG-1")
    assert json.loads(body)["properties"]["badge_id"] == held
