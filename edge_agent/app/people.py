"""A person's rights at the site: erasure with a receipt, and a subject access export."""

from __future__ import annotations

import uuid

from edge_agent.app.clock import now_ms
from edge_agent.app.site import existing_store
from edge_agent.config import Settings
from edge_agent.core.identity import (
    Identity,
    UserId,
    pseudonym,
)
from edge_agent.store.people import Receipt


def forget(settings: Settings, user_id: str) -> Receipt:
    """Erase everything held about a person (the right to erasure) and return the receipt.

    A person the site never saw gets a receipt too, with nothing removed.

    Raises:
        StorageError: there is no database, or it cannot be written.
    """
    store, key = existing_store(settings)
    with store:
        person = Identity(pseudonym(key, user_id), UserId(user_id), {})
        return store.erase(person, f"operator-{uuid.uuid4()}", now_ms())


def export_person(settings: Settings, user_id: str) -> dict[str, object]:
    """Everything held about a person, for a subject access request (the right of access).

    Raises:
        StorageError: there is no database, or it cannot be read.
    """
    store, key = existing_store(settings)
    with store:
        person = pseudonym(key, user_id)
        held = store.person(person)
    return {
        "site": settings.site.id,
        "user_id": user_id,
        "pseudonym": person,
        "exported_ms": now_ms(),
        "held": held,
    }
