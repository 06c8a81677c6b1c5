"""Site and device ids from an MQTT topic ``sites/{site}/devices/{device}/events``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NewType

from edge_agent.errors import TopicError

SiteId = NewType("SiteId", str)
DeviceId = NewType("DeviceId", str)

_MAX_ID = 128
_ID = re.compile(rf"[^+#/\x00]{{1,{_MAX_ID}}}")


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """Where an event was published: the site and the device that published it."""

    site: SiteId
    device: DeviceId

    def __post_init__(self) -> None:
        for label, value in (("site", self.site), ("device", self.device)):
            if not _ID.fullmatch(value):
                raise TopicError(f"{label} id {value[:_MAX_ID]!r} is empty, too long or has + # /")

    @property
    def topic(self) -> str:
        """The topic this device publishes its events to."""
        return f"sites/{self.site}/devices/{self.device}/events"


# A site has tens of devices, so topics repeat endlessly: the cache makes this free.
@lru_cache(maxsize=4096)
def parse_topic(topic: str) -> DeviceTopic:
    """Split an event topic into site and device.

    Raises:
        TopicError: the topic does not have the shape ``sites/{site}/devices/{device}/events``.
    """
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "sites" or parts[2] != "devices" or parts[4] != "events":
        raise TopicError(f"topic {topic[:200]!r} is not sites/{{site}}/devices/{{device}}/events")
    return DeviceTopic(SiteId(parts[1]), DeviceId(parts[3]))
