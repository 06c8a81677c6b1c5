"""Model releases: the manifest, its Ed25519 signature, and the checks a release must pass
before the agent will load it. Pure: bytes and keys in, a manifest or a refusal out.

A release is two files: the ONNX model and ``manifest.json``. The manifest names the model
(name, version, when it was made), its item vocabulary (index -> item id), its inputs and
outputs, a summary of its training data, its offline metrics, the model file's size and
sha256, and a signature over all of that by the publisher's Ed25519 key. The agent pins the
publisher's public key; a release signed by anything else is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: A model file larger than this is refused: small shared hardware.
MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a model release says about itself."""

    name: str
    version: str
    created: str
    vocabulary: tuple[str, ...]
    sha256: str
    size: int
    inputs: Mapping[str, object] = field(default_factory=dict)
    outputs: Mapping[str, object] = field(default_factory=dict)
    training: Mapping[str, object] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    signature: str = ""

    def document(self) -> dict[str, object]:
        """The manifest as JSON-ready values (what ``manifest.json`` holds)."""
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "vocabulary": list(self.vocabulary),
            "sha256": self.sha256,
            "size": self.size,
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "training": dict(self.training),
            "metrics": dict(self.metrics),
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a release cannot be used; the message says what to do about it."""

    reason: str


def signed_bytes(document: Mapping[str, object]) -> bytes:
    """The bytes a signature covers: the canonical manifest without its signature."""
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def release_unsigned(unsigned: Manifest, model: bytes) -> Manifest:
    """``unsigned`` completed with the model's size and sha256 (a model trained here)."""
    return dataclasses.replace(
        unsigned, sha256=hashlib.sha256(model).hexdigest(), size=len(model), signature=""
    )


def release(unsigned: Manifest, model: bytes, key: Ed25519PrivateKey) -> Manifest:
    """``unsigned`` completed with the model's size and sha256, and signed by ``key`` (the
    publisher's side of `check`)."""
    described = release_unsigned(unsigned, model)
    signature = key.sign(signed_bytes(described.document()))
    return dataclasses.replace(described, signature=base64.b64encode(signature).decode())


def parse(raw: bytes) -> Manifest | Refused:
    """The manifest in ``raw``, or why it is not one."""
    if len(raw) > MAX_MANIFEST_BYTES:
        return Refused(f"the manifest is {len(raw)} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Refused(f"the manifest is not JSON: {exc}")
    if not isinstance(doc, dict):
        return Refused("the manifest must be a JSON object")
    problems = []
    for key, kind in (
        ("name", str),
        ("version", str),
        ("created", str),
        ("vocabulary", list),
        ("sha256", str),
        ("size", int),
        ("signature", str),
    ):
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            problems.append(f"{key} must be a {kind.__name__}")
    for key in ("inputs", "outputs", "training", "metrics"):
        if not isinstance(doc.get(key, {}), dict):
            problems.append(f"{key} must be an object")
    if problems:
        return Refused("the manifest is malformed: " + "; ".join(problems))
    vocabulary = doc["vocabulary"]
    if not vocabulary or not all(isinstance(v, str) and v for v in vocabulary):
        return Refused("the manifest's vocabulary must be a non-empty list of item ids")
    if len(set(vocabulary)) != len(vocabulary):
        return Refused("the manifest's vocabulary lists an item twice")
    if not _NAME.fullmatch(doc["name"]) or not _VERSION.fullmatch(doc["version"]):
        return Refused("the manifest's name or version has characters a file name cannot hold")
    metrics = doc.get("metrics", {})
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()):
        return Refused("the manifest's metrics must be numbers")
    return Manifest(
        doc["name"],
        doc["version"],
        doc["created"],
        tuple(vocabulary),
        doc["sha256"],
        doc["size"],
        doc.get("inputs", {}),
        doc.get("outputs", {}),
        doc.get("training", {}),
        {k: float(v) for k, v in metrics.items()},
        doc["signature"],
    )


def check(
    manifest_raw: bytes, model: bytes, publisher: Ed25519PublicKey | None
) -> Manifest | Refused:
    """The release's manifest when the model file is the one it describes and the publisher
    signed it; otherwise the first reason it is refused. ``publisher`` None: a model this
    agent trained itself, which never left the box and carries no signature."""
    manifest = parse(manifest_raw)
    if isinstance(manifest, Refused):
        return manifest
    if len(model) > MAX_MODEL_BYTES:
        return Refused(f"the model is {len(model)} bytes, over the {MAX_MODEL_BYTES} limit")
    if len(model) != manifest.size:
        return Refused(
            f"the model file is {len(model)} bytes but the manifest says {manifest.size}: "
            "it is truncated or not the file the release describes"
        )
    digest = hashlib.sha256(model).hexdigest()
    if digest != manifest.sha256:
        return Refused(
            f"the model file's sha256 is {digest}, the manifest says {manifest.sha256}: "
            "the file was altered or damaged"
        )
    if publisher is None:
        return manifest
    try:
        signature = base64.b64decode(manifest.signature, validate=True)
        publisher.verify(signature, signed_bytes(orjson.loads(manifest_raw)))
    except (InvalidSignature, ValueError):
        return Refused(
            "the manifest's signature does not verify against the pinned publisher key: "
            "the release was not made by the publisher, or was changed after signing"
        )
    return manifest


def not_worse(
    candidate: Mapping[str, float], current: Mapping[str, float], on: tuple[str, ...]
) -> Refused | None:
    """None when the candidate scores at least as well as the current model on every metric in
    ``on`` (both measured on the same data); else why it is held back."""
    worse = [
        f"{m} {candidate.get(m, float('-inf')):.4f} < {current[m]:.4f}"
        for m in on
        if m in current and candidate.get(m, float("-inf")) < current[m]
    ]
    if worse:
        return Refused("worse than the current model on " + ", ".join(worse))
    return None
