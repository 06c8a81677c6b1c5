"""A value worked out at most so often, however many requests ask for it."""

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
