"""For the installer and the site's monitoring: ``/healthz`` (the process answers) and
``/readyz`` (broker, database, disk and models, each with a reason)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge_agent.config import Settings
from edge_agent.core.catalogue import share_known
from edge_agent.core.health import (
    HEARTBEAT_STALE_MS,
    Check,
    Verdict,
    broker_check,
    database_check,
    disk_check,
    models_check,
    verdict,
)
from edge_agent.errors import ModelError, StorageError
from edge_agent.ops.disk import free_bytes
from edge_agent.serving.models import Models
from edge_agent.web.answers import ScreenAnswers
from edge_agent.web.cached import Cached
from edge_agent.web.readers import Readers
from edge_agent.web.responses import json_answer

#: Readiness is worked out at most this often, however often it is asked.
READY_EVERY_S = 1.0


async def healthz(_: Request) -> Response:
    """The process answers."""
    return json_answer(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    """Whether the agent is ready, and each check's reason (503 when it is not)."""
    settings: Settings = request.app.state.settings
    readers: Readers = request.app.state.readers
    clock: Callable[[], int] = request.app.state.clock
    ready: Cached = request.app.state.ready
    answers: ScreenAnswers = request.app.state.answers
    found = await run_in_threadpool(
        lambda: ready.get(lambda: readiness(settings, readers, clock(), _sold(answers)))
    )
    return json_answer(200 if found.ready else 503, found.as_dict())


def readiness(
    settings: Settings, readers: Readers, now_ms: int, sold: Collection[str] = ()
) -> Verdict:
    """The broker, database, disk and models checks of the agent, as of ``now_ms`` (``sold``:
    the items the site sold lately, which the serving models should know)."""
    try:
        reader = readers.get()
        state = reader.store.state.all()
    except StorageError as exc:
        unreadable = Check("database", False, "unreadable", str(exc))
        return verdict([unreadable, _disk(settings), _models(readers.get().models, sold)])
    return verdict(
        [
            broker_check(state.get("broker"), f"{settings.mqtt.host}:{settings.mqtt.port}"),
            database_check(state.get("heartbeat"), now_ms, HEARTBEAT_STALE_MS),
            _disk(settings),
            _models(reader.models, sold),
        ]
    )


def _sold(answers: ScreenAnswers) -> Collection[str]:
    try:
        return answers.named()[0]
    except StorageError:
        return ()  # the database check says why


def _disk(settings: Settings) -> Check:
    folder = settings.database.parent
    try:
        return disk_check(free_bytes(folder), settings.store.min_free_mb, str(folder))
    except StorageError as exc:
        return Check("disk", False, "unreadable", str(exc))


def _models(models: Models, sold: Collection[str]) -> Check:
    try:
        serving = [e.name for e in models.entries() if e.status == "serving"]
    except StorageError as exc:
        return Check("models", False, "unreadable", str(exc))
    failures: dict[str, str] = {}
    coverage: dict[str, float] = {}
    for name in serving:
        try:
            # Loaded once and shared with the screens' answers: later checks are cheap.
            loaded = models.serving(name)
        except (StorageError, ModelError) as exc:
            failures[name] = str(exc)
            continue
        if loaded is not None:
            coverage[name] = share_known(loaded[0].vocabulary, sold)
    return models_check(failures, len(serving), coverage)
