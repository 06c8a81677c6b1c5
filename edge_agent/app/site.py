"""The site's existing database and key, for the use cases that act on a person's data."""

from __future__ import annotations

from edge_agent.config import Settings
from edge_agent.core.identity import SiteKey
from edge_agent.errors import StorageError
from edge_agent.ops import keyfile
from edge_agent.store.database import Store


def writing_store(settings: Settings) -> Store:
    """The site's database opened to commit events, with the site's rules for what a commit
    keeps (the dead letters' budget, who may link a visit); created when it is not there.

    Raises:
        StorageError: it cannot be opened.
    """
    return Store.open(
        settings.database,
        settings.store.synchronous,
        budget=settings.store.dead_letter_budget,
        link_devices=settings.privacy.linking,
    )


def existing_store(settings: Settings) -> tuple[Store, SiteKey]:
    """The site's database (which must exist: these commands never create one) and its key.

    Raises:
        StorageError: there is no database at the configured path, or it cannot be opened.
        ConfigError: the site key file cannot be read or created.
    """
    if not settings.database.exists():
        raise StorageError(
            f"no database at {settings.database}: has the agent run with this config?"
        )
    return writing_store(settings), keyfile.load_or_create(settings.site_key)
