"""How often one client may fail at something before it has to wait: pairing codes guessed.

Pure: the caller says who failed and when. Failures are counted per client address, never
per code or per screen, so a client guessing codes slows only itself: a screen pairing from
another address is never held back, and no number of failures locks a code.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class Throttle:
    """Failures per client: past ``per_minute`` in a minute the client waits out the
    minute; past ``lock_after`` in ``lock_s`` it is locked out for ``lock_s``."""

    per_minute: int = 5
    lock_after: int = 20
    lock_s: float = 900.0
    #: Clients remembered at most (the least recent forgotten first): bounded memory
    #: whatever number of addresses a flood comes from.
    max_clients: int = 4096
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def wait_s(self, client: str, now_s: float) -> float | None:
        """Seconds ``client`` must wait before it may try again, or None if it may now."""
        failures = self._failures.get(client)
        if not failures:
            return None
        recent = [t for t in failures if t > now_s - self.lock_s]
        if len(recent) >= self.lock_after:
            return recent[-1] + self.lock_s - now_s
        in_minute = [t for t in recent if t > now_s - 60]
        if len(in_minute) >= self.per_minute:
            return in_minute[0] + 60 - now_s
        return None

    def failed(self, client: str, now_s: float) -> None:
        """Count a failure of ``client``."""
        failures = self._failures.pop(client, None) or deque(maxlen=self.lock_after)
        failures.append(now_s)
        self._failures[client] = failures
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
