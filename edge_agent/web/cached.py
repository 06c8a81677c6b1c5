"""A value worked out at most so often, however many requests ask for it; or worked out again
as soon as what it is worked out from has changed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Cached:
    """A value computed at most every ``every_s`` by whichever thread asks first."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.lock = threading.Lock()
        self.value: Any = None
        self.at = float("-inf")

    def get(self, compute: Callable[[], T]) -> T:
        """The value, from ``compute`` if the last one is older than ``every_s``."""
        with self.lock:
            if time.monotonic() - self.at >= self.every_s:
                self.value = compute()
                self.at = time.monotonic()
            value: T = self.value
            return value


class Versioned:
    """A value computed again when asked for with a newer version of what it comes from (a
    `Changes` version), or when older than ``every_s``; screens asking for the same version
    share one computation."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.lock = threading.Lock()
        self.value: Any = None
        self.version: tuple[int, int] | None = None
        self.at = float("-inf")

    def get(self, version: tuple[int, int], compute: Callable[[], T]) -> T:
        """The value, from ``compute`` unless the last one was computed at ``version`` or a
        later one (versions only grow) within ``every_s``."""
        with self.lock:
            known = self.version
            current = known is not None and all(a >= b for a, b in zip(known, version, strict=True))
            if not current or time.monotonic() - self.at >= self.every_s:
                # The version is taken before computing: news landing meanwhile is newer.
                self.value = compute()
                self.version = version
                self.at = time.monotonic()
            value: T = self.value
            return value
