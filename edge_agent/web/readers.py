"""The web app's reads of the site's store: one read-only view per worker thread, since
SQLite connections stay in the thread that opened them, all sharing the loaded models."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from edge_agent.serving.models import Models, Sessions
from edge_agent.serving.recommend import Recommender
from edge_agent.store.database import Store
from edge_agent.store.screens import Screens


@dataclass(frozen=True)
class Reader:
    """One thread's read-only view of the store."""

    store: Store
    screens: Screens
    recommender: Recommender
    models: Models


class Readers:
    """A `Reader` per thread over ``database``, opened on the thread's first request."""

    def __init__(self, database: Path, models_folder: Path) -> None:
        self.database = database
        self.models_folder = models_folder
        self.sessions = Sessions()
        self.local = threading.local()

    def get(self) -> Reader:
        """The calling thread's reader.

        Raises:
            StorageError: the database cannot be opened.
        """
        found: Reader | None = getattr(self.local, "reader", None)
        if found is None:
            store = Store.open(self.database, readonly=True)
            models = Models(store, self.models_folder, self.sessions)
            found = self.local.reader = Reader(
                store, Screens(store), Recommender(store, models), models
            )
        return found
