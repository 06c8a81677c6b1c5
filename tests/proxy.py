"""A TCP proxy that cuts connections at random: mid-request, or mid-response (after the
server has done the work, which is the case idempotency must survive)."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections import Counter


class FlakyProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``, cutting some connections."""

    def __init__(self, target: int, cut_share: float = 0.5, seed: int = 0) -> None:
        self.target = target
        self.cut_share = cut_share
        self.rng = random.Random(seed)
        self.cuts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop accepting and cut everything still open."""
        self._server.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                roll = self.rng.random()
                mode = (
                    "whole"
                    if roll >= self.cut_share
                    else self.rng.choice(["mid-request", "mid-response"])
                )
                self.cuts[mode] += 1
                # How many bytes pass before the cut.
                budget = self.rng.randint(1, 400)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            up_budget = budget if mode == "mid-request" else None
            down_budget = budget if mode == "mid-response" else None
            threading.Thread(
                target=self._pump, args=(client, upstream, up_budget), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, down_budget), daemon=True
            ).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if budget is not None:
                    if len(data) >= budget:
                        sink.sendall(data[:budget])
                        break
                    budget -= len(data)
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
