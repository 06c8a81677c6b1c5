"""What central's accounts are made of, without I/O: roles and what each may do, password
hashes (scrypt), token and session digests, session lifetimes, where a login may lead.

The caller gives the randomness (salts, tokens) and the time: nothing here reads a clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit

Role = Literal["viewer", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

#: scrypt's cost: 16 MB and about 50 ms a hash on a small server (RFC 7914's interactive
#: figures). Kept with each hash, so raising them later leaves older hashes readable.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_KEY_BYTES = 32
#: Four times what the parameters above need (128 * r * N = 16 MB): a stored hash whose
#: parameters ask for more is refused rather than computed.
_MAX_MEMORY = 64 * 1024 * 1024
MIN_PASSWORD = 12
#: Longer passwords are refused: scrypt hashes all of it, and nobody types more.
MAX_PASSWORD = 1024

#: A session ends after 8 hours unused (a working day's gap), and 7 days after its login
#: however much it is used: a lost laptop's session does not last.
IDLE_MS = 8 * 3600 * 1000
ABSOLUTE_MS = 7 * 24 * 3600 * 1000


def may(role: Role, needed: Role) -> bool:
    """Whether ``role`` may do what ``needed`` may: an admin may do all a viewer may."""
    return ROLES.index(role) >= ROLES.index(needed)


def lesser(a: Role, b: Role) -> Role:
    """The lesser of two roles (a token's role is at most its user's, even after a change)."""
    return a if may(b, a) else b


def password_problem(password: str) -> str | None:
    """Why ``password`` may not be set, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password may have at most {MAX_PASSWORD} characters"
    return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hash_password(password: str, salt: bytes) -> str:
    """The stored form of ``password``: ``scrypt$N$r$p$salt$key`` (base64), salted with
    ``salt`` (16 random bytes, new for every password)."""
    key = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=_MAX_MEMORY,
        dklen=_KEY_BYTES,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` (`hash_password`'s form) was made from.
    A stored form that cannot be read, or asks for more than 64 MB, never matches."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        computed = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAX_MEMORY,
            dklen=len(expected),
        )
    # hashlib.scrypt raises TypeError, not ValueError, for a negative or huge N.
    except (ValueError, TypeError, OverflowError):
        return False
    return hmac.compare_digest(computed, expected)


def digest(secret: str) -> str:
    """The hex sha256 of a token or session id: all that is stored of it."""
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: derived from its id, so only its holder can know it,
    and nothing more is stored."""
    return hmac.new(session_id.encode(), b"edge-collector csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """When a session began and was last used (milliseconds since the epoch)."""

    created_ms: int
    last_seen_ms: int

    def expires_ms(self) -> int:
        """When it ends unless used again: idle 8 hours, and 7 days after it began at most."""
        return min(self.last_seen_ms + IDLE_MS, self.created_ms + ABSOLUTE_MS)


def local_path(target: str | None) -> str:
    """Where a login may send the browser: ``target`` if it is a path on this server,
    else ``/`` (never another origin: ``//evil.example``, ``https://...``, ``/\\evil``)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target
