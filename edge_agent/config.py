"""Settings: defaults, then a TOML file, then ``EDGE_AGENT_<SECTION>__<KEY>`` variables.

Everything is loaded and checked once, into frozen dataclasses, one per TOML section. A bad
value raises `ConfigError` naming where it came from, the key, the value and what is allowed.
No other module reads the environment.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from edge_agent.core.capacities import parse_capacities
from edge_agent.core.deadletters import DEFAULT_BUDGET, Budget
from edge_agent.core.events import MAX_PAYLOAD_BYTES
from edge_agent.core.localtime import is_zone
from edge_agent.core.money import Money, is_code, parse_rates
from edge_agent.core.names import site_name_ok, valid_id
from edge_agent.core.plausibility import Plausibility
from edge_agent.errors import ConfigError

ENV_PREFIX = "EDGE_AGENT_"
ENV_CONFIG = "EDGE_AGENT_CONFIG"


@dataclass(frozen=True)
class _Rule:
    check: Callable[[Any], bool]
    allowed: str


def _setting(default: Any, check: Callable[[Any], bool], allowed: str) -> Any:
    return field(default=default, metadata={"rule": _Rule(check, allowed)})


def _port(value: int) -> bool:
    return 1 <= value <= 65535


def _positive(value: float) -> bool:
    return value > 0


def _rates(value: str) -> bool:
    try:
        parse_rates(value)
    except ValueError:
        return False
    return True


def _capacities(value: str) -> bool:
    try:
        parse_capacities(value)
    except ValueError:
        return False
    return True


class Secret(str):
    """A string that never shows itself in ``repr`` or logs (passwords, tokens)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('**********')" if self else "Secret('')"


@dataclass(frozen=True)
class SiteSettings:
    """``[site]``: who this agent is and where it keeps its data."""

    id: str = _setting("demo-site", valid_id, "1-64 letters (a-z, A-Z), digits, - _ or .")
    #: The venue this agent's site belongs to; agents of one venue merge at central. Empty:
    #: the site is its own venue.
    venue: str = _setting(
        "", lambda v: v == "" or valid_id(v), "empty or 1-64 letters (a-z, A-Z), digits, - _ ."
    )
    #: A human-readable name central shows beside the id ("Taipei Xinyi store"); empty: none.
    name: str = _setting("", site_name_ok, "at most 80 characters, no control characters")
    data_dir: Path = _setting(Path("data"), lambda p: str(p) != "", "a folder path")
    #: The currency the site's prices and totals are in (ISO 4217); empty: not said, and
    #: money is shown as a plain number in the currency of each hour's first order.
    currency: str = _setting("", lambda v: v == "" or is_code(v), "empty, or EUR, TWD ...")
    #: What orders in other currencies are worth in ``currency``: ``"EUR=11.2, USD=31.6"``
    #: (one EUR is 11.2 of the site's currency). Orders in a currency with no rate are
    #: counted apart, never added to the revenue.
    exchange_rates: str = _setting(
        "", _rates, "CODE=rate entries with positive rates, such as EUR=11.2, USD=31.6"
    )
    #: How the screens write numbers, money and times (a BCP 47 tag).
    locale: str = _setting(
        "en",
        lambda v: re.fullmatch("[a-z]{2,3}(-[A-Za-z0-9]{2,8})*", v) is not None,
        "a language tag such as en, fi-FI, zh-TW",
    )
    #: The site's time zone (IANA): its "today", its hours and days on the screens and in
    #: ``insights``. Daylight saving is followed.
    timezone: str = _setting("UTC", is_zone, "an IANA time zone such as Europe/Helsinki or UTC")

    @property
    def money(self) -> Money:
        """The site's currency and exchange rates, as insight cells use them."""
        return Money(self.currency, parse_rates(self.exchange_rates))


