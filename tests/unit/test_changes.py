"""Which places an ingest commit wakes, and a stream's wait on them."""

from __future__ import annotations

import asyncio
from typing import Literal

import orjson

from edge_agent.core.events import Event, MessageId
from edge_agent.core.topics import DeviceId
from edge_agent.web.changes import Changes, place, touched


def _event(
    name: str | None,
    device: str,
    kind: Literal["track", "identify"] = "track",
    **properties: object,
) -> Event:
    body = orjson.dumps({"properties": properties}).decode()
    return Event(MessageId("m"), kind, name, 0, DeviceId(device), "a", None, body)


def test_an_event_touches_its_device_and_a_zone_event_its_zone() -> None:
    places, everyone = touched(
        [_event("Product Added", "till-1"), _event("Zone Entered", "sensor-1", zone="booth")]
    )
    assert places == {"till-1", "sensor-1", place("zone", "booth")}
    assert not everyone


def test_consent_erasure_and_identify_touch_every_place() -> None:
    for event in (
        _event("Consent Updated", "kiosk"),
        _event("Erasure Requested", "kiosk"),
        _event(None, "loyalty", "identify"),
    ):
        assert touched([event])[1]


def test_a_stream_wakes_for_its_place_only_and_never_misses_a_change() -> None:
    async def scenario() -> None:
        changes = Changes()
        changes.attach(asyncio.get_running_loop())
        seen = changes.version("till-1")
        changes.seen(frozenset({"till-2"}), everyone=False)
        await asyncio.sleep(0)  # delivered in the loop
        assert changes.version("till-1") == seen
        waiting = asyncio.create_task(changes.wait("till-1", seen, 30))
        await asyncio.sleep(0)
        changes.seen(frozenset({"till-1"}), everyone=False)
        await asyncio.wait_for(waiting, 5)
        # A change that landed before the wait began returns at once.
        changes.seen(frozenset(), everyone=True)
        await asyncio.sleep(0)
        await asyncio.wait_for(changes.wait("till-1", seen, 30), 5)

    asyncio.run(scenario())
