"""Consent: the current purposes of a person from their ledger, and what each purpose allows.

The purposes and what each allows (DESIGN.md) are written in `ALLOWS`, and only there: the
store's queries and consent rules ask for a use (`purpose_for`, `allows`), never spell a
purpose themselves. No consent recorded means anonymous.
Changes are ordered by the event's timestamp, ties by the order the agent received them, so a
late-arriving old change never overrides a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

Purpose = Literal["analytics", "personalization", "crm_sync"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)

#: What consent can allow: ``link_visits`` (a visit counts as its person's in aggregates),
#: ``personalise`` (a profile, a greeting by name, recommendations from their history),
#: ``send_identified`` (the raw id, traits and identified events may leave the site).
Use = Literal["link_visits", "personalise", "send_identified"]

#: Purpose -> the uses it allows.
ALLOWS: Mapping[Purpose, frozenset[Use]] = {
    "analytics": frozenset({"link_visits"}),
    "personalization": frozenset({"personalise"}),
    "crm_sync": frozenset({"send_identified"}),
}


def purpose_for(use: Use) -> Purpose:
    """The one purpose that allows ``use`` (what the store's queries filter on)."""
    (purpose,) = (p for p in PURPOSES if use in ALLOWS[p])
    return purpose


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


def allows(consent: Consent, use: Use) -> bool:
    """Whether the person's current consent allows ``use``."""
    return granted(consent, purpose_for(use))


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
