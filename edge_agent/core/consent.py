"""Consent: the current purposes of a person from their ledger, and what each purpose allows.

Purposes (DESIGN.md): ``analytics`` (identified events may link visits in aggregates),
``personalization`` (a profile and recommendations from their history), ``crm_sync``
(identified data and the raw id may leave the site). No consent recorded means anonymous.
Changes are ordered by the event's timestamp, ties by the order the agent received them, so a
late-arriving old change never overrides a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

Purpose = Literal["analytics", "personalization", "crm_sync"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    """When a consent change happened: event time, then receive order for ties."""

    ts_ms: int
    seq: int


@dataclass(frozen=True, slots=True)
class Decision:
    """One purpose's current answer and when it was given."""

    granted: bool
    stamp: Stamp


#: A person's current consent, per purpose they ever answered.
Consent = Mapping[Purpose, Decision]


def granted(consent: Consent, purpose: Purpose) -> bool:
    """Whether ``purpose`` is currently granted (never answered means no)."""
    decision = consent.get(purpose)
    return decision is not None and decision.granted


def any_granted(consent: Consent) -> bool:
    """Whether the person is anything but anonymous."""
    return any(granted(consent, p) for p in PURPOSES)


@dataclass(frozen=True, slots=True)
class Change:
    """What applying one ``Consent Updated`` did to the current consent."""

    after: dict[Purpose, Decision]
    granted_now: frozenset[Purpose]
    withdrawn_now: frozenset[Purpose]


def apply_update(current: Consent, answers: Mapping[str, bool], stamp: Stamp) -> Change:
    """Apply one update's answers; an answer older than the current one for its purpose is
    recorded in the ledger by the caller but changes nothing here."""
    after = dict(current)
    granted_now: set[Purpose] = set()
    withdrawn_now: set[Purpose] = set()
    for purpose in PURPOSES:
        if purpose not in answers:
            continue
        previous = current.get(purpose)
        if previous is not None and previous.stamp >= stamp:
            continue
        was = previous is not None and previous.granted
        now = bool(answers[purpose])
        after[purpose] = Decision(now, stamp)
        if now and not was:
            granted_now.add(purpose)
        elif was and not now:
            withdrawn_now.add(purpose)
    return Change(after, frozenset(granted_now), frozenset(withdrawn_now))