@dataclass(frozen=True)
class MqttSettings:
    """``[mqtt]``: the site broker and the agent's persistent session on it."""

    host: str = _setting("127.0.0.1", bool, "a host name or address")
    port: int = _setting(1883, _port, "1-65535")
    client_id: str = _setting(
        "", lambda v: len(v) <= 128, "at most 128 characters (empty: edge-agent-<site>)"
    )
    username: str = _setting("", lambda v: True, "any text")
    password: Secret = _setting(Secret(""), lambda v: True, "any text")
    #: A file holding the password instead (first line). Read again at every reconnection, so
    #: a rotated password takes effect without restarting the agent.
    password_file: Path = _setting(
        Path(""), lambda p: True, "a file holding the password, or empty"
    )
    tls: bool = _setting(False, lambda v: True, "true or false")
    #: The CA that signed the broker's certificate (PEM); empty: the system's CAs.
    ca_file: Path = _setting(Path(""), lambda p: True, "a PEM file of CA certificates, or empty")
    #: A client certificate and its key (PEM), for brokers that require one.
    cert_file: Path = _setting(Path(""), lambda p: True, "a PEM certificate file, or empty")
    key_file: Path = _setting(Path(""), lambda p: True, "a PEM private key file, or empty")
    # Sites' own id goes in place of {site}. The default takes every topic, so that a device
    # set up with the wrong site id or a typo in its topic shows up in the dead letters
    # (wrong_site, bad_topic) instead of vanishing at the broker; provisioning's ACL refuses
    # such publishes at the broker instead, and its config takes only the site's topics.
    topic: str = _setting(
        "#",
        lambda v: v == "#" or v.startswith("sites/"),
        'an MQTT filter under sites/, or "#" for every topic',
    )
    keepalive_s: int = _setting(30, lambda v: 5 <= v <= 3600, "5-3600")
    session_expiry_s: int = _setting(
        7 * 24 * 3600, lambda v: 60 <= v <= 0xFFFFFFFF, "60-4294967295"
    )
    # Without a larger Receive Maximum, the broker keeps only 20 unacknowledged messages in
    # flight and ack-after-commit turns into one commit per 20 events.
    receive_maximum: int = _setting(1000, lambda v: 1 <= v <= 65535, "1-65535")
    reconnect_min_s: float = _setting(0.5, _positive, "a positive number of seconds")
    reconnect_max_s: float = _setting(30.0, _positive, "a positive number of seconds")

    def effective_client_id(self, site: str) -> str:
        """The MQTT client id: the persistent session is keyed by it, so it must be stable."""
        return self.client_id or f"edge-agent-{site}"


@dataclass(frozen=True)
class IngestSettings:
    """``[ingest]``: what a payload may be, and how events are grouped into commits."""

    # The broker configurations edge-agent writes refuse packets much larger than this
    # default (`edge_agent.core.broker`): raise both together.
    max_payload_bytes: int = _setting(
        MAX_PAYLOAD_BYTES, lambda v: 256 <= v <= 16 * 1024 * 1024, "256-16777216"
    )
    max_batch_events: int = _setting(500, lambda v: 1 <= v <= 10000, "1-10000")
    max_depth: int = _setting(16, lambda v: 4 <= v <= 256, "4-256")
    max_future_skew_s: int = _setting(300, lambda v: v >= 0, "0 or more seconds")
    max_past_age_s: int = _setting(7 * 24 * 3600, lambda v: v > 0, "a positive number of seconds")
    commit_max_events: int = _setting(500, lambda v: 1 <= v <= 10000, "1-10000")
    commit_max_ms: int = _setting(20, lambda v: 1 <= v <= 5000, "1-5000 milliseconds")
    queue_max_events: int = _setting(5000, lambda v: 100 <= v <= 1_000_000, "100-1000000")
    #: The payload bytes received and not yet acknowledged, at most: what bounds the
    #: receiver's memory when devices send large payloads.
    queue_max_mb: int = _setting(32, lambda v: 1 <= v <= 4096, "1-4096 MB")


@dataclass(frozen=True)
class PrivacySettings:
    """``[privacy]``: who may link a visit to a person (see `edge_agent.core.links`)."""

    #: Devices that identify visitors other devices saw (a loyalty scanner, a POS reading
    #: loyalty cards), comma-separated; any other device may link only a visit it alone saw.
    link_devices: str = _setting("", lambda v: True, "device ids separated by commas")

    @property
    def linking(self) -> frozenset[str]:
        """The devices listed in ``link_devices``."""
        return frozenset(d.strip() for d in self.link_devices.split(",") if d.strip())


_PLAUSIBLE = Plausibility()


