"""Model releases: what a signed manifest proves, and every way a release is refused."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.core.releases import (
    MAX_MODEL_BYTES,
    Manifest,
    Refused,
    check,
    not_worse,
    parse,
    release,
)

KEY = Ed25519PrivateKey.generate()
MODEL = b"\x08\x07" + bytes(range(256)) * 40
UNSIGNED = Manifest(
    name="next-basket",
    version="2026.11.26-1",
    created="2026-11-26T15:00:00Z",
    vocabulary=("p1", "p2", "p3"),
    sha256="",
    size=0,
    metrics={"recall@10": 0.14, "ndcg@10": 0.12},
)


def _signed(manifest: Manifest = UNSIGNED, model: bytes = MODEL) -> bytes:
    return orjson.dumps(release(manifest, model, KEY).document())


def test_a_signed_release_of_the_described_file_passes() -> None:
    manifest = check(_signed(), MODEL, KEY.public_key())
    assert isinstance(manifest, Manifest)
    assert manifest.vocabulary == ("p1", "p2", "p3")
    assert manifest.metrics == {"recall@10": 0.14, "ndcg@10": 0.12}


@pytest.mark.parametrize(
    ("manifest", "model", "key", "reason"),
    [
        (_signed(), MODEL[:-10], KEY, "truncated"),
        (_signed(), MODEL[:-1] + b"\x00", KEY, "sha256"),
        (_signed(), MODEL, Ed25519PrivateKey.generate(), "signature"),
        (
            orjson.dumps({**orjson.loads(_signed()), "metrics": {"recall@10": 0.9}}),
            MODEL,
            KEY,
            "signature",
        ),
        (b"{not json", MODEL, KEY, "not JSON"),
        (b"[]", MODEL, KEY, "object"),
        (orjson.dumps({"name": "x"}), MODEL, KEY, "malformed"),
        (
            _signed(dataclasses.replace(UNSIGNED, vocabulary=("p1", "p1"))),
            MODEL,
            KEY,
            "twice",
        ),
        (_signed(dataclasses.replace(UNSIGNED, name="../../etc")), MODEL, KEY, "file name"),
        (_signed(model=b"x" * (MAX_MODEL_BYTES + 1)), b"x" * (MAX_MODEL_BYTES + 1), KEY, "limit"),
    ],
)
def test_a_bad_release_is_refused_with_its_reason(
    manifest: bytes, model: bytes, key: Ed25519PrivateKey, reason: str
) -> None:
    refused = check(manifest, model, key.public_key())
    assert isinstance(refused, Refused)
    assert reason in refused.reason


def test_a_signature_that_is_not_base64_is_refused() -> None:
    doc = {**orjson.loads(_signed()), "signature": "%%%"}
    refused = check(orjson.dumps(doc), MODEL, KEY.public_key())
    assert isinstance(refused, Refused)
    assert "signature" in refused.reason


def test_parse_rejects_non_numeric_metrics() -> None:
    doc = {**orjson.loads(_signed()), "metrics": {"recall@10": "high"}}
    assert isinstance(parse(orjson.dumps(doc)), Refused)


def test_a_candidate_is_promoted_only_when_not_worse() -> None:
    current = {"recall@10": 0.14, "ndcg@10": 0.12}
    on = ("recall@10", "ndcg@10")
    assert not_worse({"recall@10": 0.14, "ndcg@10": 0.121}, current, on) is None
    held = not_worse({"recall@10": 0.139, "ndcg@10": 0.2}, current, on)
    assert isinstance(held, Refused)
    assert "recall@10" in held.reason
    assert isinstance(not_worse({}, current, on), Refused)
    assert not_worse({"recall@10": 0.1}, {}, on) is None  # nothing to compare against
