"""``edge-agent-collector serve --workers 2`` as an installer runs it: a real supervisor and two
real worker processes sharing one port, over SQLite and the session's PostgreSQL.

Which process answered a connection is read from /proc (the worker holding the server's end
of it), so nothing is added to the API for the tests' sake."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.collector.app import create_app
from edge_agent.collector.local import LocalCollector
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import now_ms
from edge_agent.core.aggregate import HOUR_MS
from edge_agent.service import free_port
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
    sync_body,
)
from tests.integration.test_forwarding import Receiver
from tests.integration.test_systemd import ServiceManager

pytestmark = pytest.mark.integration

VENUE = "mall-a"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: The background jobs' threads (`collector.background.Worker` names them).
BACKGROUND_THREADS = {"rolling up days", "forwarding to the CRM", "pruning keys and ids"}


def until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Poll ``check`` until it holds, or fail saying ``what`` was awaited."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not seen within {seconds:g} s: {what}"
        time.sleep(0.05)


class Workers(LocalCollector):
    """The collector served by ``--workers 2``, its log at INFO (the supervisor's lines say
    which pid has which slot)."""

    def __init__(self, folder: Path, db: str) -> None:
        super().__init__(folder, db, workers=2, serve_args=("--log-level", "INFO"))

    def start(self, timeout_s: float = 90) -> None:
        """Start, and wait until both workers listen (not only the first). A loaded machine
        (other tests) takes a while to spawn two Python processes."""
        self.admin_token = ADMIN_TOKEN
        super().start(timeout_s)
        until(lambda: "collector_workers_ready" in self.events(), "both workers", timeout_s)

    def lines(self) -> list[dict[str, Any]]:
        """The log's JSON lines."""
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def events(self) -> list[str]:
        """The log's event names, in order."""
        return [str(line.get("event")) for line in self.lines()]

    def slots(self) -> dict[int, int]:
        """Each slot's latest worker pid, as the supervisor logged it."""
        return {
            int(line["slot"]): int(line["pid"])
            for line in self.lines()
            if line.get("event") == "collector_worker_started"
        }

    def worker_pids(self) -> set[int]:
        """The pids of the supervisor's live worker processes (its other child is
        multiprocessing's resource tracker)."""
        return set(self.slots().values()) & children(self.pid or 0)


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def owners(port: int, pids: set[int]) -> Counter[int]:
    """How many established connections to ``port`` each of ``pids`` holds the server's end
    of (read from /proc/net/tcp and each process's descriptors)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                    inodes.add(f"socket:[{inode}]")
    held: Counter[int] = Counter()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        held[pid] += 1
    return held


@contextlib.contextmanager
def spread_clients(central: Workers, n: int) -> Iterator[list[httpx.Client]]:
    """``n`` clients, one open connection each, held by both workers between them: which
    worker accepts a connection is the kernel's choice, so connections are opened again
    until each worker holds one."""
    clients: list[httpx.Client] = []
    try:

        def opened() -> bool:
            while len(clients) < n:
                client = httpx.Client(base_url=central.url, timeout=60)
                clients.append(client)
                assert client.get("/healthz").status_code == 200
            if len(set(owners(central.port, central.worker_pids()))) >= 2:
                return True
            clients.pop(0).close()
            return False

        until(opened, "connections held by both workers")
        yield clients
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def central(target: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    """The collector over ``target`` with two workers; its log is printed if the test fails."""
    made = Workers(tmp_path / "central", target)
    yield made
    made.stop()
    if getattr(request.node, "failed", False) and made.log.exists():
        print(f"--- collector log ---\n{made.log.read_text()[-8000:]}")


def add_site(target: str, site: str = "shop-a") -> str:
    store = CentralStore.open(target)
    try:
        token = secrets.token_urlsafe(32)
        store.add_site(site, VENUE, hashlib.sha256(token.encode()).hexdigest())
    finally:
        store.close()
    return token


def at_once(
    clients: list[httpx.Client], send: Callable[[httpx.Client], httpx.Response]
) -> list[httpx.Response]:
    """``send`` on every client at the same moment, one thread each."""
    start = threading.Barrier(len(clients))
    answers: list[httpx.Response | BaseException] = [RuntimeError("not sent")] * len(clients)

    def one(index: int) -> None:
        start.wait()
        try:
            answers[index] = send(clients[index])
        except BaseException as exc:  # reported below, in the test's thread
            answers[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return [a for a in answers if isinstance(a, httpx.Response)]


def test_the_same_batch_from_16_connections_across_workers_is_stored_once(
    central: Workers, target: str
) -> None:
    token = add_site(target)
    central.start()
    first_hour = day_start(now_ms()) - 24 * HOUR_MS
    keys = 4
    with spread_clients(central, 16) as clients:
        for n in range(keys):
            hours = [first_hour + (3 * n + i) * HOUR_MS for i in range(3)]
            cells = [insight(hour_cell(h, f"k{n}-{i}", 6, 1)) for i, h in enumerate(hours)]
            body = sync_body("shop-a", VENUE, now_ms() - 1000, cells)
            answers = at_once(
                clients, functools.partial(post, path="/v1/sync", body=body, token=token)
            )
            assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers]
            firsts = [a.json() for a in answers if not a.json()["duplicate"]]
            assert firsts == [{"stored": 3, "duplicate": False}]
            assert {a.json()["stored"] for a in answers} == {3}
        # Both workers held connections while the batches were sent (the same clients), so
        # both answered some of them.
        assert set(owners(central.port, central.worker_pids())) == central.worker_pids()

        # /metrics: the fleet's gauges read the database and the pruned rows add up over
        # the workers (in the shared folder), so any worker answers the same.
        scraped = set()
        for client in clients:
            answer = client.get("/metrics", headers=ADMIN)
            assert answer.status_code == 200
            scraped.add(
                "\n".join(
                    line
                    for line in answer.text.splitlines()
                    # The stalest check-in's age moves with the clock: the rest stays.
                    if "check_in_age" not in line and not line.startswith("#")
                )
            )
    (metrics,) = scraped
    assert 'edge_collector_pruned_rows_total{table="idempotency"} 0.0' in metrics
    assert 'edge_collector_sites{state="healthy"}' in metrics
    assert count(target, "insight_cells") == 3 * keys
    assert count(target, "sync_items") == 3 * keys
    assert count(target, "idempotency") == keys


def test_a_killed_worker_is_replaced_and_the_background_jobs_run_once(
    central: Workers, target: str, tmp_path: Path
) -> None:
    crm = Receiver()
    with Server(crm.app) as crm_server:
        key_file = tmp_path / "crm.key"
        key_file.write_text("wk-" + "k" * 20 + "\n")
        added = collector_cli(
            "destinations", "add", "crm", "--url", crm_server.url,
            "--write-key-file", str(key_file), "--db", target,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        token = add_site(target)
        central.start()
        slots = central.slots()
        assert set(slots) == {0, 1}
        ts = now_ms() - 60_000

        # The same batches from 8 connections across both workers: each item stored once,
        # and forwarded once (one worker forwards; a second forwarder would send again
        # within its period).
        sent: set[str] = set()
        with spread_clients(central, 8) as clients:
            for n in range(2):
                people = [f"p{n}-{i}" for i in range(5)]
                body = {"batch": [segment_item("shop-a", p, timestamp_ms=ts) for p in people]}
                sent |= {item["messageId"] for item in body["batch"]}
                answers = at_once(
                    clients, functools.partial(post, path="/v1/batch", body=body, token=token)
                )
                assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 7
        until(lambda: set(crm.message_ids()) == sent, "every item forwarded")
        # Settled before the kill: a row sent but not yet marked delivered is sent again once
        # its lease ends (at least once, as after any crash; the destination dedupes by
        # messageId), which is not what this test looks for.
        delivered = "SELECT count(*) FROM forward_queue WHERE delivered_ms IS NOT NULL"
        until(lambda: _one(target, delivered) == len(sent), "every row marked delivered")

        # Slot 0 runs the background jobs: the one whose replacement must take them over.
        os.kill(slots[0], signal.SIGKILL)
        # Fresh connections (the dead worker's own were cut with it): the port answers.
        for _ in range(10):
            with httpx.Client(base_url=central.url, timeout=60) as client:
                assert client.get("/healthz").status_code == 200
        more = {"batch": [segment_item("shop-a", p, timestamp_ms=ts) for p in ("mei", "ana")]}
        with httpx.Client(base_url=central.url, timeout=60) as client:
            assert post(client, "/v1/batch", more, token).json()["stored"] == 2
        sent |= {item["messageId"] for item in more["batch"]}

        until(lambda: central.slots()[0] != slots[0], "a new worker in slot 0", 60)
        replacement = central.slots()[0]
        assert central.worker_pids() == {replacement, slots[1]}
        assert "collector_worker_exited" in central.events()
        started = [
            (line["slot"], line["background"])
            for line in central.lines()
            if line.get("event") == "collector_worker_started"
        ]
        assert sorted(started) == [(0, True), (0, True), (1, False)]
        # The replacement listens, and forwards what was stored while slot 0 was down.
        with spread_clients(central, 2):
            assert replacement in owners(central.port, central.worker_pids())
        until(lambda: set(crm.message_ids()) == sent, "the later items forwarded", 60)
        until(lambda: _one(target, delivered) == len(sent), "every row marked delivered")
        assert sorted(crm.message_ids()) == sorted(sent)
        assert count(target, "identified") == len(sent)


def _one(target: str, query: str) -> int:
    return int(rows(target, query)[0][0])


def test_only_an_app_with_background_runs_the_jobs(store: CentralStore) -> None:
    def running() -> set[str]:
        return {t.name for t in threading.enumerate()} & BACKGROUND_THREADS

    with Server(create_app(store, ADMIN_TOKEN, background=False)):
        assert running() == set()
    with Server(create_app(store, ADMIN_TOKEN)):
        assert running() == BACKGROUND_THREADS
    until(lambda: running() == set(), "the jobs stopped with their app")


# --- the command line and systemd ---------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "said"),
    [
        pytest.param(["--workers", "0"], "--workers 0: give 1-32", id="no-workers"),
        pytest.param(["--workers", "33"], "--workers 33: give 1-32", id="too-many-workers"),
        pytest.param(["--pool-size", "0"], "--pool-size 0: give 1-64", id="no-pool"),
        pytest.param(["--pool-size", "65"], "--pool-size 65: give 1-64", id="pool-too-big"),
    ],
)
def test_serve_refuses_workers_and_pool_sizes_out_of_bounds(
    tmp_path: Path, option: list[str], said: str
) -> None:
    done = collector_cli(
        "serve", "--db", str(tmp_path / "central.db"), "--port", str(free_port()), *option,
        env={**os.environ, "EDGE_COLLECTOR_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert done.returncode == 2
    assert said in done.stderr
    assert done.stderr.count("\n") == 1  # one line saying what to fix


def test_serve_refuses_a_port_in_use_before_starting_workers(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = collector_cli(
            "serve", "--db", str(tmp_path / "central.db"), "--port", str(port),
            "--workers", "2",
            env={**os.environ, "EDGE_COLLECTOR_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "collector_worker_started" not in done.stdout


def test_workers_are_ready_to_systemd_once_both_listen_and_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    manager = ServiceManager(f"@edge-agent-test-{uuid.uuid4().hex}")
    port = free_port()
    log = tmp_path / "collector.log"
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "edge_agent.collector.cli", "serve",
                    "--db", str(tmp_path / "central.db"), "--port", str(port), "--workers", "2",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "EDGE_COLLECTOR_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
                    "NOTIFY_SOCKET": manager.address,
                    "WATCHDOG_USEC": "1000000",
                },
            )  # fmt: skip
        try:
            ready = manager.wait(lambda m: m.get("READY") == "1", "READY=1")
            assert manager.since(ready)[0]["STATUS"] == f"2 workers listening on 127.0.0.1:{port}"
            assert log.read_text().count('"event": "Application startup complete."') == 2
            first = manager.wait(lambda m: m.get("WATCHDOG") == "1", "a ping", start=ready)
            manager.wait(lambda m: m.get("WATCHDOG") == "1", "another ping", start=first + 1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log.read_text()
            manager.wait(lambda m: m.get("STOPPING") == "1", "STOPPING=1")
            text = log.read_text()
            assert text.count('"event": "Application shutdown complete."') == 2
            assert '"event": "collector_workers_stopped"' in text
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    finally:
        manager.close()