@dataclass(frozen=True)
class PlausibilitySettings:
    """``[plausibility]``: figures no real site produces, refused as ``implausible`` dead
    letters (see `edge_agent.core.plausibility`)."""

    door_count_max: int = _setting(_PLAUSIBLE.door_count_max, _positive, "a positive integer")
    door_count_per_message_max: int = _setting(
        _PLAUSIBLE.door_count_per_message_max, _positive, "a positive integer"
    )
    order_lines_max: int = _setting(_PLAUSIBLE.order_lines_max, _positive, "a positive integer")
    order_quantity_max: int = _setting(
        _PLAUSIBLE.order_quantity_max, _positive, "a positive integer"
    )
    order_units_max: int = _setting(_PLAUSIBLE.order_units_max, _positive, "a positive integer")
    order_total_max: float = _setting(_PLAUSIBLE.order_total_max, _positive, "a positive number")
    order_total_factor: float = _setting(
        _PLAUSIBLE.order_total_factor, lambda v: v >= 1, "a number of 1 or more"
    )

    @property
    def bounds(self) -> Plausibility:
        """The core's bounds from these settings."""
        return Plausibility(**dataclasses.asdict(self))


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``: the SQLite file (empty path: ``<data_dir>/edge-agent.db``)."""

    path: Path = _setting(Path(""), lambda p: True, "a file path, or empty")
    # FULL survives a power cut as well as a crash; NORMAL in WAL survives a crash only.
    synchronous: str = _setting("FULL", lambda v: v in ("FULL", "NORMAL"), "FULL or NORMAL")
    dead_letter_raw_bytes: int = _setting(
        64 * 1024, lambda v: 256 <= v <= 16 * 1024 * 1024, "256-16777216"
    )
    #: Under this much free space on the database's disk, new events are neither committed
    #: nor acknowledged: the broker keeps them until space returns (0: no check).
    min_free_mb: int = _setting(200, lambda v: v >= 0, "0 or more megabytes (0: no check)")
    #: Dead letters kept whole per device and reason; then one in ``dead_letters_sample_every``
    #: up to as many again; the rest are counted, not kept.
    dead_letters_first: int = _setting(
        DEFAULT_BUDGET.first, lambda v: 1 <= v <= 100_000, "1-100000"
    )
    dead_letters_sample_every: int = _setting(
        DEFAULT_BUDGET.sample_every, lambda v: 1 <= v <= 1_000_000, "1-1000000"
    )
    #: What all kept dead letters may take on disk together.
    dead_letters_max_mb: int = _setting(
        DEFAULT_BUDGET.max_bytes // (1024 * 1024), lambda v: 1 <= v <= 100_000, "1-100000 MB"
    )

    @property
    def dead_letter_budget(self) -> Budget:
        """The dead letters' budget these settings give."""
        return Budget(
            self.dead_letters_first,
            self.dead_letters_sample_every,
            self.dead_letters_max_mb * 1024 * 1024,
        )


@dataclass(frozen=True)
class RetentionSettings:
    """``[retention]``: how long raw events and dead letters are kept, and how often to check."""

    events_days: int = _setting(30, lambda v: 1 <= v <= 3650, "1-3650 days")
    dead_letters_days: int = _setting(14, lambda v: 1 <= v <= 3650, "1-3650 days")
    every_s: int = _setting(3600, lambda v: 10 <= v <= 86400, "10-86400 seconds")


@dataclass(frozen=True)
class InsightsSettings:
    """``[insights]``: suppression threshold and how often closed hours are computed."""

    k: int = _setting(5, lambda v: 1 <= v <= 1000, "1-1000 distinct visitors")
    every_s: int = _setting(300, lambda v: 10 <= v <= 86400, "10-86400 seconds")
    epsilon_per_day: float = _setting(1.0, lambda v: 0 <= v <= 100, "0-100")
    epsilon_per_cell: float = _setting(0.1, lambda v: 0 < v <= 10, "a number in (0, 10]")


def _token(value: str) -> bool:
    return value == "" or (
        16 <= len(value) <= 256 and value.isascii() and value.isprintable() and " " not in value
    )


def _url(value: str) -> bool:
    return value == "" or (value.startswith(("http://", "https://")) and " " not in value)


