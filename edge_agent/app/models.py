"""The models' use cases: list what was offered, pull releases from central, roll back, train
the site's own. Each opens the site's registry for the length of the call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from edge_agent.app.clock import now_ms
from edge_agent.config import Settings
from edge_agent.core.catalogue import share_known
from edge_agent.core.recommend import PERSONAL
from edge_agent.core.releases import Refused
from edge_agent.errors import EdgeAgentError
from edge_agent.serving.models import Models
from edge_agent.store.database import Store
from edge_agent.store.registry import Entry


@contextmanager
def registry(settings: Settings) -> Iterator[tuple[Store, Models]]:
    """The site's store and its model registry, closed afterwards.

    Raises:
        StorageError: the database cannot be opened.
    """
    with Store.open(settings.database, settings.store.synchronous) as store:
        yield store, Models(store, settings.models_folder)


def offered(settings: Settings) -> list[Entry]:
    """Every model version offered to this agent and what became of it, newest first.

    Raises:
        StorageError: the registry cannot be read.
    """
    with registry(settings) as (_, models):
        return models.entries()


def coverage(settings: Settings) -> dict[str, float]:
    """Per serving model, the share of the items the site sold in the last 30 days that its
    vocabulary knows (under ``MIN_COVERAGE``: it does not fit this site).

    Raises:
        StorageError: the database cannot be read.
        ModelIntegrityError: a serving model's files are gone.
    """
    from edge_agent.serving.recommend import stocked_items

    with registry(settings) as (store, models):
        sold = stocked_items(store, now_ms())[0]
        found = {}
        for entry in models.entries():
            if entry.status != "serving":
                continue
            manifest = models.manifest(entry.name, entry.version)
            if not isinstance(manifest, Refused):
                found[entry.name] = share_known(manifest.vocabulary, sold)
        return found


@dataclass(frozen=True, slots=True)
class Pulled:
    """What one model's pull came to: a new entry, an already judged one, or a failure."""

    name: str
    entry: Entry | None = None
    known: bool = False
    error: str | None = None


def pull(settings: Settings, names: Sequence[str]) -> list[Pulled]:
    """Pull the newest release of each named model from central (each once); one model's
    failure does not keep the others from being pulled.

    Raises:
        StorageError: the registry cannot be opened.
        ConfigError: the CA bundle configured for the collector is unreadable.
    """
    from edge_agent.serving.pull import Known
    from edge_agent.serving.pull import pull as pull_release
    from edge_agent.serving.shadow import local_shadow
    from edge_agent.sync.client import client_for

    done = []
    with registry(settings) as (store, models), client_for(settings) as client:
        for name in dict.fromkeys(names):
            shadow = local_shadow(store) if name == PERSONAL else None
            try:
                outcome = pull_release(settings, models, name, client, now_ms(), shadow)
            except EdgeAgentError as exc:
                done.append(Pulled(name, error=str(exc)))
                continue
            if isinstance(outcome, Known):
                done.append(Pulled(name, outcome.entry, known=True))
            else:
                done.append(Pulled(name, outcome))
    return done


def rollback(settings: Settings, name: str) -> Entry | Refused:
    """Serve the previous version of ``name`` again.

    Raises:
        StorageError: the registry cannot be written.
    """
    with registry(settings) as (_, models):
        return models.rollback(name, now_ms())


@dataclass(frozen=True, slots=True)
class Trained:
    """What a training run installed; None where there was not enough to learn from."""

    shipped: list[Entry]
    trending: Entry | None
    personal: Entry | None
    complements: Entry | None


def train(settings: Settings, quick: bool) -> Trained:
    """Install the shipped defaults nothing serves yet and train the site's own models;
    ``quick``: only trending (what the agent refreshes every ``[models] train_every_s``), the
    personal and complement models being nightly work.

    Raises:
        StorageError: the database or the model folder cannot be used.
        ModelIntegrityError: the shipped models are missing from the installation.
    """
    from edge_agent.serving.training import (
        install_shipped,
        train_complements,
        train_next_basket,
        train_trending,
    )

    with registry(settings) as (store, models):
        shipped = install_shipped(models, now_ms())
        trend = train_trending(store, models, now_ms())
        personal = None if quick else train_next_basket(store, models, now_ms())
        pairs = None if quick else train_complements(store, models, now_ms())
    return Trained(shipped, trend, personal, pairs)
