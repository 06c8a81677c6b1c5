"""Central's credentials without I/O: scrypt password hashes, digests, roles, session lifetimes,
where a login may lead and which passwords may be set."""

from __future__ import annotations

import base64
import hashlib

import pytest

from edge_agent.collector.credentials import (
    ABSOLUTE_MS,
    IDLE_MS,
    MAX_PASSWORD,
    MIN_PASSWORD,
    SessionTimes,
    csrf_token,
    digest,
    hash_password,
    lesser,
    local_path,
    may,
    password_problem,
    verify_password,
)

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password
SALT = bytes(range(16))


def test_a_hash_verifies_its_password_and_no_other() -> None:
    stored = hash_password(PASSWORD, SALT)
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + " ", stored)
    assert not verify_password(PASSWORD.upper(), stored)
    assert not verify_password("", stored)
    assert PASSWORD not in stored


def test_a_hash_is_salted_scrypt_with_its_parameters() -> None:
    stored = hash_password(PASSWORD, SALT)
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert base64.b64decode(salt) == SALT
    expected = hashlib.scrypt(PASSWORD.encode(), salt=SALT, n=16384, r=8, p=1, dklen=32)
    assert base64.b64decode(key) == expected
    # Another salt, another hash: equal passwords do not show in the table.
    assert hash_password(PASSWORD, bytes(16)) != stored


def test_a_hash_made_with_other_parameters_still_verifies() -> None:
    """Raising the cost later leaves the hashes already stored readable."""
    key = hashlib.scrypt(PASSWORD.encode(), salt=SALT, n=1024, r=4, p=2, dklen=24)
    stored = f"scrypt$1024$4$2${base64.b64encode(SALT).decode()}${base64.b64encode(key).decode()}"
    assert verify_password(PASSWORD, stored)
    assert not verify_password("another password", stored)


_GOOD = hash_password(PASSWORD, SALT).split("$")


def _with(index: int, value: str) -> str:
    parts = list(_GOOD)
    parts[index] = value
    return "$".join(parts)


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("", id="empty"),
        pytest.param(PASSWORD, id="plain-text"),
        pytest.param("$".join(_GOOD[:5]), id="too-few-fields"),
        pytest.param("$".join([*_GOOD, "x"]), id="too-many-fields"),
        pytest.param(_with(0, "bcrypt"), id="another-scheme"),
        pytest.param(_with(1, "three"), id="n-not-a-number"),
        pytest.param(_with(1, "1000"), id="n-not-a-power-of-two"),
        pytest.param(_with(1, "-16384"), id="n-negative"),
        pytest.param(_with(1, str(2**70)), id="n-huge"),
        pytest.param(_with(1, str(2**24)), id="n-over-64-mb"),
        pytest.param(_with(3, str(2**40)), id="p-huge"),
        pytest.param(_with(4, "not base64!"), id="salt-not-base64"),
        pytest.param(_with(5, "not base64!"), id="key-not-base64"),
        pytest.param(_with(5, ""), id="key-empty"),
        pytest.param(_with(5, base64.b64encode(bytes(32)).decode()), id="key-wrong"),
    ],
)
def test_a_damaged_or_hostile_stored_form_never_matches(stored: str) -> None:
    assert not verify_password(PASSWORD, stored)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        pytest.param("", f"at least {MIN_PASSWORD}", id="empty"),
        pytest.param("x" * (MIN_PASSWORD - 1), f"at least {MIN_PASSWORD}", id="one-short"),
        pytest.param("x" * (MAX_PASSWORD + 1), f"at most {MAX_PASSWORD}", id="too-long"),
        pytest.param("x" * MIN_PASSWORD, None, id="shortest"),
        pytest.param("x" * MAX_PASSWORD, None, id="longest"),
        pytest.param("pässwörd-ünïcode", None, id="unicode"),
    ],
)
def test_password_problems(password: str, problem: str | None) -> None:
    found = password_problem(password)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_digest_is_the_hex_sha256() -> None:
    assert digest("token") == hashlib.sha256(b"token").hexdigest()


def test_the_csrf_token_is_the_sessions_own() -> None:
    assert csrf_token("session-a") == csrf_token("session-a")
    assert csrf_token("session-a") != csrf_token("session-b")
    # It is not the id, nor the id's stored digest: neither the cookie nor the table gives it.
    assert csrf_token("session-a") not in ("session-a", digest("session-a"))


def test_roles() -> None:
    assert may("admin", "viewer")
    assert may("admin", "admin")
    assert may("viewer", "viewer")
    assert not may("viewer", "admin")
    assert lesser("admin", "viewer") == "viewer"
    assert lesser("viewer", "admin") == "viewer"
    assert lesser("admin", "admin") == "admin"


def test_a_session_ends_idle_or_at_its_absolute_end() -> None:
    assert SessionTimes(0, 0).expires_ms() == IDLE_MS
    used = SessionTimes(0, 3 * 3600 * 1000)
    assert used.expires_ms() == 3 * 3600 * 1000 + IDLE_MS
    # Used an hour before its seventh day ends: it ends with the seventh day all the same.
    late = SessionTimes(0, ABSOLUTE_MS - 3600 * 1000)
    assert late.expires_ms() == ABSOLUTE_MS


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(None, "/", id="none"),
        pytest.param("", "/", id="empty"),
        pytest.param("/", "/", id="root"),
        pytest.param("/v1/fleet?x=1#top", "/v1/fleet?x=1#top", id="path-query-fragment"),
        pytest.param("https://evil.example/", "/", id="absolute-url"),
        pytest.param("//evil.example/", "/", id="scheme-relative"),
        pytest.param("/\\evil.example", "/", id="backslash"),
        pytest.param("\\\\evil.example", "/", id="backslashes"),
        pytest.param("/\t/evil.example", "/", id="tab"),
        pytest.param("/\n/evil.example", "/", id="newline"),
        pytest.param("/\x7f", "/", id="delete"),
        pytest.param("javascript:alert(1)", "/", id="javascript"),
        pytest.param("evil.example", "/", id="relative"),
    ],
)
def test_a_login_leads_only_to_this_server(target: str | None, expected: str) -> None:
    assert local_path(target) == expected
