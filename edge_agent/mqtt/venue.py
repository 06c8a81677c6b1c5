"""The venue link (paho-mqtt 2.x, MQTT 5): this agent's share (its index and hour
documents) published retained on its own topics, and the venue's other agents' documents
handed to a callback.

It runs in the agent's process on paho's own network thread (``loop_start``), apart from the
receiver process: it is a handful of messages every few seconds, and a lost one is replaced
by the next round. So: a clean session under its own client id (the agent's, plus
``-venue``) and, with ``[mqtt] username``, its own user (the agent's plus ``.venue``,
`VENUE_USER_SUFFIX`, with the agent's password), so it never takes over the ingest session;
QoS 1, paho's reconnect with the agent's backoff.
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
from edge_agent.core.provisioning import VENUE_USER_SUFFIX
from edge_agent.errors import ConfigError
from edge_agent.mqtt.receiver import password, tls_context

logger = logging.getLogger(__name__)

#: (topic, payload, retained): retained is True for a document the broker kept and sent on
#: subscribing, False for one published while this agent was listening.
OnDocument = Callable[[str, bytes, bool], None]


class VenueLink:
    """One MQTT client that publishes this agent's share and takes the peers' ones."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        subscriptions: tuple[str, ...],
        on_document: OnDocument,
        max_payload_bytes: int,
    ) -> None:
        """Args:
        settings: the site broker's settings, as ingest uses them (TLS, password file).
        client_id: this link's own MQTT client id.
        subscriptions: the filters of every agent's documents of the venue.
        on_document: called on paho's thread for each document taken.
        max_payload_bytes: a larger document is dropped unread and counted in ``oversized``.

        Raises:
            ConfigError: a TLS file or the password file cannot be used.
        """
        self.settings = settings
        self.subscriptions = subscriptions
        self.on_document = on_document
        self.max_payload_bytes = max_payload_bytes
        self.oversized = 0
        self.lock = threading.Lock()
        self.connected = False
        #: The largest packet the broker takes (its CONNACK says; None: it set no limit).
        self.broker_max: int | None = None
        #: The messages of the last round, until the broker acknowledged them.
        self.in_flight: list[mqtt.MQTTMessageInfo] = []
        #: The topics already logged as too large for the broker (each is logged once).
        self.too_large: set[str] = set()
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
            self.client.username_pw_set(
                self.settings.username + VENUE_USER_SUFFIX, password(self.settings) or None
            )

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

    def ready(self) -> bool:
        """Whether a round may publish now: connected, and the last round's messages all
        acknowledged (queued while offline or behind, paho would hold every round since in
        memory; a round not published is no loss, the next one says as much)."""
        with self.lock:
            if not self.connected or not all(i.is_published() for i in self.in_flight):
                return False
            self.in_flight = []
            return True

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish ``payload`` retained at QoS 1 (an empty one clears ``topic``'s retained
        message); False when it was not handed to paho: not connected, or larger than the
        broker takes, which is logged once per topic with what to raise."""
        with self.lock:
            if not self.connected:
                return False
            limit = self.broker_max
        if limit is not None and len(payload) + PACKET_ROOM > limit:
            if topic not in self.too_large:
                self.too_large.add(topic)
                logs.log(
                    logger, logging.ERROR, "venue_share_too_large",
                    f"{topic} is {len(payload)} bytes and the broker takes packets of {limit} "
                    f"at most: raise max_packet_size in the venue broker's mosquitto.conf to "
                    f"at least {len(payload) + PACKET_ROOM} (the venue's screens miss this "
                    "hour of this agent until then)",
                    topic=topic, size=len(payload), limit=limit,
                )  # fmt: skip
            return False
        # Not under the lock: paho's thread holds its own locks while it calls back into
        # this object, and publish() takes them too.
        info = self.client.publish(topic, payload, qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        with self.lock:
            self.in_flight.append(info)
        return True

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: mqtt.ConnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            logs.log(logger, logging.WARNING, "venue_refused", f"broker refused: {rc}")
            return
        with self.lock:
            self.connected = True
            self.in_flight = []
            self.broker_max = getattr(props, "MaximumPacketSize", None)
        # A clean session forgets its subscriptions: made again on every connection, which
        # also brings every agent's retained documents again (this agent's own too: No
        # Local keeps back only what this session publishes from now).
        options = SubscribeOptions(qos=1, noLocal=True)
        client.subscribe([(f, options) for f in self.subscriptions])
        logs.log(logger, logging.INFO, "venue_connected", "venue link connected",
                 subscriptions=list(self.subscriptions))  # fmt: skip

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Any
    ) -> None:
        with self.lock:
            self.connected = False
            self.in_flight = []
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
