"""What just changed at which device or zone: the ingest loop tells, the screens' streams wait
for it.

The ingest loop commits in the agent's main thread while the screens' API runs in uvicorn's
event loop, in another thread, so news crosses over with ``call_soon_threadsafe`` and is only
ever read or written in the event loop. Each device has a version number that grows with every
commit touching it; a stream remembers the version it last answered for, so a change that lands
while it is computing wakes it at once instead of being missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson

from edge_agent.core.events import Event

#: Events about a person rather than a place: the person may stand anywhere.
_ABOUT_A_PERSON = frozenset({"Consent Updated", "Erasure Requested"})
_ZONE_EVENTS = frozenset({"Zone Entered", "Zone Exited"})


#: The key of the venue's gates in `Changes`: every ticket scan stored touches it, so the gate
#: screens answer again at once (no device or zone is named so: a zone's key starts "zone:").
GATES = "venue:gates"


def place(kind: str, name: str) -> str:
    """The key of a device (``kind`` device), a zone (``kind`` zone) or, for a gate screen
    (``kind`` gate), the venue's gates in `Changes`."""
    if kind == "gate":
        return GATES
    return name if kind == "device" else f"zone:{name}"


def touched(events: Iterable[Event]) -> tuple[frozenset[str], bool]:
    """The places (devices, zones, and the gates for a ticket scan) whose screens may change
    with ``events``, and whether every place's may (a consent, an erasure or an identify is
    about a person, wherever they stand)."""
    places: set[str] = set()
    everyone = False
    for event in events:
        places.add(place("device", event.device_id))
        if event.name in _ZONE_EVENTS:
            zone = orjson.loads(event.body).get("properties", {}).get("zone")
            places.add(place("zone", str(zone)))
        elif event.name == "Ticket Scanned":
            places.add(GATES)
        everyone = everyone or event.type == "identify" or event.name in _ABOUT_A_PERSON
    return frozenset(places), everyone


class Changes:
    """Versions of what each device has seen, and the streams waiting on them."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._everyone = 0
        self._devices: dict[str, int] = {}
        self._waiting: dict[asyncio.Event, str] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver news in ``loop`` (the event loop the streams run in)."""
        self._loop = loop

    def seen(self, devices: frozenset[str], everyone: bool) -> None:
        """From any thread: what stands at ``devices`` (at every device, with ``everyone``)
        has just changed. Before a loop is attached there is nobody to tell."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._bump, devices, everyone)

    def _bump(self, devices: frozenset[str], everyone: bool) -> None:
        if everyone:
            self._everyone += 1
        for device in devices:
            self._devices[device] = self._devices.get(device, 0) + 1
        for waiter, device in self._waiting.items():
            if everyone or device in devices:
                waiter.set()

    def version(self, device: str) -> tuple[int, int]:
        """What ``device`` has seen so far (compare with an earlier answer)."""
        return self._everyone, self._devices.get(device, 0)

    async def wait(self, device: str, since: tuple[int, int], timeout_s: float) -> None:
        """Return once ``device`` has seen anything after version ``since``, or after
        ``timeout_s`` (the caller re-checks what a commit elsewhere may have changed)."""
        if self.version(device) != since:
            return
        waiter = asyncio.Event()
        self._waiting[waiter] = device
        try:
            await asyncio.wait_for(waiter.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            del self._waiting[waiter]
