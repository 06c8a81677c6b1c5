"""The in-flight window of a QoS-1 publisher, for whatever publishes to the site's broker on
this side (the simulator, the benchmarks, the tests): publishes are bounded, and every one is
counted until the broker acknowledged or refused it.

paho loses messages without any error past 65,535 unacknowledged publishes (message ids run
out), so a publisher that does not bound what it has in flight loses events silently. The
window also tells a broker that stopped acknowledging from one that is merely busy.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import BrokerError

#: How often a publisher waiting for room looks at its stop flag and the stall clock.
_TICK_S = 0.05


class Window:
    """Slots for publishes in flight, and the PUBACK counters, shared with paho's network
    thread: ``reserve`` a slot, ``publish``, tell ``handed`` what paho answered; paho's
    ``on_publish`` (set it as the client's callback) frees the slot."""

    def __init__(self, size: int, stall_s: float = 30.0) -> None:
        """Args:
        size: publishes in flight at most.
        stall_s: how long a full window may go without any PUBACK before `reserve` fails.
        """
        self.size = size
        self.stall_s = stall_s
        self._slots = threading.BoundedSemaphore(size)
        self._changed = threading.Condition()
        self.published = self.acknowledged = self.refused = self.rejected = 0
        self.last_ack = time.monotonic()

    @property
    def outstanding(self) -> int:
        """Publishes handed to paho and not yet answered by the broker."""
        with self._changed:
            return self.published - self.acknowledged - self.rejected

    def reserve(self, stop: threading.Event | None = None, where: str = "") -> bool:
        """Wait for a free slot; False when ``stop`` is set first.

        Raises:
            BrokerError: the window stayed full with no PUBACK for ``stall_s`` seconds.
        """
        while not self._slots.acquire(timeout=_TICK_S):
            if stop is not None and stop.is_set():
                return False
            with self._changed:
                silent = time.monotonic() - self.last_ack
            if silent > self.stall_s:
                raise BrokerError(
                    f"MQTT broker {where} acknowledged nothing for {silent:.0f} s with "
                    f"{self.size} messages in flight: check that the broker is up and not "
                    "overloaded"
                )
        return True

    def handed(self, rc: MQTTErrorCode) -> bool:
        """Count what ``client.publish`` answered; False (and the slot freed) when paho
        refused the message outright."""
        with self._changed:
            # NO_CONN: paho kept the message and sends it once it has reconnected.
            if rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self.published += 1
                return True
            self.refused += 1
        self._slots.release()
        return False

    def on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        """paho's callback for a PUBACK (CallbackAPIVersion 2)."""
        # Runs on paho's network thread, and may run before publish() has returned there.
        with self._changed:
            if reason_code.is_failure:
                self.rejected += 1
            else:
                self.acknowledged += 1
            self.last_ack = time.monotonic()
            self._changed.notify_all()
        self._slots.release()

    def drain(self, timeout_s: float) -> bool:
        """Wait until the broker answered every publish handed to paho; whether it did."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.published - self.acknowledged - self.rejected <= 0, timeout_s
            )
