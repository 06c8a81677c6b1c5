"""Pseudonyms: a userId is replaced by HMAC-SHA256(site key, userId) before anything is stored.

The raw userId and the traits a CRM needs leave this module only inside `Identity`, which the
store may keep solely in the identity vault, and only while the person's ``crm_sync`` holds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace
from typing import NewType, cast

import orjson

from edge_agent.core.events import Event

Pseudonym = NewType("Pseudonym", str)
UserId = NewType("UserId", str)

KEY_BYTES = 32
#: How a redacted dead letter names a person: replay then knows it holds no raw userId.
REDACTED = "pseudonym:"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class SiteKey:
    """The site's secret pseudonymisation key; never shown."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a site key is {KEY_BYTES} bytes, got {len(self.secret)}")

    def __repr__(self) -> str:
        return "SiteKey(**********)"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who an identified event came from: the raw id and traits, for the vault only."""

    pseudonym: Pseudonym
    #: None when only the pseudonym is known (an event replayed from a redacted dead letter).
    user_id: UserId | None = field(repr=False)
    traits: dict[str, object] = field(repr=False)


def pseudonym(key: SiteKey, user_id: str) -> Pseudonym:
    """The stable pseudonym of a userId at this site."""
    return Pseudonym(hmac.new(key.secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest())


#: Properties of an event that name a ticket's or a badge's holder as much as a loyalty card
#: names its member, and the domain each is hashed in (`holder`).
HOLDER_KEYS: dict[str, str] = {"ticket_id": "ticket", "badge_id": "badge"}


def holder(key: SiteKey, kind: str, raw_id: str) -> Pseudonym:
    """The stable pseudonym of a ticket or badge (``kind``, a `HOLDER_KEYS` value) at this
    site. The NUL bytes, which no accepted userId holds, keep it apart from the pseudonym of
    a userId of the same text."""
    return pseudonym(key, f"\x00{kind}\x00{raw_id}")


def subject_hash(person: Pseudonym) -> str:
    """What erasure receipts and notices name a person by: not the pseudonym itself."""
    return hashlib.sha256(f"edge-agent-subject:{person}".encode()).hexdigest()


def _known_pseudonym(user_id: str) -> Pseudonym | None:
    if user_id.startswith(REDACTED) and _HEX64.fullmatch(user_id.removeprefix(REDACTED)):
        return Pseudonym(user_id.removeprefix(REDACTED))
    return None


#: Keys that name or reach a person wherever a payload puts them in ``properties`` or
#: ``context`` (compared without case, ``_`` or ``-``). Not ``name``: in the V2 Ecommerce spec
#: that is a product's.
PERSONAL_KEYS = frozenset(
    {
        "email", "emailaddress", "phone", "phonenumber", "mobile", "firstname", "lastname",
        "fullname", "address", "streetaddress", "street", "postalcode", "postcode", "zip",
        "birthday", "dateofbirth", "dob", "ip", "ipaddress", "ssn", "passport",
    }
)  # fmt: skip


def _personal(key: str) -> bool:
    return key.lower().replace("_", "").replace("-", "") in PERSONAL_KEYS


def _without_personal_keys(value: object) -> object:
    # A ticket or badge id anywhere but where `_hash_holders` hashes it is dropped too.
    if isinstance(value, dict):
        return {
            k: _without_personal_keys(v)
            for k, v in value.items()
            if not _personal(k) and k not in HOLDER_KEYS
        }
    if isinstance(value, list):
        return [_without_personal_keys(item) for item in value]
    return value


def _hash_holders(properties: dict[str, object], key: SiteKey, replaying: bool) -> Pseudonym | None:
    """Replace the ticket or badge id in ``properties`` by its holder's pseudonym, in place;
    returns it (the last one, when an event names both). A replayed dead letter's ids are
    marked pseudonyms already (`redact`); from a device, an id in that form is hashed like
    any other, so it cannot pass for someone's pseudonym."""
    found = None
    for name, kind in HOLDER_KEYS.items():
        raw = properties.get(name)
        if raw is None:
            continue
        text = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
        known = _known_pseudonym(text) if replaying else None
        found = known or holder(key, kind, text)
        properties[name] = found
    return found


def take_out_personal(document: dict[str, object]) -> dict[str, object]:
    """Take every personal datum out of an event document, in place; returns the traits found.

    The traits are the top-level ``traits`` and ``context.traits`` (where Segment's libraries
    put them; the top-level ones win). Personal keys (`PERSONAL_KEYS`) elsewhere in
    ``properties`` and ``context``, at any depth, are dropped: they are no one's traits. What
    is returned may reach the vault only, and only for an identified person who consented.
    """
    traits: dict[str, object] = {}
    context = document.get("context")
    if isinstance(context, dict):
        inner = context.pop("traits", None)
        if isinstance(inner, dict):
            traits.update(inner)
        document["context"] = _without_personal_keys(context)
    top = document.pop("traits", None)
    if isinstance(top, dict):
        traits.update(top)
    properties = document.get("properties")
    if isinstance(properties, dict):
        # The holders' ids are hashed, not dropped: gates count distinct holders with them.
        ids = {name: properties.pop(name) for name in HOLDER_KEYS if name in properties}
        cleaned = cast("dict[str, object]", _without_personal_keys(properties))
        document["properties"] = {**cleaned, **ids}
    return traits


