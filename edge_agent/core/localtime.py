"""The site's own days and hours, from its time zone (IANA), safe across daylight saving.

Insight cells stay whole UTC hours (an instant every site and central agree on); a site's
day is the cells that start between its local midnight and the next, so it holds 23, 24 or
25 of them on the days the clocks change. In a zone whose offset is not whole hours (India,
+05:30) the day's cells start at 00:30 local time.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

HOUR_MS = 3_600_000


@lru_cache(maxsize=32)
def zone(name: str) -> ZoneInfo:
    """The time zone named ``name`` (``Europe/Helsinki``, ``UTC``).

    Raises:
        ValueError: no such zone is known.
    """
    try:
        return ZoneInfo(name)
    # A folder of the zone database ("Europe") is an OSError, not "not found".
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"{name!r} is not a time zone (e.g. Europe/Helsinki, UTC)") from exc


def is_zone(name: str) -> bool:
    """Whether ``name`` names a time zone."""
    try:
        zone(name)
    except ValueError:
        return False
    return True


def day_of(at_ms: int, tz: ZoneInfo) -> date:
    """The site's calendar day holding the instant ``at_ms``."""
    return datetime.fromtimestamp(at_ms / 1000, tz).date()


def day_bounds(day: date, tz: ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` of ``day`` in the site's zone, in epoch ms: local midnight to the next
    one (23 or 25 hours apart on the days the clocks change)."""
    return _midnight(day, tz), _midnight(day + timedelta(days=1), tz)


def day_hours(day: date, tz: ZoneInfo) -> list[int]:
    """The starts of the UTC-hour cells that make up the site's ``day``."""
    start, end = day_bounds(day, tz)
    first = -(-start // HOUR_MS) * HOUR_MS
    return list(range(first, end, HOUR_MS))


def hour_of_day(at_ms: int, tz: ZoneInfo) -> int:
    """The local hour (0-23) the instant ``at_ms`` falls in."""
    return datetime.fromtimestamp(at_ms / 1000, tz).hour


def hour_label(at_ms: int, tz: ZoneInfo, *, zoned: bool = False) -> str:
    """The local time an hour starts at, ``HH:MM``; ``zoned`` adds the zone's abbreviation
    (``03:00 EEST``, ``03:00 EET``), which tells apart the hour the clocks repeat."""
    local = datetime.fromtimestamp(at_ms / 1000, tz)
    return f"{local:%H:%M} {local:%Z}" if zoned else f"{local:%H:%M}"


def _midnight(day: date, tz: ZoneInfo) -> int:
    # A zone may skip midnight itself (a change at 00:00): the day then starts at the first
    # instant that exists, which is what converting the wall time forward gives.
    local = datetime.combine(day, time(0), tz)
    return round(local.timestamp() * 1000)
