"""Which device may link a visit (an ``anonymousId``) to a person.

A link makes the visit's events the person's: their erasure deletes them and their export
shows them. So a device may not claim a visit it has no part in: it may link a visit only
when it is the only device that has seen it so far, or when the site lists it as one that
identifies visitors other devices saw (``[privacy] link_devices``: a loyalty scanner, a POS
that reads loyalty cards). A visit linked to one person is never moved to another.
"""

from __future__ import annotations

from collections.abc import Collection


def refusal(
    device: str,
    person: str,
    seen_by: Collection[str],
    linked_to: str | None,
    link_devices: Collection[str],
) -> str | None:
    """Why ``device`` may not link a visit to ``person``, or None when it may.

    Args:
        device: the device the identified event came from.
        person: the pseudonym the event names.
        seen_by: the devices that sent the visit's events so far.
        linked_to: the person the visit is linked to already, if any.
        link_devices: the devices the site lets link any visit.
    """
    if linked_to is not None and linked_to != person:
        return "the visit (anonymousId) is linked to another person already: not moved"
    if linked_to == person or device in link_devices or set(seen_by) <= {device}:
        return None
    others = sorted(set(seen_by) - {device})
    return (
        f"device {device[:64]!r} may not link a visit that other devices saw "
        f"({', '.join(d[:64] for d in others[:3])}): list it in [privacy] link_devices if "
        "it identifies visitors, then replay"
    )
