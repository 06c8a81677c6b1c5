"""Simulated devices of a demo site: a realistic stream of shop visits, and its publisher.

Two layers. `site_stream` is pure: from a random generator, a start time and the catalogue
it yields, in time order, what a shop's devices publish while many visits overlap (door
counter, zone sensors, kiosk, tills selling the export's real receipts in the order they were
rung up, its known customers checking in with the loyalty app with a mix of consents). It can
first replay the export's earlier days as the days before the start, so a site has a history
from its first minute. `run_simulator` publishes that stream to an MQTT broker: the replayed
days as fast as the broker takes them with their own times, then at a fixed rate, stamping
each event with the real time it is sent.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.core.topics import DeviceId, DeviceTopic, SiteId
from edge_agent.demo.catalogue import Basket, Catalogue, Product, load_sales
from edge_agent.errors import BrokerError, ConfigError, TopicError
from edge_agent.mqtt.publisher import Window

logger = logging.getLogger(__name__)

#: About how many events one visit yields on average (measured on the stream, kept honest
#: by a unit test); the publisher uses it so simulated time passes at about real speed.
EVENTS_PER_VISIT = 23.7

CURRENCY = "GBP"
DOOR = "door-1"
KIOSK = "kiosk-1"
LOYALTY = "loyalty-1"
TILLS = ("till-1", "till-2")
AISLES = ("homeware", "lighting", "kitchen", "gifts")
ZONES = ("entrance", *AISLES, "checkout")

_Purposes = Mapping[Literal["analytics", "personalization", "crm_sync"], bool]

# Median dwell per zone in seconds; dwell is log-normal around it, as measured dwell is.
_DWELL_MEDIAN_S = {
    "entrance": 8.0,
    "homeware": 95.0,
    "lighting": 50.0,
    "kitchen": 65.0,
    "gifts": 120.0,
}
_DWELL_SIGMA = 0.55
_QUEUE_MEDIAN_S = 45.0

_P_CHECKOUT = 0.65
_P_KIOSK_VIEWS = 0.25
_P_FEEDBACK = 0.15
_P_MISSCAN = 0.08
_P_CONSENT_CHANGE = 0.05
_P_ERASURE = 0.01
_GROUP_SIZES = ((1, 2, 3), (80, 15, 5))
_AISLE_COUNTS = ((1, 2, 3, 4), (25, 35, 25, 15))

# Promoters dominate with a tail of detractors; most answers say checking out was easy.
_NPS_WEIGHTS = (3, 1, 1, 2, 2, 6, 5, 10, 20, 22, 28)
_CES_WEIGHTS = (32, 36, 18, 9, 5)

# Loyalty members are the export's known customers. It holds no names, so the app's
# first-name trait comes from this list (by customer number, the same on every visit).
_FIRST_NAMES = (
    "Olivia", "Jack", "Amelia", "Harry", "Isla", "Oliver", "Ava", "Charlie", "Emily",
    "George", "Sophie", "Thomas", "Grace", "James", "Lily", "William",
)  # fmt: skip

_ALL: _Purposes = {"analytics": True, "personalization": True, "crm_sync": True}
_ANALYTICS_ONLY: _Purposes = {"analytics": True, "personalization": False, "crm_sync": False}
_NO_CRM: _Purposes = {"analytics": True, "personalization": True, "crm_sync": False}
_NONE: _Purposes = {"analytics": False, "personalization": False, "crm_sync": False}
# None: the member never answered, so no consent is recorded and they count as anonymous.
_CONSENTS: tuple[_Purposes | None, ...] = (_ALL, _ANALYTICS_ONLY, _NO_CRM, _NONE, None)
_CONSENT_WEIGHTS = (40, 20, 15, 10, 15)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The publisher's bounds. paho numbers QoS 1 publishes with a 16-bit message id: past
# 65,535 unacknowledged ones a new publish collides with a waiting one and is refused
# (rc MQTT_ERR_QUEUE_SIZE), so the in-flight window stays far below that.
_WINDOW = 1000
_TICK_S = 0.05
_CONNECT_TIMEOUT_S = 10.0
_STALL_S = 30.0
_DRAIN_S = 10.0
# A very busy hypermarket. Past it the stream's time runs faster than real time instead:
# every visit's events wait in memory until due, so more visits at once would cost memory
# in proportion to the rate (a million events pending at 20,000 events/s).
_MAX_VISITS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Publication:
    """One MQTT message a device publishes: its topic, the event, and when (epoch ms)."""

    topic: str
    payload: dict[str, object]
    at_ms: int
    #: Part of the replayed history: published with its own timestamp, not the time sent.
    replayed: bool = False


def iso_timestamp(epoch_ms: int) -> str:
    """An ISO 8601 UTC timestamp with milliseconds, e.g. ``2026-11-26T10:00:00.123Z``."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def site_stream(
    rng: random.Random,
    start_ms: int,
    site: str,
    catalogue: Catalogue,
    *,
    visits_per_hour: float = 240.0,
    history_days: int = 0,
) -> Iterator[Publication]:
    """The endless stream of events a shop's devices publish, in time order.

    Visits arrive as a Poisson process and overlap: each enters through the door, walks a
    few zones, may look products up at the kiosk, buy the export's next receipt at a till
    (checking in with the loyalty app first, and setting consents, when the receipt is a
    known customer's), and leave feedback. Everything random comes from ``rng``, so a seed
    always yields the same stream.

    With ``history_days``, the stream first replays the receipts of the export's first
    that many trading days, each as a visit at its own time of day, on the days before
    ``start_ms`` (marked ``replayed``); the live visits then sell the receipts after them,
    from the start again once they run out.

    Args:
        rng: the only source of randomness, message ids included.
        start_ms: when the first visit arrives, in epoch milliseconds.
        site: the site id the topics are published under.
        catalogue: products and real baskets; every order sells one of its baskets.
        visits_per_hour: the mean arrival rate of visits.
        history_days: trading days of the export to replay first (0: none).

    Yields:
        Publications with non-decreasing ``at_ms``.

    Raises:
        ValueError: the site id cannot be part of a topic, the rate is not positive, the
            catalogue has no basket, or it has fewer trading days than ``history_days``
            (and so nothing left to sell live).
    """
    if not visits_per_hour > 0:
        raise ValueError(f"visits_per_hour must be positive, got {visits_per_hour}")
    if not catalogue.baskets:
        raise ValueError("the catalogue has no basket to sell")
    shop = _Shop(rng, SiteId(site), catalogue)
    yield from shop.history(history_days, start_ms)
    mean_gap_ms = 3_600_000 / visits_per_hour
    pending: list[tuple[int, int, Publication]] = []
    order = itertools.count()
    next_arrival = start_ms
    while True:
        # A visit's events all come at or after its arrival, so once the earliest pending
        # event is before the next arrival nothing that arrival adds can precede it.
        while not pending or pending[0][0] >= next_arrival:
            for publication in shop.visit(next_arrival):
                heapq.heappush(pending, (publication.at_ms, next(order), publication))
            next_arrival += max(1, round(rng.expovariate(1 / mean_gap_ms)))
        yield heapq.heappop(pending)[2]


