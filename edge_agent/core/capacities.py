"""Capacities of a venue's halls as the installer writes them (``[venue] hall_capacity``).

Apart from `edge_agent.core.gates` so that the settings, which every process of the agent
loads (the receiver included), load no sketch library with it.
"""

from __future__ import annotations

#: The most halls a venue's settings may name.
_MAX_HALLS = 100


def parse_capacities(text: str) -> dict[str, int]:
    """``"h1=2000, h2=800"`` as ``{"h1": 2000, "h2": 800}`` (empty text: no hall has one).

    Raises:
        ValueError: an entry is not ``hall=N`` with a whole number of people from 1 to
            10,000,000, a hall is named twice, or there are more than 100.
    """
    out: dict[str, int] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        hall, equals, people = (part.strip() for part in entry.partition("="))
        if not equals or not hall or len(hall) > 64 or hall in out:
            raise ValueError(f"{entry[:80]!r} is not hall=people, or names a hall twice")
        if not people.isdigit() or not 1 <= int(people) <= 10_000_000:
            raise ValueError(f"{entry[:80]!r}: people must be a whole number 1-10000000")
        out[hall] = int(people)
    if len(out) > _MAX_HALLS:
        raise ValueError(f"at most {_MAX_HALLS} halls")
    return out
