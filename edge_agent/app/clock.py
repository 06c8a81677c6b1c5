"""The one clock the use cases read: the core is given times, never reads them."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (events are judged against it)."""
    return int(time.time() * 1000)
