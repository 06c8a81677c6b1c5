"""The venue link (paho-mqtt 2.x, MQTT 5): this agent's share document published retained on
its own topic, and the venue's other agents' documents handed to a callback.

It runs in the agent's process on paho's own network thread (``loop_start``), apart from the
receiver process: it is a handful of messages every few seconds, and a lost one is replaced
by the next. So: a clean session under its own client id (the agent's, plus ``-venue``, so it
never takes over the ingest session), QoS 1, paho's reconnect with the agent's backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent import logs
from edge_agent.config import MqttSettings
from edge_agent.core.broker import PACKET_ROOM
from edge_agent.errors import ConfigError
from edge_agent.mqtt.receiver import password, tls_context

logger = logging.getLogger(__name__)

#: (topic, payload, retained): retained is True for a document the broker kept and sent on
#: subscribing, False for one published while this agent was listening.
OnDocument = Callable[[str, bytes, bool], None]


class VenueLink:
    """One MQTT client that publishes a share document and takes the peers' ones."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        topic: str,
        subscription: str,
        on_document: OnDocument,
        max_payload_bytes: int,
    ) -> None:
        """Args:
        settings: the site broker's settings, as ingest uses them (TLS, password file).
        client_id: this link's own MQTT client id.
        topic: where this agent's document is published, retained.
        subscription: the filter of every agent's document of the venue.
        on_document: called on paho's thread for each document taken.
        max_payload_bytes: a larger document is dropped unread and counted in ``oversized``.

        Raises:
            ConfigError: a TLS file or the password file cannot be used.
        """
        self.settings = settings
        self.topic = topic
        self.subscription = subscription
        self.on_document = on_document
        self.max_payload_bytes = max_payload_bytes
        self.oversized = 0
        self.lock = threading.Lock()
        self.connected = False
        #: The largest packet the broker takes (its CONNACK says; None: it set no limit).
        self.broker_max: int | None = None
        #: The document being published, until the broker acknowledged it.
        self.in_flight: mqtt.MQTTMessageInfo | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._credentials()
        context = tls_context(settings)
        if context is not None:
            self.client.tls_set_context(context)
        self.client.reconnect_delay_set(
            max(1, round(settings.reconnect_min_s)), max(1, round(settings.reconnect_max_s))
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    def _credentials(self) -> None:
        if self.settings.username:
            self.client.username_pw_set(self.settings.username, password(self.settings) or None)

    def start(self) -> None:
        """Connect in the background; paho's thread reconnects by itself from then on."""
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=True,
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and end paho's thread (the retained document stays at the broker)."""
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, payload: bytes) -> bool:
        """Publish ``payload`` retained at QoS 1; False when it was not handed to paho: not
        connected, the previous document not yet acknowledged, or larger than the broker
        takes. A document not published is no loss: the next one replaces it."""
        with self.lock:
            busy = self.in_flight is not None and not self.in_flight.is_published()
            # Queued while offline, paho would hold every document since in memory.
            if not self.connected or busy:
                return False
            limit = self.broker_max
        if limit is not None and len(payload) + PACKET_ROOM > limit:
            logs.log(
                logger, logging.ERROR, "venue_share_too_large",
                f"the share document is {len(payload)} bytes and the broker takes packets "
                f"of {limit} at most: raise its max_packet_size",
                topic=self.topic,
            )  # fmt: skip
            return False
        # Not under the lock: paho's thread holds its own locks while it calls back into
        # this object, and publish() takes them too.
        info = self.client.publish(self.topic, payload, qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        with self.lock:
            self.in_flight = info
        return True

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: mqtt.ConnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            logs.log(logger, logging.WARNING, "venue_refused", f"broker refused: {rc}")
            return
        with self.lock:
            self.connected = True
            self.in_flight = None
            self.broker_max = getattr(props, "MaximumPacketSize", None)
        # A clean session forgets its subscription: made again on every connection, which
        # also brings every agent's retained document again. No Local: not our own.
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1, noLocal=True))
        logs.log(logger, logging.INFO, "venue_connected", "venue link connected",
                 subscription=self.subscription)  # fmt: skip

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Any
    ) -> None:
        with self.lock:
            self.connected = False
            self.in_flight = None
        # Read the password file again before paho reconnects: as ingest's receiver does, so
        # a rotated password reaches this session too.
        try:
            self._credentials()
        except ConfigError as exc:
            logs.log(logger, logging.ERROR, "mqtt_password_unreadable", str(exc))
        logs.log(logger, logging.WARNING, "venue_disconnected", f"venue link: {rc}")

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            logs.log(logger, logging.WARNING, "venue_share_refused", f"broker refused: {rc}")

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        size = len(message.payload)
        if size > self.max_payload_bytes:
            self.oversized += 1
            logs.log(
                logger, logging.WARNING, "venue_document_refused",
                f"{size} bytes; a share document may have {self.max_payload_bytes}",
                topic=message.topic[:200], oversized=self.oversized,
            )  # fmt: skip
            return
        # paho lets an exception out of a callback end its network thread, and with it the
        # link: whatever a document does to the handler, the next one is still taken.
        try:
            self.on_document(message.topic, bytes(message.payload), bool(message.retain))
        except Exception as exc:
            logs.log(logger, logging.ERROR, "venue_document_failed", repr(exc)[:300],
                     topic=message.topic[:200])  # fmt: skip