@dataclass(frozen=True)
class SyncSettings:
    """``[sync]``: the only door out of the site (empty ``url``: nothing is sent)."""

    url: str = _setting("", _url, "empty, or an http:// or https:// URL of the collector")
    token: Secret = _setting(Secret(""), lambda v: True, "the site's token from the collector")
    #: Where identified data goes instead of the collector: any Segment-compatible endpoint.
    segment_url: str = _setting("", _url, "empty, or an http:// or https:// URL")
    segment_write_key: Secret = _setting(Secret(""), lambda v: True, "that endpoint's write key")
    ca_bundle: Path = _setting(Path(""), lambda p: True, "a PEM file of CA certificates, or empty")
    every_s: int = _setting(900, lambda v: 10 <= v <= 86400, "10-86400 seconds")
    jitter_s: int = _setting(60, lambda v: 0 <= v <= 3600, "0-3600 seconds")
    #: How often the agent tells central how it is (``POST /v1/checkin``), data or not.
    check_in_s: int = _setting(60, lambda v: 10 <= v <= 3600, "10-3600 seconds")
    timeout_s: float = _setting(30.0, lambda v: 1 <= v <= 600, "1-600 seconds")
    batch_max_items: int = _setting(500, lambda v: 1 <= v <= 10000, "1-10000")
    batch_max_bytes: int = _setting(
        1_000_000, lambda v: 10_000 <= v <= 4_000_000, "10000-4000000 bytes"
    )
    backoff_min_s: float = _setting(2.0, lambda v: 0.01 <= v <= 3600, "0.01-3600 seconds")
    backoff_max_s: float = _setting(900.0, lambda v: 0.01 <= v <= 86400, "0.01-86400 seconds")
    outbox_quota_bytes: int = _setting(200_000_000, lambda v: v >= 10_000, "at least 10000 bytes")


def _public_key(value: str) -> bool:
    try:
        return value == "" or len(base64.b64decode(value, validate=True)) == 32
    except ValueError:
        return False