def _product(product: Product, price: float, quantity: int | None = None) -> dict[str, object]:
    # The stock code is what the till scans, so it serves as the SKU too.
    fields: dict[str, object] = {
        "product_id": product.product_id,
        "sku": product.product_id,
        "name": product.name,
        "price": price,
    }
    if quantity is not None:
        fields["quantity"] = quantity
    return fields


class _Shop:
    """The site's devices and what they remember across visits (loyalty members)."""

    def __init__(self, rng: random.Random, site: SiteId, catalogue: Catalogue) -> None:
        self._rng = rng
        self._products = tuple(catalogue.products.values())
        self._baskets = catalogue.baskets
        self._sold = 0  # receipts sold so far: the next one is the export's next
        devices = (DOOR, KIOSK, LOYALTY, *TILLS, *(f"zone-{zone}" for zone in ZONES))
        try:
            self._topics = {d: DeviceTopic(site, DeviceId(d)).topic for d in devices}
        except TopicError as exc:
            raise ValueError(f"site id {site!r} cannot be used in a topic: {exc}") from exc
        # The consent each member last recorded (None: never answered); absent: not enrolled.
        self._members: dict[str, _Purposes | None] = {}

    def topic(self, device: str) -> str:
        """The topic ``device`` publishes to."""
        return self._topics[device]

    def message_id(self) -> str:
        """A fresh messageId: a version 4 UUID drawn from the stream's generator."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def history(self, days: int, start_ms: int) -> Iterator[Publication]:
        """The visits that bought the receipts of the export's first ``days`` trading days,
        at their time of day on the days before ``start_ms``, in time order."""
        if days <= 0:
            return
        trading = sorted({basket.at.date() for basket in self._baskets})
        if len(trading) <= days:
            raise ValueError(
                f"the catalogue has {len(trading)} trading days: replaying {days} leaves "
                "nothing to sell live"
            )
        today = datetime.fromtimestamp(start_ms / 1000, UTC).date()
        replayed: list[Publication] = []
        for basket in self._baskets:
            if basket.at.date() not in trading[:days]:
                break
            # The last replayed day is yesterday, the one before it the day before, ...
            day = today - timedelta(days=days - trading.index(basket.at.date()))
            when = datetime.combine(day, basket.at.timetz())
            arrival = round(when.timestamp() * 1000) - self._seconds(300, 900)
            replayed += self.visit(arrival, buys=True)
        replayed.sort(key=lambda publication: publication.at_ms)
        for publication in replayed:
            yield Publication(publication.topic, publication.payload, publication.at_ms, True)

    def _next_basket(self) -> Basket:
        basket = self._baskets[self._sold % len(self._baskets)]
        self._sold += 1
        return basket

    def visit(self, arrival_ms: int, *, buys: bool | None = None) -> list[Publication]:
        """Every event of one visit that arrives at ``arrival_ms``, in any order (``buys``:
        whether it buys the next receipt; None: as often as visitors do)."""
        rng = self._rng
        visit = _Visit(self, f"trk-{rng.getrandbits(64):016x}")
        group = rng.choices(*_GROUP_SIZES)[0]
        door_in = {"direction": "in", "count": group}
        visit.track(arrival_ms, DOOR, "Door Counted", door_in, anonymous=False)
        if buys is None:
            buys = rng.random() < _P_CHECKOUT
        basket = self._next_basket() if buys else None
        aisles = rng.sample(AISLES, rng.choices(*_AISLE_COUNTS)[0])
        viewing_aisle = rng.choice(aisles) if rng.random() < _P_KIOSK_VIEWS else None

        at = arrival_ms + self._seconds(1, 4)
        at = visit.zone("entrance", at, self._dwell("entrance"))
        if basket is not None and basket.customer is not None:
            self._check_in(visit, arrival_ms + self._seconds(3, 20), basket.customer)
        for aisle in aisles:
            at += self._seconds(3, 12)
            dwell = self._dwell(aisle)
            if aisle == viewing_aisle:
                self._views(visit, at, dwell, basket)
            at = visit.zone(aisle, at, dwell)
        if basket is not None:
            entered = at + self._seconds(3, 12)
            at = visit.zone("checkout", entered, self._checkout(visit, entered, basket) - entered)
        if rng.random() < _P_FEEDBACK:
            at += self._seconds(5, 20)
            visit.track(at, KIOSK, "Feedback Submitted", self._feedback())
        at += self._seconds(5, 15)
        door_out = {"direction": "out", "count": group}
        visit.track(at, DOOR, "Door Counted", door_out, anonymous=False)
        if visit.user_id is not None and rng.random() < _P_ERASURE:
            # Asked from the app some time after leaving; enrolling again starts afresh.
            del self._members[visit.user_id]
            visit.track(
                at + self._seconds(30, 600),
                LOYALTY,
                "Erasure Requested",
                {"source": "loyalty-app"},
                anonymous=False,
            )
        return visit.publications

    def _seconds(self, low: float, high: float) -> int:
        return round(self._rng.uniform(low, high) * 1000)

    def _dwell(self, zone: str) -> int:
        seconds = self._rng.lognormvariate(math.log(_DWELL_MEDIAN_S[zone]), _DWELL_SIGMA)
        return max(1000, round(seconds * 1000))

    def _views(self, visit: _Visit, at: int, dwell: int, basket: Basket | None) -> None:
        rng = self._rng
        for _ in range(rng.randint(1, 3)):
            at += rng.randint(1, max(1, dwell // 4))
            if basket is not None and rng.random() < 0.5:
                product = rng.choice(basket.lines).product
            else:
                product = rng.choice(self._products)
            visit.track(at, KIOSK, "Product Viewed", _product(product, product.price))

    def _checkout(self, visit: _Visit, entered: int, basket: Basket) -> int:
        """Ring up a real basket at a till; returns when the visitor leaves the checkout."""
        rng = self._rng
        till = rng.choice(TILLS)
        cart_id = f"cart-{rng.getrandbits(48):012x}"
        at = entered + round(rng.lognormvariate(math.log(_QUEUE_MEDIAN_S), _DWELL_SIGMA) * 1000)
        misscan_before = rng.randrange(len(basket.lines)) if rng.random() < _P_MISSCAN else -1
        for index, line in enumerate(basket.lines):
            if index == misscan_before:
                # A wrong item rung up and taken off again: the sale stays the real basket.
                wrong = rng.choice(self._products)
                added = {**_product(wrong, wrong.price, 1), "cart_id": cart_id}
                at += self._seconds(2, 5)
                visit.track(at, till, "Product Added", added)
                at += self._seconds(3, 8)
                visit.track(at, till, "Product Removed", dict(added))
            at += self._seconds(2, 5)
            scanned = _product(line.product, line.unit_price, line.quantity)
            visit.track(at, till, "Product Added", {**scanned, "cart_id": cart_id})
        at += self._seconds(15, 40)
        order = {
            "order_id": f"ord-{rng.getrandbits(48):012x}",
            "cart_id": cart_id,
            "total": basket.total,
            "currency": CURRENCY,
            "products": [
                _product(line.product, line.unit_price, line.quantity) for line in basket.lines
            ],
        }
        visit.track(at, till, "Order Completed", order)
        return at + self._seconds(5, 15)

    def _feedback(self) -> dict[str, object]:
        rng = self._rng
        kind = rng.choices(("nps", "ces", "both"), (50, 25, 25))[0]
        answer: dict[str, object] = {"kiosk": KIOSK}
        if kind != "ces":
            answer["nps"] = rng.choices(range(11), _NPS_WEIGHTS)[0]
        if kind != "nps":
            answer["ces"] = rng.choices(range(1, 6), _CES_WEIGHTS)[0]
        return answer

    def _check_in(self, visit: _Visit, at: int, customer: str) -> None:
        rng = self._rng
        user_id = f"loyalty-{customer}"
        number = int(customer) if customer.isdigit() else len(customer)
        traits: dict[str, object] = {"first_name": _FIRST_NAMES[number % len(_FIRST_NAMES)]}
        visit.identify(at, user_id, traits)
        if user_id not in self._members:
            consent = rng.choices(_CONSENTS, _CONSENT_WEIGHTS)[0]
        elif rng.random() < _P_CONSENT_CHANGE:
            # A returning member changes their mind: they answer, so never "no answer".
            consent = rng.choices(_CONSENTS[:-1], _CONSENT_WEIGHTS[:-1])[0]
        else:
            return
        if consent is not None and consent != self._members.get(user_id):
            answer: dict[str, object] = {"purposes": dict(consent), "source": "loyalty-app"}
            visit.track(at + self._seconds(1, 5), LOYALTY, "Consent Updated", answer)
        self._members[user_id] = consent


class _Visit:
    """The events of one visit, under its short-lived track id (the anonymousId)."""

    def __init__(self, shop: _Shop, anonymous_id: str) -> None:
        self._shop = shop
        self.anonymous_id = anonymous_id
        self.user_id: str | None = None
        self.publications: list[Publication] = []

    def zone(self, zone: str, entered: int, dwell: int) -> int:
        """Enter and leave a zone; returns when the visitor left it."""
        device = f"zone-{zone}"
        self.track(entered, device, "Zone Entered", {"zone": zone})
        self.track(entered + dwell, device, "Zone Exited", {"zone": zone})
        return entered + dwell

    def identify(self, at: int, user_id: str, traits: dict[str, object]) -> None:
        """The loyalty check-in: links this visit's anonymousId to the member's userId."""
        self.user_id = user_id
        body = {"type": "identify", "userId": user_id, "anonymousId": self.anonymous_id}
        self._add(at, LOYALTY, {**body, "traits": traits})

    def track(
        self,
        at: int,
        device: str,
        event: str,
        properties: dict[str, object],
        *,
        anonymous: bool = True,
    ) -> None:
        """A track event under the visit's anonymousId unless ``anonymous`` is False.

        Only the loyalty device knows who checked in, so only its events carry the userId.
        """
        body: dict[str, object] = {"type": "track", "event": event, "properties": properties}
        if anonymous:
            body["anonymousId"] = self.anonymous_id
        if device == LOYALTY and self.user_id is not None:
            body["userId"] = self.user_id
        self._add(at, device, body)

    def _add(self, at: int, device: str, body: dict[str, object]) -> None:
        payload: dict[str, object] = {
            "type": body["type"],
            "messageId": self._shop.message_id(),
            "timestamp": iso_timestamp(at),
            **body,
            "context": {"device": {"id": device}},
        }
        self.publications.append(Publication(self._shop.topic(device), payload, at))


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """Where and how fast to publish the simulated site.

    Raises:
        ConfigError: the port, rate, duration or site id is out of range.
    """

    host: str = "localhost"
    port: int = 1883
    site: str = "demo"
    rate: float = 10.0
    duration: float = 60.0
    seed: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    #: Trading days of the packaged sales to replay first, as the days before now.
    history_days: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"simulator port must be 1-65535, got {self.port}")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(
                f"simulator rate must be a positive number of events/s, got {self.rate}"
            )
        if not (self.duration >= 0 and math.isfinite(self.duration)):
            raise ConfigError(
                f"simulator duration must be 0 (until stopped) or more seconds, got {self.duration}"
            )
        if not 0 <= self.history_days <= 3:
            raise ConfigError(
                f"simulator history must be 0-3 days (the packaged sales hold 4), "
                f"got {self.history_days}"
            )
        try:
            DeviceTopic(SiteId(self.site), DeviceId(DOOR))
        except TopicError as exc:
            raise ConfigError(f"simulator site {self.site!r} cannot be used: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SimulatorReport:
    """What one simulator run achieved.

    Attributes:
        published: events paho accepted for sending.
        acknowledged: events the broker acknowledged (PUBACK with a success code).
        failed: events paho refused or the broker answered with an error code.
        unacknowledged: events accepted but still without PUBACK when the run ended.
        elapsed_s: wall time from the first publish to the end of the run.
    """

    published: int
    acknowledged: int
    failed: int
    unacknowledged: int
    elapsed_s: float


def _report(window: Window, elapsed_s: float) -> SimulatorReport:
    return SimulatorReport(
        published=window.published,
        acknowledged=window.acknowledged,
        failed=window.refused + window.rejected,
        unacknowledged=max(0, window.outstanding),
        elapsed_s=round(elapsed_s, 3),
    )


def run_simulator(
    options: SimulatorOptions,
    stop: threading.Event | None = None,
    history_sent: Callable[[int], None] | None = None,
) -> SimulatorReport:
    """Publish the demo site's events to an MQTT broker until the duration ends or ``stop``.

    The replayed history (``options.history_days``) goes first, as fast as the broker
    acknowledges it and with its own timestamps. Then events go out at ``options.rate`` per
    second (QoS 1), each stamped with the real time it is sent so the agent's clock-skew
    check passes. Visits arrive at the pace that
    keeps simulated time close to real time, so dwell times look realistic, up to about
    15 events/s (3,600 visits an hour); faster rates compress the visits instead. At the
    end it waits up to 10 s for outstanding acknowledgements.

    Args:
        options: broker, site, rate, duration (0: until ``stop`` is set) and seed.
        stop: set it from another thread to end the run early.
        history_sent: called with how many events were replayed, once the broker has
            acknowledged them all (or waited 10 s), before the first live event.

    Returns:
        How many events were published, acknowledged, failed or left unacknowledged.

    Raises:
        BrokerError: the broker cannot be reached, refuses the connection, or stops
            acknowledging.
        ConfigError: the packaged catalogue cannot be read.
    """
    stop = stop if stop is not None else threading.Event()
    catalogue = load_sales()
    stream = site_stream(
        random.Random(options.seed),
        time.time_ns() // 1_000_000,
        options.site,
        catalogue,
        visits_per_hour=min(options.rate * 3600 / EVENTS_PER_VISIT, _MAX_VISITS_PER_HOUR),
        history_days=options.history_days,
    )
    tally = Window(_WINDOW, _STALL_S)
    client = _connect(options, tally)
    started = time.monotonic()
    try:
        _publish(client, stream, options, stop, tally, history_sent)
        tally.drain(_DRAIN_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return _report(tally, time.monotonic() - started)


def _connect(options: SimulatorOptions, tally: Window) -> mqtt.Client:
    where = f"{options.host}:{options.port}"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=options.client_id or "", protocol=mqtt.MQTTv5
    )
    answered = threading.Event()
    answers: list[ReasonCode] = []

    def on_connect(
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # paho calls this again after each automatic reconnect, from its network thread.
        answers.append(reason_code)
        answered.set()
        logger.info(
            "simulator connected to %s: %s",
            where,
            reason_code,
            extra={"event": "simulator_connected", "reason": str(reason_code)},
        )

    def on_disconnect(
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Our own disconnect at the end is normal; anything else paho will retry.
        logger.log(
            logging.WARNING if reason_code.is_failure else logging.INFO,
            "simulator disconnected from %s: %s",
            where,
            reason_code,
            extra={"event": "simulator_disconnected", "reason": str(reason_code)},
        )

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_publish = tally.on_publish
    # paho keeps its default of 20 unacknowledged publishes on the wire: it ignores the
    # Receive Maximum a broker announces, and Mosquitto announces 20 by default.
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    try:
        client.connect(options.host, options.port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise BrokerError(
            f"MQTT broker {where} is not reachable ({exc}): start it, or check the host and port"
        ) from exc
    client.loop_start()
    if not answered.wait(_CONNECT_TIMEOUT_S) or answers[0].is_failure:
        client.loop_stop()
        client.disconnect()
        why = f"refused the connection: {answers[0]}" if answers else "did not answer CONNECT"
        raise BrokerError(
            f"MQTT broker {where} {why}: check the username, password and client id it expects",
            reason_code=answers[0].value if answers else None,
        )
    return client


def _publish(
    client: mqtt.Client,
    stream: Iterator[Publication],
    options: SimulatorOptions,
    stop: threading.Event,
    tally: Window,
    history_sent: Callable[[int], None] | None,
) -> None:
    where = f"{options.host}:{options.port}"
    replayed = 0
    total = math.floor(options.rate * options.duration) if options.duration > 0 else None
    started: float | None = None
    sent = 0
    for publication in stream:
        if stop.is_set() or (total is not None and sent >= total):
            return
        payload = publication.payload
        if publication.replayed:
            replayed += 1
        else:
            if replayed and history_sent is not None and started is None:
                tally.drain(_DRAIN_S)
                history_sent(replayed)
            # The n-th live event is due n/rate seconds after the first; sleeping in short
            # steps lets a late wake-up catch up and a stop take effect promptly.
            started = time.monotonic() if started is None else started
            while (wait := started + sent / options.rate - time.monotonic()) > 0:
                if stop.wait(min(_TICK_S, wait)):
                    return
            payload = {**payload, "timestamp": iso_timestamp(time.time_ns() // 1_000_000)}
            sent += 1
        if not tally.reserve(stop, where):
            return
        info = client.publish(publication.topic, orjson.dumps(payload), qos=1)
        if not tally.handed(info.rc):
            logger.warning(
                "paho refused a publish: %s",
                mqtt.error_string(info.rc),
                extra={"event": "simulator_publish_refused", "rc": int(info.rc)},
            )
