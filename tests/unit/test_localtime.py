"""The site's days and hours across daylight-saving changes and odd offsets."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from edge_agent.core.localtime import (
    HOUR_MS,
    day_bounds,
    day_hours,
    day_of,
    hour_label,
    hour_of_day,
    is_zone,
    zone,
)

HELSINKI = zone("Europe/Helsinki")


def _ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        pytest.param(date(2026, 3, 29), 23, id="clocks-forward"),
        pytest.param(date(2026, 6, 1), 24, id="summer"),
        pytest.param(date(2026, 10, 25), 25, id="clocks-back"),
    ],
)
def test_a_day_is_local_midnight_to_midnight(day: date, hours: int) -> None:
    start, end = day_bounds(day, HELSINKI)
    assert (end - start) // HOUR_MS == hours
    assert len(day_hours(day, HELSINKI)) == hours
    assert day_of(start, HELSINKI) == day
    assert day_of(end - 1, HELSINKI) == day
    assert day_of(end, HELSINKI) != day


def test_hours_on_the_days_the_clocks_change() -> None:
    forward = [hour_label(h, HELSINKI) for h in day_hours(date(2026, 3, 29), HELSINKI)]
    assert forward[:5] == ["00:00", "01:00", "02:00", "04:00", "05:00"]  # 03:00 never happens
    back = day_hours(date(2026, 10, 25), HELSINKI)
    labels = [hour_label(h, HELSINKI, zoned=True) for h in back]
    assert labels[2:6] == ["02:00 EEST", "03:00 EEST", "03:00 EET", "04:00 EET"]
    assert [hour_of_day(h, HELSINKI) for h in back].count(3) == 2


def test_the_site_today_starts_at_its_own_midnight() -> None:
    # 23:30 UTC on 1 June is already 2 June in Helsinki, still 1 June in New York.
    late = _ms(2026, 6, 1, 23, 30)
    assert day_of(late, HELSINKI) == date(2026, 6, 2)
    assert day_of(late, zone("America/New_York")) == date(2026, 6, 1)
    assert day_bounds(date(2026, 6, 2), HELSINKI)[0] == _ms(2026, 6, 1, 21)
    assert day_bounds(date(2026, 6, 2), zone("Asia/Taipei"))[0] == _ms(2026, 6, 1, 16)


def test_a_half_hour_zone_takes_the_hours_that_start_in_its_day() -> None:
    kolkata = zone("Asia/Kolkata")
    hours = day_hours(date(2026, 6, 2), kolkata)
    assert len(hours) == 24
    assert hour_label(hours[0], kolkata) == "00:30"
    assert all(h % HOUR_MS == 0 for h in hours)


def test_zone_names_are_checked() -> None:
    assert is_zone("UTC")
    assert is_zone("Europe/Helsinki")
    assert not is_zone("Mars/Olympus")
    assert not is_zone("../etc/passwd")
    with pytest.raises(ValueError, match="is not a time zone"):
        zone("Helsinki")


@pytest.mark.parametrize("name", ["Europe", "Mars/Olympus", "", "../etc/passwd"])
def test_what_is_not_a_zone_is_said_so(name: str) -> None:
    assert not is_zone(name)
    with pytest.raises(ValueError, match="is not a time zone"):
        zone(name)
