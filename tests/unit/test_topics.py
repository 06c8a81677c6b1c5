"""Site and device from a topic."""

from __future__ import annotations

import pytest

from edge_agent.core.topics import DeviceTopic, parse_topic
from edge_agent.errors import TopicError


def test_parse_and_render_round_trip() -> None:
    where = parse_topic("sites/shop-12/devices/till-3/events")
    assert (where.site, where.device) == ("shop-12", "till-3")
    assert where.topic == "sites/shop-12/devices/till-3/events"


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("", id="empty"),
        pytest.param("sites/a/devices/b", id="short"),
        pytest.param("sites/a/devices/b/events/extra", id="long"),
        pytest.param("site/a/devices/b/events", id="prefix"),
        pytest.param("sites/a/device/b/events", id="middle"),
        pytest.param("sites//devices/b/events", id="empty-site"),
        pytest.param("sites/a/devices/" + "b" * 129 + "/events", id="long-device"),
        pytest.param("sites/a+/devices/b/events", id="wildcard"),
        pytest.param("sites/a/devices/b\x00/events", id="nul"),
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


def test_device_topic_checks_itself() -> None:
    with pytest.raises(TopicError):
        DeviceTopic("a/b", "c")  # type: ignore[arg-type]
