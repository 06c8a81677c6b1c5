"""Settings from defaults, TOML and the environment, and the errors an installer sees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.config import Secret, load_settings
from edge_agent.errors import ConfigError
from edge_agent.service import ServiceManager, service_manager


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.mqtt.port == 1883
    assert settings.mqtt.receive_maximum == 1000
    assert settings.database == Path("data/edge-agent.db")
    assert settings.mqtt.effective_client_id("shop-1") == "edge-agent-shop-1"


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[site]\nid = "shop-1"\n[mqtt]\nport = 1884\nhost = "broker"\n[store]\npath = "/x/y.db"\n'
    )
    settings = load_settings(
        path, environ={"EDGE_AGENT_MQTT__PORT": "1885", "EDGE_AGENT_INGEST__COMMIT_MAX_MS": "5"}
    )
    assert settings.site.id == "shop-1"
    assert settings.mqtt.host == "broker"
    assert settings.mqtt.port == 1885
    assert settings.ingest.commit_max_ms == 5
    assert settings.database == Path("/x/y.db")
    assert settings.source == str(path)


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[site]\nid = "from-env"\n')
    assert load_settings(environ={"EDGE_AGENT_CONFIG": str(path)}).site.id == "from-env"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param(
            {"EDGE_AGENT_MQTT__PORT": "abc"},
            "[mqtt] port in $EDGE_AGENT_MQTT__PORT must be 1-65535, got 'abc'",
            id="port-text",
        ),
        pytest.param(
            {"EDGE_AGENT_MQTT__PORT": "70000"}, "must be 1-65535, got '70000'", id="port-range"
        ),
        pytest.param({"EDGE_AGENT_SITE__ID": "a/b"}, "[site] id", id="site-slash"),
        # Ids are ASCII, as the collector's API publishes them (letters a-z, A-Z).
        pytest.param({"EDGE_AGENT_SITE__ID": "kauppa-ä"}, "letters (a-z, A-Z)", id="site-accent"),
        pytest.param({"EDGE_AGENT_SITE__VENUE": "hall\n"}, "[site] venue", id="venue-newline"),
        pytest.param({"EDGE_AGENT_STORE__SYNCHRONOUS": "OFF"}, "FULL or NORMAL", id="synchronous"),
        pytest.param(
            {"EDGE_AGENT_MQTT__NOPE": "1"},
            "[mqtt] nope in $EDGE_AGENT_MQTT__NOPE is not a setting",
            id="unknown-key",
        ),
        pytest.param(
            {"EDGE_AGENT_BROKER__PORT": "1"}, "[broker] is not a section", id="unknown-section"
        ),
        pytest.param(
            {"EDGE_AGENT_INGEST__MAX_DEPTH": "1.5"}, "[ingest] max_depth", id="float-for-int"
        ),
        pytest.param(
            {"EDGE_AGENT_SITE__CURRENCY": "TWD", "EDGE_AGENT_SITE__EXCHANGE_RATES": "EUR=-2"},
            "[site] exchange_rates in $EDGE_AGENT_SITE__EXCHANGE_RATES must be CODE=rate",
            id="negative-rate",
        ),
        pytest.param(
            {"EDGE_AGENT_SITE__EXCHANGE_RATES": "EUR=34.5"},
            "[site] exchange_rates convert into the site's currency: set [site] currency too",
            id="rates-without-currency",
        ),
    ],
)
def test_bad_environment_values_name_key_value_and_rule(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "[mqtt]\nport = true\n", "port in {path} must be 1-65535, got True", id="bool-for-int"
        ),
        pytest.param("[mqtt]\nport = 0\n", "port in {path} must be 1-65535, got 0", id="zero"),
        pytest.param("[mqtt\n", "is not valid TOML", id="broken-toml"),
        pytest.param("site = 1\n", "[site] in {path} is not a section", id="not-a-table"),
        pytest.param("[log]\nlevel = 'LOUD'\n", "DEBUG, INFO, WARNING or ERROR", id="level"),
    ],
)
def test_bad_file_values_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert message.format(path=path) in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_secrets_do_not_show() -> None:
    password = "hunter2"  # noqa: S105 (a test value)
    settings = load_settings(environ={"EDGE_AGENT_MQTT__PASSWORD": password})
    assert settings.mqtt.password == password
    assert password not in repr(settings)
    assert repr(Secret("")) == "Secret('')"


def test_disk_floor_and_metrics_token_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.store.min_free_mb == 200
    assert settings.http.metrics_token == ""
    assert settings.http.loopback_only()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        pytest.param("127.0.0.1", True, id="v4"),
        pytest.param("127.0.0.2", True, id="v4-other"),
        pytest.param("::1", True, id="v6"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("0.0.0.0", False, id="every-v4"),
        pytest.param("::", False, id="every-v6"),
        pytest.param("192.168.1.20", False, id="lan"),
        pytest.param("agent.local", False, id="a-name"),
    ],
)
def test_loopback_only(host: str, loopback: bool) -> None:
    settings = load_settings(environ={"EDGE_AGENT_HTTP__HOST": host})
    assert settings.http.loopback_only() is loopback


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("short-but-secret", id="16-is-enough"),
        pytest.param("x" * 256, id="longest"),
    ],
)
def test_a_good_metrics_token_is_kept_and_not_shown(token: str) -> None:
    settings = load_settings(environ={"EDGE_AGENT_HTTP__METRICS_TOKEN": token})
    assert settings.http.metrics_token == token
    assert token not in repr(settings)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("too-short-pw", id="too-short"),
        pytest.param("x" * 257, id="too-long"),
        pytest.param("has a space in it!", id="space"),
        pytest.param("newline\ninside-the-token", id="newline"),
        pytest.param("non-ascii-é-token-value", id="non-ascii"),
    ],
)
def test_a_bad_metrics_token_is_refused_without_repeating_it(token: str) -> None:
    with pytest.raises(ConfigError, match="metrics_token") as caught:
        load_settings(environ={"EDGE_AGENT_HTTP__METRICS_TOKEN": token})
    assert token not in str(caught.value)
    assert "not shown" in str(caught.value)


@pytest.mark.parametrize("value", ["-1", "lots"])
def test_a_bad_disk_floor_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[store\] min_free_mb"):
        load_settings(environ={"EDGE_AGENT_STORE__MIN_FREE_MB": value})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, ServiceManager("", 0), id="not-under-systemd"),
        pytest.param(
            {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"},
            ServiceManager("/run/systemd/notify", 30_000_000),
            id="notify-and-watchdog",
        ),
        pytest.param(
            {"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify"},
            ServiceManager("@/org/freedesktop/systemd1/notify", 0),
            id="abstract-no-watchdog",
        ),
        pytest.param(
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
            ServiceManager("/n", 0),
            id="watchdog-of-another-process",
        ),
        pytest.param(
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())},
            ServiceManager("/n", 30_000_000),
            id="watchdog-of-this-process",
        ),
        pytest.param(
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "-5"}, ServiceManager("/n", 0), id="bad-usec"
        ),
    ],
)
def test_service_manager_reads_what_systemd_sets(
    environ: dict[str, str], expected: ServiceManager
) -> None:
    assert service_manager(environ) == expected


def test_exchange_rates_convert_into_the_site_currency() -> None:
    site = load_settings(
        environ={
            "EDGE_AGENT_SITE__CURRENCY": "TWD",
            "EDGE_AGENT_SITE__EXCHANGE_RATES": "EUR=34.5, USD=31.6",
        }
    ).site
    assert site.money.priced(2.0, "EUR", "TWD") == 69.0
    assert site.money.priced(2.0, "JPY", "TWD") is None
