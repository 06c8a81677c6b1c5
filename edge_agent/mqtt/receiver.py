"""The MQTT side of ingest (paho-mqtt 2.x, MQTT 5), run in a process of its own.

paho's network loop is pure Python and needs a whole interpreter to keep up with the broker,
so this process only receives, groups messages into batches and sends PUBACKs; the parent
process validates and commits. A message is acknowledged only after the parent reports that
its batch is committed ("ack after commit"), which is what makes an acknowledged event durable.

It runs as ``python -m edge_agent.mqtt.receiver FD``; FD is its end of a socket pair.
Wire protocol over it (pickled): first the parent sends the `ReceiverOptions`, then tuples:
  child -> parent  ("batch", seq, [(topic, payload, received_ms), ...], unacked)
                   unacked: messages received and not yet acknowledged, this batch's included
                   ("broker", "connected" | "disconnected", detail)
                   ("alive",)           every second: the parent tells a stopped receiver
  parent -> child  ("ack", seq)        the batch is committed: PUBACK its messages
                   ("stop",)           disconnect and exit
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent import logs
from edge_agent.config import MqttSettings
from edge_agent.errors import ConfigError

logger = logging.getLogger(__name__)

#: (topic, payload, received_ms), or for a payload over the agent's limit (topic, its first
#: bytes, received_ms, its size, its SHA-256): `edge_agent.core.events.Inbound`'s fields.
Item = tuple[str, bytes, int] | tuple[str, bytes, int, int, str]

#: How often the receiver says it is alive, whatever the traffic.
ALIVE_EVERY_S = 1.0


def _given(path: Path) -> bool:
    return str(path) not in ("", ".")


def _load(key: str, path: Path, load: Callable[[], None]) -> None:
    # ssl's errors do not name the file (FileNotFoundError.filename is None): say it here.
    try:
        load()
    except FileNotFoundError as exc:
        raise ConfigError(f"[mqtt] {key}: {path} does not exist") from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[mqtt] {key}: {path} cannot be used: {exc}") from exc


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context for the broker (None for plaintext), with every file loaded now.

    Raises:
        ConfigError: a TLS file is set while ``tls`` is off, only one of ``cert_file`` and
            ``key_file`` is set, or a file is missing or not a valid PEM file.
    """
    files = {
        "ca_file": settings.ca_file,
        "cert_file": settings.cert_file,
        "key_file": settings.key_file,
    }
    if not settings.tls:
        named = [key for key, path in files.items() if _given(path)]
        if named:
            # A CA set with TLS off would connect in plaintext while looking protected.
            raise ConfigError(f"[mqtt] {', '.join(named)} is set but tls is false: set tls = true")
        return None
    if _given(settings.cert_file) != _given(settings.key_file):
        raise ConfigError("[mqtt] cert_file and key_file go together: set both or neither")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if _given(settings.ca_file):
        _load("ca_file", settings.ca_file, lambda: context.load_verify_locations(settings.ca_file))
    if _given(settings.cert_file):
        _load(
            "cert_file and key_file",
            settings.cert_file,
            lambda: context.load_cert_chain(settings.cert_file, settings.key_file),
        )
    return context


def password(settings: MqttSettings) -> str:
    """The agent's MQTT password: ``password_file``'s first line when set, else ``password``.

    Raises:
        ConfigError: both are set, or the file cannot be read.
    """
    if not _given(settings.password_file):
        return str(settings.password)
    if settings.password:
        raise ConfigError("[mqtt] password and password_file are both set: keep one")
    try:
        text = settings.password_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"[mqtt] password_file {settings.password_file} cannot be read: {exc}"
        ) from exc
    return text.splitlines()[0] if text else ""


def check(settings: MqttSettings) -> None:
    """Load the broker's TLS files and password once, so a bad one stops the agent at start.

    Raises:
        ConfigError: as `tls_context` and `password`.
    """
    tls_context(settings)
    password(settings)


