"""Privacy at the wire: over random event streams with random consent histories, everything
the agent sends to the real collector is checked against what the consent rules allow at the
moment it is sent."""

from __future__ import annotations

import gzip
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge_agent.app import ingest
from edge_agent.app.insights import compute_insights
from edge_agent.collector.app import create_app
from edge_agent.collector.store.central import CentralStore
from edge_agent.config import Settings, load_settings
from edge_agent.core.aggregate import HOUR_MS
from edge_agent.core.identity import pseudonym, subject_hash
from edge_agent.store.database import Store
from edge_agent.sync.client import client_for, drain
from tests.collector_helpers import ADMIN_TOKEN, Server
from tests.helpers import SITE, encode, topic
from tests.property.test_privacy import (
    KEY,
    LIMITS,
    NOW_MS,
    PEOPLE,
    SCHEMAS,
    VISITS,
    Model,
    Step,
    _batches,
    _event,
    steps,
)

pytestmark = pytest.mark.integration

TOKEN = "wire-token-" + "w" * 32
PSEUDONYMS = {person: pseudonym(KEY, person) for person in PEOPLE}


@pytest.fixture(scope="module")
def collector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = CentralStore.open(str(tmp_path_factory.mktemp("central") / "central.db"))
    store.add_site(SITE, SITE, hashlib.sha256(TOKEN.encode()).hexdigest())
    with Server(create_app(store, ADMIN_TOKEN)) as server:
        yield server.url
    store.close()


def _settings(folder: Path, url: str) -> Settings:
    config = folder / "agent.toml"
    config.write_text(
        f'[site]\nid = "{SITE}"\ndata_dir = "{folder}"\n[insights]\nk = 1\n'
        f'[sync]\nurl = "{url}"\ntoken = "{TOKEN}"\n'
    )
    return load_settings(config, environ={})


def _check(requests: list[httpx.Request], allowed: set[str], messages: set[str]) -> None:
    """Everything in these requests is allowed for people with crm_sync now (``allowed``)."""
    for request in requests:
        body = gzip.decompress(request.content)
        text = body.decode()
        document: dict[str, Any] = orjson.loads(body)
        assert "anonymousId" not in text
        for visit in VISITS:
            assert visit not in text, "a visit id left the site"
        for person in PEOPLE:
            # No pseudonym ever leaves; a raw id only for crm_sync, in its own items.
            assert PSEUDONYMS[person] not in text
            if person not in allowed:
                assert person not in text, "a raw id without crm_sync left the site"
        if request.url.path == "/v1/sync":
            assert "@example.org" not in text
            for item in document["items"]:
                assert item["kind"] in ("insight", "erasure", "consent_withdrawn")
                # No raw event: no stored event's messageId appears in what is synced.
                assert not messages & set(orjson.dumps(item).decode().split('"'))
        else:
            assert request.url.path == "/v1/batch"
            for item in document["batch"]:
                assert item["userId"] in allowed
                edge = item["context"]["edge"]
                assert edge["subject_hash"] == subject_hash(PSEUDONYMS[item["userId"]])
                assert set(item) <= {
                    "type",
                    "messageId",
                    "timestamp",
                    "userId",
                    "event",
                    "properties",
                    "traits",
                    "context",
                }


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(steps, min_size=1, max_size=40), st.lists(st.integers(0, 40), max_size=4))
def test_nothing_leaves_without_consent(
    collector_url: str, stream: list[Step], cuts: list[int]
) -> None:
    model = Model()
    seen: list[httpx.Request] = []
    payloads = [(topic("till-1"), encode(_event(n, s)), NOW_MS) for n, s in enumerate(stream)]
    messages = {f"m{n}" for n in range(len(stream))}
    with tempfile.TemporaryDirectory() as folder:
        site = _settings(Path(folder), collector_url)
        done = 0
        with client_for(site) as client:
            client.event_hooks["request"] = [seen.append]
            for batch in _batches(payloads, cuts):
                received, rejected = ingest.classify(batch, LIMITS, SCHEMAS, 65536, KEY)
                with Store.open(site.database) as store:
                    store.commit(received, rejected, "v1", NOW_MS)
                    compute_insights(store, site, NOW_MS + 3 * HOUR_MS)
                for n in range(done, done + len(batch)):
                    model.see(n, stream[n])
                done += len(batch)
                before = len(seen)
                drain(site, NOW_MS, client, force=True)
                _check(seen[before:], model.with_purpose("crm_sync"), messages)
    # What the examples exercised, for --hypothesis-show-statistics.
    paths = {r.url.path for r in seen}
    event(f"sent identified data: {'/v1/batch' in paths}")
    event(f"sent insights or notices: {'/v1/sync' in paths}")
