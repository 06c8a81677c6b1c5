"""The catalogue's use cases: import a catalogue file, list what the site knows of its
products."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import Settings
from edge_agent.core.catalogue import Refusal, parse_file
from edge_agent.errors import ConfigError
from edge_agent.store.catalogue import Product
from edge_agent.store.database import Store


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import took and refused, and what the catalogue holds after it."""

    taken: int
    refused: list[Refusal]
    known: int
    named: int


def import_file(settings: Settings, path: Path, now_ms: int) -> Imported:
    """Take a catalogue file (CSV, or JSON when its name ends in ``.json``): every row that
    can be taken is, the others are refused with their line and reason.

    Raises:
        ConfigError: the file cannot be read, or is not a catalogue at all.
        StorageError: the database cannot be written.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the catalogue {path}: {exc.strerror}") from exc
    try:
        entries, refused = parse_file(data, path.suffix.lower() == ".json")
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    with Store.open(settings.database, settings.store.synchronous) as store:
        store.catalogue.imported(entries, now_ms)
        known, named, _ = store.catalogue.counts()
    return Imported(len(entries), refused, known, named)


def products(settings: Settings, limit: int, after: str = "") -> list[Product]:
    """Up to ``limit`` products the site knows, by id, after ``after``.

    Raises:
        StorageError: the database cannot be read.
    """
    with Store.open(settings.database, settings.store.synchronous) as store:
        return store.catalogue.listed(limit, after)
