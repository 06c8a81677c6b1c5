"""The versioned JSON Schemas shipped in the package, loaded and compiled once.

Layout: ``schemas/{version}/envelope.json`` (the Segment track/identify envelope),
``schemas/{version}/events/*.json`` (one per in-store event name, its ``title``), and shared
pieces such as ``product.json`` that event schemas ``$ref`` relatively.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import jsonschema_rs

from edge_agent.core.events import Schemas, Validator
from edge_agent.errors import SchemaError

CURRENT_VERSION = "v1"

# Schemas carry no $id of their own; each is given one under this base, as if every file of
# a version sat in one folder, so ``"$ref": "product.json"`` means that version's shared
# piece. The registry holds those pieces from the package: nothing is ever fetched.
_BASE = "https://schemas.edge-agent.invalid/"


def _folder(version: str) -> Traversable:
    return resources.files(__name__).joinpath(version)


def _read(file: Traversable) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(
            f"schema file {file.name} cannot be read: {exc}; reinstall edge-agent"
        ) from exc
    return loaded


def _names_someone(path: list[str]) -> bool:
    """Whether the value at ``path`` may name a person: a userId, traits, a ticket or badge."""
    return path[:1] in (["userId"], ["traits"]) or (
        path[:1] == ["properties"] and path[1:2] in (["ticket_id"], ["badge_id"])
    )


def _compile(definition: dict[str, Any], uri: str, registry: jsonschema_rs.Registry) -> Validator:
    try:
        compiled = jsonschema_rs.validator_for(
            {**definition, "$id": uri}, registry=registry, validate_formats=True
        )
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        raise SchemaError(f"schema {uri.removeprefix(_BASE)} does not compile: {exc}") from exc

    def check(document: object) -> object:
        try:
            compiled.validate(document)
        except jsonschema_rs.ValidationError as exc:
            # The library's own text spans several lines and repeats the schema path; the
            # dead letter wants one line: where in the event, and what is wrong there.
            path = [str(step) for step in exc.instance_path]
            where = ".".join(path) or "event"
            # The library quotes the offending value; a person's id or traits must not be
            # copied into a dead letter's detail that way.
            said = "is not valid here" if _names_someone(path) else exc.message
            raise ValueError(f"{where}: {said}") from None
        return document

    return check


def versions() -> list[str]:
    """The schema versions shipped in this package, oldest first."""
    root = resources.files(__name__)
    return sorted(item.name for item in root.iterdir() if item.is_dir() and item.name[:1] == "v")


def event_names(version: str = CURRENT_VERSION) -> list[str]:
    """The track event names a schema version accepts."""
    return sorted(_read(file)["title"] for file in _event_files(version))


def _event_files(version: str) -> list[Traversable]:
    folder = _folder(version).joinpath("events")
    return [file for file in folder.iterdir() if file.name.endswith(".json")]


def load(version: str = CURRENT_VERSION) -> Schemas:
    """Compile the envelope and every event schema of one version.

    Raises:
        SchemaError: a file is missing, is not JSON, or is not a valid schema.
    """
    if version not in versions():
        raise SchemaError(f"schema version {version!r} is not shipped; have {versions()}")
    folder = _folder(version)
    shared = [
        (f"{_BASE}{version}/{file.name}", _read(file))
        for file in folder.iterdir()
        if file.name.endswith(".json") and file.name != "envelope.json"
    ]
    registry = jsonschema_rs.Registry(shared)
    envelope = _compile(
        _read(folder.joinpath("envelope.json")), f"{_BASE}{version}/envelope.json", registry
    )
    events: dict[str, Validator] = {}
    for file in _event_files(version):
        definition = _read(file)
        events[definition["title"]] = _compile(
            definition, f"{_BASE}{version}/{file.name}", registry
        )
    return Schemas(version=version, envelope=envelope, events=events)
