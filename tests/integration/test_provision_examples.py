"""The examples in provisioning/ are what provisioning writes today."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "provisioning" / "example-site"


def test_the_example_site_matches_what_provision_init_writes(tmp_path: Path) -> None:
    site, data = tmp_path / "site", tmp_path / "data"
    done = cli(
        "provision", "init", "--out", str(site), "--site", "shop-12",
        "--broker-host", "shop12.local", "--device", "till-1", "--device", "door",
        "--data-dir", str(data), "--collector-url", "https://central.example/",
        "--site-token", "example-token",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def as_example(text: str) -> str:
        return text.replace(str(site), "/etc/edge-agent/site").replace(
            str(data), "/var/lib/edge-agent"
        )

    for name in ("broker/mosquitto.conf", "broker/acl", "agent/agent.toml"):
        assert as_example((site / name).read_text()) == (EXAMPLE / name).read_text(), name
    bundle = json.loads((site / "devices/till-1/device.json").read_text())
    example = json.loads((EXAMPLE / "devices/till-1/device.json").read_text())
    assert {**bundle, "password": example["password"]} == example