@dataclass(frozen=True)
class ModelsSettings:
    """``[models]``: whose releases the agent accepts, and how often it asks central."""

    #: The publisher's Ed25519 public key (base64 of its 32 raw bytes); empty: none accepted.
    publisher_key: str = _setting(
        "", _public_key, "empty, or the base64 public key edge-agent-collector keygen printed"
    )
    pull_every_s: int = _setting(3600, lambda v: 60 <= v <= 7 * 86400, "60-604800 seconds")
    #: How often trending is retrained (the personal model is refitted nightly).
    train_every_s: int = _setting(3600, lambda v: 30 <= v <= 86400, "30-86400 seconds")
    #: Whether that job also runs as the agent starts (installing the shipped defaults at
    #: once); false: its first run waits train_every_s, and start-up loads no model at all.
    train_on_start: bool = _setting(True, lambda v: True, "true or false")


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the agent's API for staff screens (loopback unless said otherwise)."""

    enabled: bool = _setting(False, lambda v: True, "true or false")
    host: str = _setting("127.0.0.1", bool, "an address to listen on")
    port: int = _setting(8080, _port, "1-65535")
    site_refresh_s: int = _setting(30, lambda v: 1 <= v <= 3600, "1-3600 seconds")
    public_url: str = _setting(
        "",
        lambda v: v == "" or v.startswith(("http://", "https://")),
        "empty, or the http:// or https:// address screens open",
    )
    #: /metrics needs ``Authorization: Bearer <token>``; when empty, it answers nobody unless
    #: ``metrics_open`` says otherwise.
    metrics_token: Secret = _setting(
        Secret(""), _token, "empty, or 16-256 printable ASCII characters without spaces"
    )
    #: True: /metrics answers without a token while the server listens on loopback only.
    metrics_open: bool = _setting(False, lambda v: True, "true or false")
    #: Further names screens reach the agent by (the Host header they send), beyond the
    #: listen address, ``public_url``'s host and, listening on every address, the machine's
    #: name; an address typed as numbers is always taken.
    allowed_hosts: str = _setting(
        "", lambda v: len(v) <= 4096, "host names separated by commas, e.g. screens.shop.lan"
    )
    #: Seconds a client has to send a whole request, counted from when its connection opened
    #: or its previous answer was sent; a slower one is cut off.
    request_timeout_s: float = _setting(10.0, lambda v: 1 <= v <= 300, "1-300 seconds")
    #: Connections one client address may hold at once (screens hold one or two each).
    connections_per_client: int = _setting(16, lambda v: 1 <= v <= 1000, "1-1000")

    def hosts(self) -> frozenset[str]:
        """The host names (lower case) ``Host`` may name, beyond addresses typed as numbers:
        the listen address, ``public_url``'s host, ``allowed_hosts`` and, for loopback,
        ``localhost``; listening on every address, the machine's name too."""
        names = {h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()}
        names.add(self.host.lower())
        if self.public_url:
            names.add((urllib.parse.urlsplit(self.public_url).hostname or "").lower())
        if self.loopback_only():
            names.add("localhost")
        if self.host in ("0.0.0.0", "::"):  # noqa: S104
            names.update({"localhost", socket.gethostname().lower(), socket.getfqdn().lower()})
        return frozenset(names - {""})

    def loopback_only(self) -> bool:
        """Whether the server listens on a loopback address only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name other than localhost may resolve to anything

    def base_url(self) -> str:
        """Where a screen reaches the agent: ``public_url``, else the address it listens on
        (the machine's name when it listens on every address)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"


#: Where an agent's share document goes: its own topic under the venue's, so that the broker's
#: ACL lets each agent write only its own (`edge_agent.core.venueview`).
VENUE_TOPIC_PREFIX = "venues/{venue}/agents/{site}/"


def _venue_topic(value: str) -> bool:
    rest = value.removeprefix(VENUE_TOPIC_PREFIX)
    return (
        value.startswith(VENUE_TOPIC_PREFIX)
        and len(value) <= 200
        and rest != ""
        and not any(c in rest for c in "+#{}\x00")
        and "" not in rest.split("/")
    )


@dataclass(frozen=True)
class VenueSettings:
    """``[venue]``: the agents of one venue sharing their live hour cells over the broker."""

    #: Publish this agent's cells of today and take the other agents' (needs ``[site]
    #: venue``); false: a shop alone shares nothing.
    share: bool = _setting(False, lambda v: True, "true or false")
    share_every_s: int = _setting(5, lambda v: 1 <= v <= 3600, "1-3600 seconds")
    #: An agent not heard from for this long is shown stale (its last cells still count).
    stale_after_s: int = _setting(30, lambda v: 2 <= v <= 86400, "2-86400 seconds")
    topic: str = _setting(
        VENUE_TOPIC_PREFIX + "today",
        _venue_topic,
        "venues/{venue}/agents/{site}/ and one or more topic levels, no + # { }",
    )
    #: The venue's capacity in people, which the gate screens show attendance against;
    #: 0: not set.
    capacity: int = _setting(0, lambda v: 0 <= v <= 10_000_000, "0 (not set) to 10000000 people")
    #: Each hall's capacity in people: ``"h1=2000, h2=800"`` (halls as the gates' scans name
    #: them); a hall not named has none.
    hall_capacity: str = _setting(
        "", _capacities, 'hall=people entries such as "h1=2000, h2=800" (1-10000000 each)'
    )
    #: A gate screen warns when a gate refuses more than this share of the attempts to come
    #: in over 15 minutes (with at least 20 of them) ...
    rejection_alert: float = _setting(0.1, lambda v: 0 < v < 1, "a share between 0 and 1")
    #: ... or when a hall (or the venue) holds more than this share of its capacity.
    occupancy_alert: float = _setting(0.9, lambda v: 0 < v <= 1, "a share above 0, at most 1")

    def topic_of(self, venue: str, site: str) -> str:
        """The topic ``site``'s share document is published to (retained)."""
        return self.topic.replace("{venue}", venue).replace("{site}", site)

    def subscription(self, venue: str) -> str:
        """The filter that takes every agent's share document of ``venue``."""
        return self.topic_of(venue, "+")


@dataclass(frozen=True)
class LogSettings:
    """``[log]``: JSON lines on stdout."""

    level: str = _setting(
        "INFO",
        lambda v: v in ("DEBUG", "INFO", "WARNING", "ERROR"),
        "DEBUG, INFO, WARNING or ERROR",
    )


@dataclass(frozen=True)
class Settings:
    """All settings of one agent, checked."""

    site: SiteSettings = field(default_factory=SiteSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    plausibility: PlausibilitySettings = field(default_factory=PlausibilitySettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    insights: InsightsSettings = field(default_factory=InsightsSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    venue: VenueSettings = field(default_factory=VenueSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "defaults"

    @property
    def site_key(self) -> Path:
        """The site's secret pseudonymisation key (created on first start, mode 0600)."""
        return self.site.data_dir / "site.key"

    @property
    def models_folder(self) -> Path:
        """Where model releases are kept, one folder per name and version."""
        return self.site.data_dir / "models"

    @property
    def database(self) -> Path:
        """The SQLite file this agent writes."""
        return (
            self.store.path
            if str(self.store.path) not in ("", ".")
            else self.site.data_dir / "edge-agent.db"
        )


_SECTIONS: dict[str, type[Any]] = {
    "site": SiteSettings,
    "mqtt": MqttSettings,
    "ingest": IngestSettings,
    "store": StoreSettings,
    "plausibility": PlausibilitySettings,
    "privacy": PrivacySettings,
    "retention": RetentionSettings,
    "insights": InsightsSettings,
    "sync": SyncSettings,
    "models": ModelsSettings,
    "http": HttpSettings,
    "venue": VenueSettings,
    "log": LogSettings,
}


def _convert(raw: object, kind: Any, where: str, key: str, allowed: str) -> object:
    def bad() -> ConfigError:
        return ConfigError(
            f"[{key.split('.')[0]}] {key.split('.')[1]} in {where} must be {allowed}, got {raw!r}"
        )

    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
                return raw.lower() in ("true", "1", "yes")
            raise bad()
        if kind is int:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise bad()
            return int(raw)
        if kind is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise bad()
            return float(raw)
        if not isinstance(raw, str):
            raise bad()
        if kind is Path:
            return Path(raw)
        if kind is Secret:
            return Secret(raw)
        return raw
    except ValueError as exc:
        raise bad() from exc


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from defaults, an optional TOML file and the environment.

    Args:
        path: the TOML file; when None, ``EDGE_AGENT_CONFIG`` names it if set.
        environ: the environment to read (the process environment when None).

    Raises:
        ConfigError: the file cannot be read or parsed, a section or key is unknown, or a value
            is of the wrong type or out of range.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(ENV_CONFIG):
        path = Path(env[ENV_CONFIG])
    values: dict[str, dict[str, tuple[object, str]]] = {name: {} for name in _SECTIONS}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        for section, table in document.items():
            if section not in _SECTIONS or not isinstance(table, dict):
                raise ConfigError(
                    f"[{section}] in {path} is not a section; known: {', '.join(_SECTIONS)}"
                )
            for key, value in table.items():
                values[section][key] = (value, str(path))
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == ENV_CONFIG:
            continue
        section, _, key = name.removeprefix(ENV_PREFIX).lower().partition("__")
        if section not in _SECTIONS:
            raise ConfigError(
                f"{name}: [{section}] is not a section; known: {', '.join(_SECTIONS)}"
            )
        values[section][key] = (value, f"${name}")
    sections = {name: _build(cls, values[name]) for name, cls in _SECTIONS.items()}
    if sections["site"].exchange_rates and not sections["site"].currency:
        raise ConfigError(
            "[site] exchange_rates convert into the site's currency: set [site] currency too"
        )
    if sections["venue"].share:
        _check_sharing(sections["site"], sections["mqtt"])
    return Settings(**sections, source=str(path) if path else "defaults")


def _check_sharing(site: SiteSettings, mqtt: MqttSettings) -> None:
    if not site.venue:
        raise ConfigError(
            "[venue] share = true needs [site] venue: set it to the venue's id, the same at "
            "every agent of the venue"
        )
    if mqtt.topic == "#":
        # Ingest would take the agents' share documents for device events: dead letters.
        raise ConfigError(
            '[venue] share = true needs [mqtt] topic = "sites/{site}/devices/+/events": '
            'with "#" the agent would take the venue\'s share documents as device events'
        )


def _build(cls: type[Any], given: dict[str, tuple[object, str]]) -> Any:
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    section = next(name for name, c in _SECTIONS.items() if c is cls)
    chosen: dict[str, object] = {}
    for key, (raw, where) in given.items():
        if key not in known:
            raise ConfigError(
                f"[{section}] {key} in {where} is not a setting; known: {', '.join(known)}"
            )
        rule: _Rule = known[key].metadata["rule"]
        value = _convert(raw, hints[key], where, f"{section}.{key}", rule.allowed)
        if not rule.check(value):
            # A secret that fails its rule is still a secret: the message does not repeat it.
            got = f"{len(str(raw))} characters (not shown)" if hints[key] is Secret else f"{raw!r}"
            raise ConfigError(f"[{section}] {key} in {where} must be {rule.allowed}, got {got}")
        chosen[key] = value
    return cls(**chosen)