def pseudonymise(
    event: Event, key: SiteKey, replaying: bool = False
) -> tuple[Event, Identity | None]:
    """Replace the event's userId by its pseudonym and a ticket's or badge's id by its
    holder's (`holder`, kept in ``Event.holder`` too), and take every personal datum out of
    the stored body (see `take_out_personal`), anonymous events included.

    Returns the event as it may be stored, and the identity it carried (None if anonymous):
    the traits travel only there, towards the vault.
    """
    document = orjson.loads(event.body)
    traits = take_out_personal(document)
    properties = document.get("properties")
    held = _hash_holders(properties, key, replaying) if isinstance(properties, dict) else None
    event = replace(event, holder=held)
    if event.user_id is None:
        return replace(event, body=orjson.dumps(document).decode("utf-8")), None
    known = _known_pseudonym(event.user_id)
    person = known or pseudonym(key, event.user_id)
    document["userId"] = person
    raw = None if known else UserId(event.user_id)
    identity = Identity(person, raw, traits)
    body = orjson.dumps(document).decode("utf-8")
    return replace(event, user_id=person, body=body), identity


def holders_hashed(body: str, key: SiteKey) -> tuple[str, Pseudonym | None]:
    """An event body stored before ticket and badge ids were hashed, as `pseudonymise`
    stores it now, and the holder it names."""
    document = orjson.loads(body)
    take_out_personal(document)
    properties = document.get("properties")
    held = _hash_holders(properties, key, False) if isinstance(properties, dict) else None
    return orjson.dumps(document).decode("utf-8"), held


def imitates_pseudonym(user_id: str) -> bool:
    """Whether a userId from a device has the form of the agent's own marked pseudonyms, which
    only a replayed dead letter may carry: stored as given, it would escape the vault and the
    person's erasure (``forget`` hashes what it is told)."""
    return user_id.startswith(REDACTED)


def redact(raw: bytes, key: SiteKey, replaying: bool = False) -> bytes:
    """A rejected payload as a dead letter may keep it: userIds replaced by their pseudonyms
    (marked, so a replay does not hash them again) and traits dropped. ``replaying``: the
    payload is a dead letter's, whose marked ids are the agent's own; from a device, an id
    in that form is hashed like any other.

    Bytes that are not a JSON object or array of objects are returned as they are: they name
    no one the agent can find, and they expire with the dead letters' retention.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    items = document if isinstance(document, list) else [document]
    changed = False
    for item in items:
        if not isinstance(item, dict):
            continue
        user_id = item.get("userId")
        ours = replaying and isinstance(user_id, str) and _known_pseudonym(user_id)
        if user_id is not None and not ours:
            # A number or other JSON where a text id belongs still names someone.
            text = user_id if isinstance(user_id, str) else orjson.dumps(user_id).decode()
            item["userId"] = REDACTED + pseudonym(key, text)
            changed = True
        properties = item.get("properties")
        if isinstance(properties, dict):
            for name, kind in HOLDER_KEYS.items():
                given = properties.get(name)
                held = replaying and isinstance(given, str) and _known_pseudonym(given)
                if given is not None and not held:
                    text = given if isinstance(given, str) else orjson.dumps(given).decode()
                    properties[name] = REDACTED + holder(key, kind, text)
                    changed = True
        before = orjson.dumps(item)
        take_out_personal(item)
        changed = changed or orjson.dumps(item) != before
    return orjson.dumps(document) if changed else raw


_MARKED = re.compile(rb"pseudonym:([0-9a-f]{64})")
# A userId written as a JSON string in bytes that may not parse (truncated, garbled): bounded,
# so finding them costs time linear in the bytes.
_RAW_ID = re.compile(
    rb'"(userId|ticket_id|badge_id)"\s{0,8}:\s{0,8}("(?:[^"\\\x00-\x1f]|\\.){0,512}")'
)
#: At most this many people are found in one dead letter.
MAX_NAMED = 100


def named_people(raw: bytes, key: SiteKey) -> frozenset[Pseudonym]:
    """The people a dead letter's (already redacted) bytes name, found once when it is
    written so that an erasure finds its letters by pseudonym without reading any bytes: the
    pseudonyms redaction marked, and the pseudonym of every ``"userId": "<id>"`` left in bytes
    that are not JSON."""
    found = {Pseudonym(m.group(1).decode()) for m in _MARKED.finditer(raw)}
    for n, match in enumerate(_RAW_ID.finditer(raw)):
        if n >= MAX_NAMED:
            break
        try:
            text = orjson.loads(match.group(2))
        except orjson.JSONDecodeError:
            continue
        if isinstance(text, str) and not imitates_pseudonym(text):
            name = match.group(1).decode()
            kind = HOLDER_KEYS.get(name)
            found.add(pseudonym(key, text) if kind is None else holder(key, kind, text))
    return frozenset(sorted(found)[:MAX_NAMED])
