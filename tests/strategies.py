"""Hypothesis strategies: arbitrary JSON, valid events, and events with one field broken."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.helpers import one_of_each

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
TEMPLATES = one_of_each("till-1")


@st.composite
def valid_events(draw: st.DrawFn, timestamp: str) -> dict[str, Any]:
    """A valid event of any kind with fresh ids (any text but NUL, which no sync carries)."""
    event: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    characters = st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00")
    event["messageId"] = draw(st.text(characters, min_size=1, max_size=128))
    event["timestamp"] = timestamp
    return event


@st.composite
def broken_events(draw: st.DrawFn, timestamp: str) -> dict[str, Any]:
    """A valid event with one field (top-level or in properties) replaced by arbitrary JSON."""
    event = draw(valid_events(timestamp))
    target = event if draw(st.booleans()) or "properties" not in event else event["properties"]
    key = draw(st.sampled_from([*target.keys(), "extra"]))
    target[key] = draw(json_values)
    return event
