"""Pulling model releases from central (httpx): the newest manifest, then its file, then the
registry's checks (`edge_agent.adapters.models.Models.install`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.config import Settings
from edge_agent.core.releases import MAX_MODEL_BYTES, Manifest, parse
from edge_agent.errors import ConfigError, PullError
from edge_agent.serving.models import Models, Shadow
from edge_agent.store.registry import Entry


@dataclass(frozen=True, slots=True)
class Known:
    """The newest release is one this agent has already judged."""

    entry: Entry


def publisher(settings: Settings) -> Ed25519PublicKey:
    """The pinned key every release must be signed with.

    Raises:
        ConfigError: none is configured.
    """
    if not settings.models.publisher_key:
        raise ConfigError(
            "[models] publisher_key is empty: no release can be trusted. Set it to the public "
            "key `edge-agent-collector keygen` printed"
        )
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(settings.models.publisher_key))


def pull(
    settings: Settings,
    models: Models,
    name: str,
    client: httpx.Client,
    now_ms: int,
    shadow: Shadow | None = None,
) -> Entry | Known:
    """Fetch the newest release of ``name`` and install it unless already judged.

    Raises:
        ConfigError: no collector or no publisher key is configured.
        PullError: central cannot be reached or has no such release.
        StorageError: the registry cannot be written.
    """
    key = publisher(settings)
    if not settings.sync.url:
        raise ConfigError("[sync] url is empty: there is no central to pull releases from")
    base = f"{settings.sync.url.rstrip('/')}/v1/models/{name}"
    headers = {"Authorization": f"Bearer {settings.sync.token}"}
    manifest_raw = _get(client, f"{base}/latest", headers)
    manifest = parse(manifest_raw)
    if not isinstance(manifest, Manifest):
        raise PullError(f"central's newest release of {name} is unreadable: {manifest.reason}")
    for entry in models.entries():
        if (entry.name, entry.version) == (manifest.name, manifest.version):
            return Known(entry)
    model = _get(client, f"{base}/{manifest.version}/model.onnx", headers, MAX_MODEL_BYTES + 1)
    return models.install(manifest_raw, model, key, now_ms, shadow)


def _get(client: httpx.Client, url: str, headers: dict[str, str], limit: int = 8 << 20) -> bytes:
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise PullError(f"GET {url}: HTTP {response.status_code}: {response.text[:300]}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    # Past the limit it is refused anyway: stop reading rather than fill memory.
                    break
            return bytes(body)
    except httpx.HTTPError as exc:
        raise PullError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
