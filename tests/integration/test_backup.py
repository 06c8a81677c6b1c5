"""Backups taken while the agent ingests, restores and their refusals, and the guard against a
database from a newer edge-agent: real agent processes, real files, the command line."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.config import Settings, load_settings
from edge_agent.errors import StorageError
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.store.database import Store
from tests.conftest import AgentProcess
from tests.helpers import (
    SITE,
    Publisher,
    cli,
    encode,
    ingest,
    query,
    stored_ids,
    topic,
    track,
    wait_for,
)

pytestmark = pytest.mark.integration


def _door() -> dict[str, object]:
    return track("Door Counted", {"direction": "in", "count": 1}, "door-1")


def _ids_by_row(db: Path) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in query(db, "SELECT id, message_id FROM events")]


def _integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


class Stream:
    """Publishes door counts from a thread until stopped, as a busy site's devices would."""

    def __init__(self, port: int) -> None:
        self.publisher = Publisher(port)
        self.stopped = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.publisher.publish(topic("door-1"), encode(_door()))
            self.sent += 1
            self.stopped.wait(0.002)

    def stop(self) -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.thread.join(30)
            self.publisher.close()


@pytest.fixture
def running(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> Iterator[tuple[AgentProcess, Stream]]:
    agent = agent_factory(broker.port)
    agent.start()
    stream = Stream(broker.port)
    yield agent, stream
    stream.stop()


def test_a_backup_taken_while_ingesting_is_one_consistent_moment(
    running: tuple[AgentProcess, Stream], tmp_path: Path
) -> None:
    agent, stream = running
    wait = 60.0
    wait_for(lambda: len(stored_ids(agent.db)) >= 300, wait, "a few hundred events stored")
    # Committed (and so acknowledged to the broker) before the backup starts.
    before = set(stored_ids(agent.db))
    target = tmp_path / "backups" / "site.db"
    target.parent.mkdir()
    done = cli("--config", str(agent.config), "backup", str(target))
    assert done.returncode == 0, done.stderr
    after = set(stored_ids(agent.db))
    # The stream goes on past the backup: it was taken mid-ingest.
    wait_for(lambda: len(stored_ids(agent.db)) > len(after), wait, "events after the backup")

    copied = _ids_by_row(target)
    copied_ids = {m for _, m in copied}
    assert before <= copied_ids <= after
    # One moment: exactly the source's rows up to the newest row in the copy, none missing
    # between (rows are only ever appended here, with increasing ids).
    newest = max(i for i, _ in copied)
    source = [(i, m) for i, m in _ids_by_row(agent.db) if i <= newest]
    assert copied == source
    assert _integrity(target) == ["ok"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["site.db"]  # no temporary left
    assert f"events          {len(copied)} rows" in done.stdout
    assert str(target) in done.stdout

    # Put it back: the agent stopped, the restored database is the backup, the replaced one kept.
    agent.stop()
    stream.stop()
    final = _ids_by_row(agent.db)
    restored = cli("--config", str(agent.config), "restore", str(target))
    assert restored.returncode == 0, restored.stderr
    assert _ids_by_row(agent.db) == copied
    kept = agent.db.with_name("edge-agent.db.before-restore")
    assert _ids_by_row(kept) == final
    assert f"kept as {kept}" in restored.stdout
    # And the agent runs on it (adding what the broker still held unacknowledged).
    agent.start()
    assert copied_ids <= set(stored_ids(agent.db))


def test_restore_is_refused_while_the_agent_runs_and_not_after_a_kill(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    backup = tmp_path / "site.db"
    assert cli("--config", str(agent.config), "backup", str(backup)).returncode == 0

    refused = cli("--config", str(agent.config), "restore", str(backup))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"edge-agent: database {agent.db} is in use by ")
    assert f"a running edge-agent agent (pid {agent.process.pid if agent.process else 0})" in (
        refused.stderr
    )
    assert "stop the agent first (systemctl stop edge-agent)" in refused.stderr
    assert not agent.db.with_name("edge-agent.db.before-restore").exists()

    # A second agent on the same database is refused the same way.
    twin = AgentProcess(agent.folder, broker.port)
    twin.log = agent.folder / "twin.log"
    twin.start(wait_connected=False)
    assert twin.process is not None
    assert twin.process.wait(30) == 2
    assert "is in use by a running edge-agent agent" in twin.log_text()

    # The kernel drops the lock with its holder, however it ends: a killed agent blocks nothing.
    agent.kill9()
    agent.kill_group()
    allowed = cli("--config", str(agent.config), "restore", str(backup))
    assert allowed.returncode == 0, allowed.stderr


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Settings]:
    config = tmp_path / "agent.toml"
    config.write_text(f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n')
    settings = load_settings(config, environ={})
    ingest(settings, [_door() for _ in range(400)], junk=[b"{oops"], device="door-1")
    return config, settings


def _other_application(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('hello')")
    conn.commit()
    conn.close()


def _corrupted(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    # Garbage over pages of the events table's b-tree, past the header and the schema page.
    data[3 * page : 6 * page] = bytes((i * 37) % 251 for i in range(3 * page))
    path.write_bytes(bytes(data))


def _index_disagrees(path: Path) -> None:
    # Readable, but the index no longer matches its table: only integrity_check sees it.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, '(ts_ms)', '(received_ms)') "
        "WHERE name = 'events_ts'"
    )
    conn.commit()
    conn.close()


def _from_a_newer_release(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('edge-agent', '0012_future_step', '2031-01-01 00:00:00+00:00')"
    )
    conn.commit()
    conn.close()


def _schema_added(statement: str) -> Callable[[Path], None]:
    def add(path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(statement)
        conn.commit()
        conn.close()

    return add


# A sound edge-agent database with one schema object more: each could drop or alter what the
# agent acknowledges, or copy personal data where erasure does not look.
_vanishing_events = _schema_added(
    "CREATE TRIGGER vanish AFTER INSERT ON events BEGIN DELETE FROM events WHERE id = new.id; END"
)
_copying_view = _schema_added("CREATE VIEW everyone AS SELECT * FROM identity_vault")
_shadow_table = _schema_added("CREATE TABLE kept_forever (body TEXT)")
_extra_index = _schema_added("CREATE INDEX events_body ON events (body)")
TAMPERED = (_vanishing_events, _copying_view, _shadow_table, _extra_index)


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        pytest.param(_vanishing_events, "a trigger 'vanish' that edge-agent never", id="trigger"),
        pytest.param(_copying_view, "a view 'everyone' that edge-agent never", id="view"),
        pytest.param(_shadow_table, "a table 'kept_forever' that edge-agent never", id="table"),
        pytest.param(_extra_index, "an index 'events_body' that edge-agent never", id="index"),
        pytest.param(
            lambda p: p.write_text("name,total\nMei,12\n"),
            "file is not a database",
            id="not-sqlite",
        ),
        pytest.param(lambda p: p.write_bytes(b""), "not an edge-agent database", id="empty"),
        pytest.param(_other_application, "not an edge-agent database", id="other-application"),
        pytest.param(_corrupted, "database disk image is malformed", id="corrupted"),
        pytest.param(
            _index_disagrees,
            "cannot be restored: row 1 missing from index events_ts",
            id="fails-integrity-check",
        ),
        pytest.param(
            _from_a_newer_release,
            "was written by a newer edge-agent (schema step 0012_future_step unknown here): "
            "upgrade edge-agent or restore a backup",
            id="newer-release",
        ),
        pytest.param(lambda p: p.unlink(), "no backup file at", id="missing"),
    ],
)
def test_restore_refuses_what_cannot_replace_the_database(
    site: tuple[Path, Settings], tmp_path: Path, spoil: Callable[[Path], None], says: str
) -> None:
    config, settings = site
    candidate = tmp_path / "candidate.db"
    assert cli("--config", str(config), "backup", str(candidate)).returncode == 0
    if spoil not in (_corrupted, _index_disagrees, _from_a_newer_release, *TAMPERED):
        candidate.unlink()
        candidate.touch()
    spoil(candidate)
    before = _ids_by_row(settings.database)

    refused = cli("--config", str(config), "restore", str(candidate))
    assert refused.returncode == 2
    assert refused.stderr.startswith("edge-agent: ")
    assert str(candidate) in refused.stderr
    assert says in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    # Nothing was touched.
    assert _ids_by_row(settings.database) == before
    assert not settings.database.with_name("edge-agent.db.before-restore").exists()
    assert sorted(p.name for p in settings.database.parent.iterdir()) == sorted(
        ["edge-agent.db", "edge-agent.db.lock", "site.key"]
        + [p.name for p in settings.database.parent.glob("edge-agent.db-*")]
    )


def test_a_database_from_a_newer_release_is_refused_by_every_open(
    site: tuple[Path, Settings], tmp_path: Path
) -> None:
    config, settings = site
    newer = tmp_path / "newer.db"
    shutil.copy(settings.database, newer)
    for suffix in ("-wal", "-shm"):
        if Path(f"{settings.database}{suffix}").exists():
            shutil.copy(f"{settings.database}{suffix}", f"{newer}{suffix}")
    _from_a_newer_release(newer)
    expected = (
        f"database {newer} was written by a newer edge-agent (schema step 0012_future_step "
        "unknown here): upgrade edge-agent or restore a backup"
    )
    for readonly in (False, True):
        with pytest.raises(StorageError) as refused:
            Store.open(newer, readonly=readonly)
        assert str(refused.value) == expected
    # Nothing was migrated or written into it by the refused opens.
    assert query(newer, "SELECT count(*) FROM _sqlite_migrations WHERE name = '0012_future_step'")
    # The command line says the same in one line.
    moved = tmp_path / "moved.toml"
    moved.write_text(config.read_text() + f'[store]\npath = "{newer}"\n')
    status = cli("--config", str(moved), "status")
    assert status.returncode == 2
    assert status.stderr == f"edge-agent: {expected}\n"