@dataclass(frozen=True)
class ReceiverOptions:
    """What the receiver process needs: broker settings and batching bounds."""

    mqtt: MqttSettings
    client_id: str
    topic: str
    #: Payloads over this are carried to the parent as their first ``keep_bytes`` only.
    max_payload_bytes: int
    keep_bytes: int
    batch_max_events: int
    batch_max_ms: int
    queue_max_events: int
    queue_max_bytes: int
    log_level: str
    journald: bool


class _Receiver:
    """Receives on paho's thread, batches, and acks what the parent committed."""

    def __init__(self, options: ReceiverOptions, pipe: Connection) -> None:
        self.options = options
        self.pipe = pipe
        self.lock = threading.Condition()
        self.pending: list[Item] = []
        self.pending_mids: list[int] = []
        self.first_pending_at = 0.0
        self.unacked = 0  # messages received and not yet acknowledged or dropped as stale
        self.unacked_bytes = 0  # their payloads' bytes, as carried
        self.pending_bytes = 0
        self.seq = 0
        # seq -> (connection generation, mids). A PUBACK is only valid on the connection that
        # received the message: after a reconnect the broker redelivers what was not acked,
        # and the store's messageId de-duplication absorbs the second copy.
        self.in_flight: dict[int, tuple[int, list[int], int]] = {}
        self.generation = 0
        self.session_present = False
        self.client = self._client()

    def _client(self) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self._credentials(client)
        context = tls_context(o.mqtt)
        if context is not None:
            client.tls_set_context(context)
        client.reconnect_delay_set(
            max(1, round(o.mqtt.reconnect_min_s)), max(1, round(o.mqtt.reconnect_max_s))
        )
        # paho keeps QoS>0 messages it has not yet handed over in its own queue; the agent
        # bounds its memory itself (queue_max_events) because the broker's window is not enough.
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        return client

    def _credentials(self, client: mqtt.Client) -> None:
        o = self.options.mqtt
        if o.username:
            client.username_pw_set(o.username, password(o) or None)

    def connect_properties(self) -> Properties:
        """CONNECT properties: a persistent session and a receive window for group commit."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.options.mqtt.session_expiry_s
        props.ReceiveMaximum = self.options.mqtt.receive_maximum
        return props

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Any
    ) -> None:
        if rc.is_failure:
            self._tell(("broker", "disconnected", f"broker refused the connection: {rc}"))
            return
        with self.lock:
            self.generation += 1
        self.session_present = flags.session_present
        # Retained messages come once, when the subscription is new (a fresh session): sent
        # again on every resubscribe, each would count as a new duplicate or rejection.
        retained = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        client.subscribe(
            self.options.topic, options=SubscribeOptions(qos=1, retainHandling=retained)
        )

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        # "connected" is reported once the broker confirmed the subscription: from then on
        # nothing published to the site is missed, even on a brand-new session.
        failed = [str(code) for code in codes if code.is_failure]
        if failed:
            self._tell(("broker", "disconnected", f"broker refused the subscription: {failed}"))
        else:
            self._tell(("broker", "connected", f"session_present={self.session_present}"))

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        o = self.options.mqtt
        self._tell(
            ("broker", "disconnected", f"cannot reach {o.host}:{o.port}; retrying with backoff")
        )

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Any
    ) -> None:
        # paho reconnects with the credentials set on the client: read the password file
        # again, so that after a rotation (the broker drops the old password's connection on
        # reload) the next attempt uses the new one.
        try:
            self._credentials(self.client)
        except ConfigError as exc:
            logs.log(
                logger, logging.ERROR, "mqtt_password_unreadable",
                "password file unreadable; keeping the previous password", detail=str(exc),
            )  # fmt: skip
        with self.lock:
            # What was received on this connection goes to the store now, but its acks are
            # owed to a connection that is gone: the broker will redeliver those messages.
            if self.pending:
                self._flush_locked()
            self.generation += 1
        self._tell(("broker", "disconnected", str(rc)))

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        with self.lock:
            # Blocking paho's thread stops it reading the socket: TCP then holds the broker
            # back. Needed because Mosquitto 2.0.11 stops enforcing Receive Maximum once acks
            # flow, and an unbounded queue would grow until the box runs out of memory.
            while self.unacked and (
                self.unacked >= self.options.queue_max_events
                or self.unacked_bytes >= self.options.queue_max_bytes
            ):
                self.lock.wait(1.0)
            if not self.pending:
                self.first_pending_at = now
            item = self._item(message, int(now * 1000))
            self.pending.append(item)
            self.pending_mids.append(message.mid if message.qos > 0 else 0)
            self.unacked += 1
            self.unacked_bytes += len(item[1])
            self.pending_bytes += len(item[1])
            if len(self.pending) >= self.options.batch_max_events:
                self._flush_locked()

    def _item(self, message: mqtt.MQTTMessage, received_ms: int) -> Item:
        payload = message.payload
        if len(payload) <= self.options.max_payload_bytes:
            return (message.topic, bytes(payload), received_ms)
        # Held whole, a flood of payloads just under the broker's limit would queue megabytes
        # each here, in the pipe and in the commit: their head and size make the dead letter.
        head = bytes(payload[: self.options.keep_bytes])
        return (message.topic, head, received_ms, len(payload), hashlib.sha256(payload).hexdigest())

    def _flush_locked(self) -> None:
        self.seq += 1
        self.in_flight[self.seq] = (self.generation, self.pending_mids, self.pending_bytes)
        batch, self.pending, self.pending_mids = self.pending, [], []
        self.pending_bytes = 0
        self.pipe.send(("batch", self.seq, batch, self.unacked))

    def _tell(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.pipe.send(message)

    def serve(self) -> None:
        """Run until the parent says stop or goes away."""
        o = self.options
        self.client.connect_async(
            o.mqtt.host,
            o.mqtt.port,
            keepalive=o.mqtt.keepalive_s,
            clean_start=False,
            properties=self.connect_properties(),
        )
        self.client.loop_start()
        tick = o.batch_max_ms / 2000
        said_alive = 0.0
        try:
            while True:
                if time.monotonic() - said_alive >= ALIVE_EVERY_S:
                    said_alive = time.monotonic()
                    self._tell(("alive",))
                if self.pipe.poll(tick):
                    message = self.pipe.recv()
                    if message[0] == "stop":
                        break
                    self._acknowledge(message[1])
                with self.lock:
                    if (
                        self.pending
                        and time.time() - self.first_pending_at >= o.batch_max_ms / 1000
                    ):
                        self._flush_locked()
        except (EOFError, OSError):
            # The parent died (e.g. kill -9). Leave at once without acking anything more: the
            # broker keeps the session and the restarted agent takes it over.
            os._exit(0)
        self.client.disconnect()
        self.client.loop_stop()

    def _acknowledge(self, seq: int) -> None:
        with self.lock:
            generation, mids, size = self.in_flight.pop(seq)
            current = generation == self.generation
            self.unacked -= len(mids)
            self.unacked_bytes -= size
            self.lock.notify_all()
        if current:
            for mid in mids:
                if mid:
                    self.client.ack(mid, 1)


def receiver_main(fd: int) -> None:
    """Entry point of the receiver process: its pipe's file descriptor, then its options."""
    # Ctrl-C reaches the whole process group; the parent decides when this process stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pipe = Connection(fd)
    try:
        options: ReceiverOptions = pipe.recv()
    except EOFError:
        return
    logs.setup(options.log_level, options.journald)
    _Receiver(options, pipe).serve()


if __name__ == "__main__":
    # Run the module under its own name, not this __main__ copy, so the options the parent
    # pickled are instances of the same classes this code uses.
    from edge_agent.mqtt import receiver

    receiver.receiver_main(int(sys.argv[1]))
