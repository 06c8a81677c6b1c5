"""Current consent from updates, in and out of order."""

from __future__ import annotations

from typing import get_args

from edge_agent.core.consent import (
    ALLOWS,
    PURPOSES,
    Consent,
    Decision,
    Stamp,
    Use,
    allows,
    any_granted,
    apply_update,
    granted,
    purpose_for,
)


def test_grant_then_withdraw() -> None:
    first = apply_update({}, {"crm_sync": True, "analytics": False}, Stamp(10, 1))
    assert first.granted_now == {"crm_sync"}
    assert first.withdrawn_now == frozenset()
    assert granted(first.after, "crm_sync")
    assert not granted(first.after, "analytics")
    second = apply_update(first.after, {"crm_sync": False}, Stamp(20, 2))
    assert second.withdrawn_now == {"crm_sync"}
    assert not any_granted(second.after)


def test_an_older_update_arriving_late_changes_nothing() -> None:
    now: Consent = {"crm_sync": Decision(False, Stamp(20, 5))}
    late = apply_update(now, {"crm_sync": True}, Stamp(10, 9))
    assert late.after == now
    assert late.granted_now == frozenset()


def test_ties_on_time_go_to_the_one_received_later() -> None:
    now: Consent = {"personalization": Decision(True, Stamp(20, 5))}
    assert not granted(
        apply_update(now, {"personalization": False}, Stamp(20, 6)).after, "personalization"
    )
    assert granted(
        apply_update(now, {"personalization": False}, Stamp(20, 4)).after, "personalization"
    )


def test_purposes_not_mentioned_are_kept() -> None:
    now: Consent = {"analytics": Decision(True, Stamp(1, 1))}
    after = apply_update(now, {"crm_sync": True}, Stamp(2, 2)).after
    assert granted(after, "analytics")
    assert granted(after, "crm_sync")


def test_no_consent_is_anonymous() -> None:
    assert not any_granted({})
    assert not granted({}, "analytics")


def test_each_use_is_allowed_by_exactly_one_purpose() -> None:
    assert set(ALLOWS) == set(PURPOSES)
    for use in get_args(Use):
        assert [p for p in PURPOSES if use in ALLOWS[p]] == [purpose_for(use)]


def test_what_each_purpose_allows() -> None:
    assert purpose_for("link_visits") == "analytics"
    assert purpose_for("personalise") == "personalization"
    assert purpose_for("send_identified") == "crm_sync"
    consent: Consent = {"personalization": Decision(True, Stamp(1, 1))}
    assert allows(consent, "personalise")
    assert not allows(consent, "send_identified")
    assert not allows({}, "link_visits")
