"""A person's rights at the site: erasure with a receipt, and a subject access export."""

from __future__ import annotations

import uuid

from edge_agent.app.clock import now_ms
from edge_agent.app.site import existing_store
from edge_agent.config import Settings
from edge_agent.core.identity import (
    Identity,
    SiteKey,
    UserId,
    holder,
    pseudonym,
)
from edge_agent.store.people import Receipt

#: How a person is named to `forget` and `export_person`: ``user_id`` (their userId, as the
#: devices send it), ``ticket`` or ``badge`` (the id printed on it).
Named = tuple[str, str]


def _subject(key: SiteKey, named: Named) -> Identity:
    how, raw = named
    if how == "user_id":
        return Identity(pseudonym(key, raw), UserId(raw), {})
    return Identity(holder(key, how, raw), None, {})


def forget(settings: Settings, named: Named) -> Receipt:
    """Erase everything held about a person (the right to erasure) and return the receipt.
    Named by userId: their events, those of their visits and of every ticket or badge a scan
    linked to them; by ticket or badge: every scan of it.

    A person the site never saw gets a receipt too, with nothing removed.

    Raises:
        StorageError: there is no database, or it cannot be written.
    """
    store, key = existing_store(settings)
    with store:
        return store.erase(_subject(key, named), f"operator-{uuid.uuid4()}", now_ms())


def export_person(settings: Settings, named: Named) -> dict[str, object]:
    """Everything held about a person, for a subject access request (the right of access).

    Raises:
        StorageError: there is no database, or it cannot be read.
    """
    store, key = existing_store(settings)
    with store:
        person = _subject(key, named).pseudonym
        held = store.person(person)
    return {
        "site": settings.site.id,
        named[0]: named[1],
        "pseudonym": person,
        "exported_ms": now_ms(),
        "held": held,
    }
