"""Central's accounts on SQLite and PostgreSQL: the ``users`` commands through the CLI's main,
then signing in and out in-process (the form's token, Origin, the throttle, cookies), API
tokens and the admin token, roles, CSRF, and sessions that end (logout, a removed user, a new
password, expiry)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.collector.app import create_app
from edge_agent.collector.auth import SESSION_COOKIE
from edge_agent.collector.cli import main
from edge_agent.collector.credentials import Role, digest, hash_password, verify_password
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.web.login import LOGIN_COOKIE, WRONG
from tests.collector_helpers import ADMIN_TOKEN, rows
from tests.inprocess import another_client, in_process

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "a long enough password"  # noqa: S105 - the tests' own user
#: The in-process client's own origin.
ORIGIN = "http://testserver"


def cli(capsys: pytest.CaptureFixture[str], target: str, *args: str) -> tuple[int, str, str]:
    """Run ``edge-agent-collector users ARGS --db target`` through its main: exit code,
    stdout, stderr."""
    capsys.readouterr()
    code = main(["users", *args, "--db", target])
    out, err = capsys.readouterr()
    return code, out, err


def add_user(store: CentralStore, name: str, role: Role, password: str = PASSWORD) -> None:
    store.add_user(name, role, hash_password(password, secrets.token_bytes(16)))


@pytest.fixture
def central(store: CentralStore) -> Iterator[httpx.Client]:
    """A client of the collector app over ``store``, in this process."""
    with in_process(create_app(store, ADMIN_TOKEN)) as http:
        yield http


def login_form(client: httpx.Client, target: str = "/") -> str:
    """Open the login page as a browser does; the form's token."""
    page = client.get("/login", params={"next": target})
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def sign_in(
    client: httpx.Client,
    user: str,
    password: str = PASSWORD,
    *,
    target: str = "/",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Open the login page and post its form, from this collector's own page."""
    token = login_form(client, target)
    form = {"csrf": token, "next": target, "user": user, "password": password}
    return client.post("/login", data=form, headers={"Origin": ORIGIN, **(headers or {})})


def session_of(client: httpx.Client) -> str:
    session = client.cookies.get(SESSION_COOKIE)
    assert session, "no session cookie"
    return session


def csrf_of(client: httpx.Client) -> str:
    """The CSRF token every signed-in page carries."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/overview").text)
    assert found is not None
    return found.group(1)


def me(client: httpx.Client, **kwargs: Any) -> httpx.Response:
    return client.get("/v1/me", **kwargs)


def with_cookie(client: httpx.Client, session: str) -> httpx.Client:
    """Another client of the same app, sending ``session`` as its cookie and nothing else."""
    other = another_client(client, "127.0.0.1")
    other.headers["Cookie"] = f"{SESSION_COOKIE}={session}"
    return other


# --- the users commands --------------------------------------------------------------------


def test_users_add_list_password_and_remove_through_the_cli(
    capsys: pytest.CaptureFixture[str], store: CentralStore, target: str, tmp_path: Path
) -> None:
    code, out, err = cli(capsys, target, "add", "ann", "--role", "viewer")
    assert code == 0, err
    made = out.strip()
    assert len(made) >= 12
    assert "shown only now" in err
    found = store.login_of("ann")
    assert found is not None
    assert found.role == "viewer"
    assert verify_password(made, found.password)
    # Only a scrypt hash is kept, never the password.
    [(stored,)] = rows(target, "SELECT password FROM users WHERE name = ?", ("ann",))
    assert stored.startswith("scrypt$")
    assert made not in stored

    chosen = tmp_path / "password"
    chosen.write_text(PASSWORD + "\nignored second line\n")
    code, out, err = cli(
        capsys, target, "add", "bob", "--role", "admin", "--password-file", str(chosen)
    )
    assert (code, out) == (0, "")
    bob = store.login_of("bob")
    assert bob is not None
    assert bob.role == "admin"
    assert verify_password(PASSWORD, bob.password)

    code, out, _ = cli(capsys, target, "list")
    assert code == 0
    listed = [line.split("\t") for line in out.splitlines()]
    assert [(line[0], line[1], line[3]) for line in listed] == [
        ("ann", "viewer", "0 token(s)"),
        ("bob", "admin", "0 token(s)"),
    ]

    code, out, err = cli(capsys, target, "password", "ann")
    assert code == 0, err
    again = store.login_of("ann")
    assert again is not None
    assert verify_password(out.strip(), again.password)
    assert not verify_password(made, again.password)

    code, _, err = cli(capsys, target, "remove", "ann")
    assert code == 0, err
    assert store.login_of("ann") is None
    assert [u.name for u in store.users()] == ["bob"]
    # Each change is in the audit trail, without a password.
    actions = [a for (a,) in rows(target, "SELECT action FROM audit ORDER BY id")]
    assert actions == ["user_added", "user_added", "user_password_set", "user_removed"]
    for (detail,) in rows(target, "SELECT detail FROM audit"):
        assert made not in detail
        assert PASSWORD not in detail


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("add", "ann", "--role", "viewer"), "user 'ann' exists", id="taken"),
        pytest.param(("add", "an n", "--role", "viewer"), "use 1-64 letters", id="bad-name"),
        pytest.param(("add", "x" * 65, "--role", "viewer"), "use 1-64 letters", id="long-name"),
        pytest.param(("add", "(admin token)", "--role", "admin"), "use 1-64", id="admin-name"),
        pytest.param(("remove", "nobody"), "no user 'nobody'", id="remove-unknown"),
        pytest.param(("password", "nobody"), "no user 'nobody'", id="password-unknown"),
        pytest.param(("token", "nobody", "--label", "bi"), "no user 'nobody'", id="token-unknown"),
        pytest.param(
            ("token", "ann", "--label", "bi", "--role", "admin"),
            "at most that",
            id="token-above-the-user",
        ),
        pytest.param(("token", "ann", "--label", "a b"), "label 'a b'", id="token-bad-label"),
    ],
)
def test_users_commands_refuse_with_one_line(
    capsys: pytest.CaptureFixture[str],
    store: CentralStore,
    target: str,
    args: tuple[str, ...],
    message: str,
) -> None:
    add_user(store, "ann", "viewer")
    code, out, err = cli(capsys, target, *args)
    assert code == 2
    assert out == ""
    assert err.startswith("edge-agent-collector: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("short\n", "at least 12 characters", id="short"),
        pytest.param("", "at least 12 characters", id="empty"),
        pytest.param("x" * 2000, "at most 1024 characters", id="long"),
    ],
)
def test_a_password_file_with_a_bad_password_is_refused(
    capsys: pytest.CaptureFixture[str],
    store: CentralStore,
    target: str,
    tmp_path: Path,
    content: str,
    message: str,
) -> None:
    chosen = tmp_path / "password"
    chosen.write_text(content)
    code, _, err = cli(
        capsys, target, "add", "ann", "--role", "viewer", "--password-file", str(chosen)
    )
    assert code == 2
    assert message in err
    assert store.users() == []


def test_a_missing_password_file_is_named(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    code, _, err = cli(
        capsys, target, "add", "ann", "--role", "viewer", "--password-file", str(tmp_path / "no")
    )
    assert code == 2
    assert f"cannot read the password file {tmp_path / 'no'}" in err


def test_users_token_makes_a_bearer_token_kept_as_its_sha256(
    capsys: pytest.CaptureFixture[str], store: CentralStore, target: str, central: httpx.Client
) -> None:
    add_user(store, "bob", "admin")
    code, out, err = cli(capsys, target, "token", "bob", "--label", "bi-tool")
    assert code == 0, err
    token = out.strip()
    assert "Authorization: Bearer" in err
    [(kept, role)] = rows(target, "SELECT token_sha256, role FROM api_tokens")
    assert (kept, role) == (digest(token), "admin")
    answer = me(central, headers={"Authorization": f"Bearer {token}"})
    assert answer.json() == {"name": "bob", "role": "admin"}

    code, _, err = cli(capsys, target, "token", "bob", "--label", "bi-tool")
    assert code == 2
    assert "has a token labelled 'bi-tool'" in err
    code, out, _ = cli(capsys, target, "list")
    assert "1 token(s)" in out


# --- signing in ----------------------------------------------------------------------------


def test_a_page_sends_the_browser_to_the_login_and_back(
    store: CentralStore, central: httpx.Client
) -> None:
    add_user(store, "ann", "viewer")
    page = central.get("/v1/fleet", headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/v1/fleet"
    # An API call is told, not redirected.
    assert central.get("/v1/fleet").status_code == 401

    signed_in = sign_in(central, "ann", target="/v1/fleet")
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"] == "/v1/fleet"
    assert central.get("/v1/fleet", headers={"Accept": "text/html"}).status_code == 200


def test_login_sets_a_strict_http_only_session_cookie_and_keeps_its_sha256(
    store: CentralStore, central: httpx.Client, target: str
) -> None:
    add_user(store, "ann", "viewer")
    form = central.get("/login")
    [login_cookie] = form.headers.get_list("set-cookie")
    assert login_cookie.startswith(f"{LOGIN_COOKIE}=")
    for flag in ("HttpOnly", "Path=/login", "SameSite=strict"):
        assert flag in login_cookie
    assert "Secure" not in login_cookie  # plain http: a browser would drop a Secure cookie

    signed_in = sign_in(central, "ann")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/"
    cookies = signed_in.headers.get_list("set-cookie")
    [session] = [c for c in cookies if c.startswith(f"{SESSION_COOKIE}=")]
    for flag in ("HttpOnly", "Path=/", "SameSite=strict"):
        assert flag in session
    # Ends with the browser's session; the server ends it sooner (idle 8 h, 7 days at most).
    assert "Max-Age" not in session
    assert "expires" not in session.lower()
    [(kept, user)] = rows(target, "SELECT id_sha256, user_name FROM sessions")
    assert (kept, user) == (digest(session_of(central)), "ann")
    assert me(central).json() == {"name": "ann", "role": "viewer"}

    assert central.get("/").headers["location"] == "/overview"
    home = central.get("/overview")
    assert home.status_code == 200
    assert "Signed in as <strong>ann</strong>" in home.text
    assert "default-src 'none'" in home.headers["content-security-policy"]
    assert home.headers["cache-control"] == "no-store"


def test_behind_an_https_proxy_the_cookies_are_secure(store: CentralStore) -> None:
    add_user(store, "ann", "viewer")
    app = create_app(store, ADMIN_TOKEN, public_url="https://Central.Example:443")
    with in_process(app) as client:
        assert "Secure" in client.get("/login").headers["set-cookie"]
        token = login_form(client)
        form = {"csrf": token, "user": "ann", "password": PASSWORD}
        # The page's own origin is the public one: the address the proxy answers on.
        refused = client.post("/login", data=form, headers={"Origin": ORIGIN})
        assert refused.status_code == 403
        assert "https://central.example" in refused.text
        # httpx keeps a Secure cookie off plain http, as a browser would: give it back.
        signed_in = client.post(
            "/login",
            data=form,
            headers={"Origin": "https://central.example", "Cookie": f"{LOGIN_COOKIE}={token}"},
        )
        assert signed_in.status_code == 303, signed_in.text
        session = signed_in.headers["set-cookie"]
        assert session.startswith(f"{SESSION_COOKIE}=")
        assert "Secure" in session


@pytest.mark.parametrize("user", ["ann", "nobody", "not a name", "x" * 500])
def test_a_wrong_password_or_unknown_user_is_refused_alike(
    store: CentralStore, central: httpx.Client, target: str, user: str
) -> None:
    add_user(store, "ann", "viewer")
    refused = sign_in(central, user, "not the password at all")
    assert refused.status_code == 401
    assert WRONG in refused.text
    assert SESSION_COOKIE not in central.cookies
    # The form again, with a fresh token and the name as typed (escaped).
    assert 'name="csrf"' in refused.text
    assert "<script" not in refused.text
    assert me(central).status_code == 401
    [(detail,)] = rows(target, "SELECT detail FROM audit WHERE action = 'login_failed'")
    assert "not the password" not in detail
    assert rows(target, "SELECT count(*) FROM sessions") == [(0,)]


def test_a_login_form_without_its_token_is_refused(
    store: CentralStore, central: httpx.Client
) -> None:
    add_user(store, "ann", "viewer")
    form = {"user": "ann", "password": PASSWORD}
    no_token = central.post("/login", data=form)
    assert no_token.status_code == 403
    assert "this sign-in form has expired" in no_token.text
    # A token of its own making, without the form's cookie: a page of another site.
    stranger = another_client(central, "127.0.0.1")
    forged = stranger.post("/login", data={**form, "csrf": "forged"})
    assert forged.status_code == 403
    token = login_form(central)
    wrong = central.post("/login", data={**form, "csrf": token + "x"})
    assert wrong.status_code == 403
    assert me(central).status_code == 401
    # The refusal is a fresh form with a token of its own: the old token is spent, the new
    # one signs in.
    stale = central.post("/login", data={**form, "csrf": token})
    assert stale.status_code == 403
    fresh = re.search(r'name="csrf" value="([^"]+)"', stale.text)
    assert fresh is not None
    assert fresh.group(1) != token
    assert central.post("/login", data={**form, "csrf": fresh.group(1)}).status_code == 303


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "http://testserver.evil.example", "http://testserver:81"],
)
def test_a_login_posted_from_another_origin_is_refused(
    store: CentralStore, central: httpx.Client, origin: str
) -> None:
    add_user(store, "ann", "viewer")
    refused = sign_in(central, "ann", headers={"Origin": origin})
    assert refused.status_code == 403
    assert "only pages of http://testserver may send it" in refused.text
    assert SESSION_COOKIE not in central.cookies


def test_repeated_failures_are_throttled_with_retry_after(
    store: CentralStore, central: httpx.Client
) -> None:
    add_user(store, "ann", "viewer")
    for _ in range(5):
        assert sign_in(central, "ann", "guess-guess-guess").status_code == 401
    throttled = sign_in(central, "ann", PASSWORD)
    assert throttled.status_code == 429
    assert "too many failed sign-ins: try again in" in throttled.text
    assert 0 < int(throttled.headers["Retry-After"]) <= 60
    assert SESSION_COOKIE not in central.cookies
    # The guesser slows itself down: ann, from her own address, signs in.
    elsewhere = another_client(central, "10.0.0.7")
    assert sign_in(elsewhere, "ann").status_code == 303


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param({f"f{i}": "x" for i in range(40)}, 422, id="too-many-fields"),
        pytest.param({"user": "x" * 70_000}, 413, id="oversized"),
    ],
)
def test_a_hostile_login_form_is_refused(
    central: httpx.Client, data: dict[str, str], status: int
) -> None:
    assert central.post("/login", data=data).status_code == status
    assert central.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("asked", "location"),
    [
        ("/v1/sites", "/v1/sites"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ],
)
def test_a_login_leads_only_to_a_page_of_this_collector(
    store: CentralStore, central: httpx.Client, asked: str, location: str
) -> None:
    add_user(store, "ann", "viewer")
    signed_in = sign_in(central, "ann", target=asked)
    assert signed_in.headers["location"] == location


# --- who may do what -----------------------------------------------------------------------


def test_me_with_a_session_an_api_token_and_the_admin_token(
    store: CentralStore, central: httpx.Client
) -> None:
    add_user(store, "ann", "viewer")
    token = secrets.token_urlsafe(32)
    store.add_token("ann", "script", None, digest(token))
    assert me(central, headers={"Authorization": f"Bearer {token}"}).json() == {
        "name": "ann",
        "role": "viewer",
    }
    assert me(central, headers=ADMIN).json() == {"name": "(admin token)", "role": "admin"}
    unknown = me(central, headers={"Authorization": "Bearer not-a-token"})
    assert unknown.status_code == 401
    assert "users token" in unknown.text
    sign_in(central, "ann")
    assert me(central).json() == {"name": "ann", "role": "viewer"}


def test_a_viewer_reads_but_may_not_reach_the_admins_endpoints(
    store: CentralStore, central: httpx.Client
) -> None:
    add_user(store, "ann", "viewer")
    add_user(store, "bob", "admin")
    tokens: dict[tuple[str, str], str] = {}
    made: tuple[tuple[str, str, Role | None], ...] = (
        ("ann", "bi", None),
        ("bob", "bi", None),
        ("bob", "ro", "viewer"),
    )
    for user, label, role in made:
        tokens[user, label] = secrets.token_urlsafe(32)
        store.add_token(user, label, role, digest(tokens[user, label]))

    def status(path: str, token: str) -> int:
        return central.get(path, headers={"Authorization": f"Bearer {token}"}).status_code

    viewer, admin, read_only = tokens["ann", "bi"], tokens["bob", "bi"], tokens["bob", "ro"]
    for path in ("/v1/sites", "/v1/fleet", "/v1/overview", "/v1/me"):
        assert status(path, viewer) == 200, path
    # The audit trail, the figures for monitoring and a person's data are the admins'.
    for path in ("/v1/audit", "/metrics", f"/v1/people/{'0' * 64}"):
        assert status(path, viewer) == 403, path
        assert status(path, read_only) == 403, path  # a token's role caps its user's
        assert status(path, admin) == 200, path
        assert status(path, ADMIN_TOKEN) == 200, path
    refused = central.get("/v1/audit", headers={"Authorization": f"Bearer {viewer}"})
    assert "this needs the admin role; ann is a viewer" in refused.text

    sign_in(central, "ann")
    assert central.get("/v1/audit").status_code == 403
    assert central.get("/v1/sites").status_code == 200


def test_a_post_with_a_session_needs_its_csrf_token(
    store: CentralStore, central: httpx.Client
) -> None:
    add_user(store, "ann", "viewer")
    sign_in(central, "ann")
    csrf = csrf_of(central)
    refused = central.post("/logout")
    assert refused.status_code == 403
    assert "CSRF token" in refused.text
    assert central.post("/logout", data={"csrf": "0" * 64}).status_code == 403
    assert central.post("/logout", headers={"X-CSRF-Token": csrf[:-1]}).status_code == 403
    # The right token from another site's page: the Origin gives it away.
    other = central.post("/logout", data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403
    assert me(central).status_code == 200  # still signed in
    assert central.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 303


def test_logout_ends_the_session(store: CentralStore, central: httpx.Client, target: str) -> None:
    add_user(store, "ann", "viewer")
    sign_in(central, "ann")
    session = session_of(central)
    out = central.post("/logout", data={"csrf": csrf_of(central)})
    assert out.status_code == 303
    assert out.headers["location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]
    assert SESSION_COOKIE not in central.cookies
    # The old cookie, kept by someone, no longer works: the server forgot the session.
    assert me(with_cookie(central, session)).status_code == 401
    assert rows(target, "SELECT count(*) FROM sessions") == [(0,)]
    actions = [a for (a,) in rows(target, "SELECT action FROM audit ORDER BY id")]
    assert actions[-2:] == ["login", "logout"]


def test_a_removed_users_sessions_and_tokens_stop_working(
    capsys: pytest.CaptureFixture[str], store: CentralStore, central: httpx.Client, target: str
) -> None:
    add_user(store, "ann", "viewer")
    token = secrets.token_urlsafe(32)
    store.add_token("ann", "bi", None, digest(token))
    sign_in(central, "ann")
    bearer = {"Authorization": f"Bearer {token}"}
    assert me(central).status_code == 200
    assert me(central, headers=bearer).status_code == 200

    code, _, err = cli(capsys, target, "remove", "ann")
    assert code == 0, err
    assert me(central).status_code == 401
    assert me(central, headers=bearer).status_code == 401
    assert central.get("/", headers={"Accept": "text/html"}).status_code == 303
    # Added again under the same name, the old session and token do not come back.
    add_user(store, "ann", "viewer")
    assert me(central).status_code == 401
    assert me(central, headers=bearer).status_code == 401


def test_a_new_password_ends_the_users_sessions_but_not_their_tokens(
    capsys: pytest.CaptureFixture[str], store: CentralStore, central: httpx.Client, target: str
) -> None:
    add_user(store, "ann", "viewer")
    token = secrets.token_urlsafe(32)
    store.add_token("ann", "bi", None, digest(token))
    sign_in(central, "ann")
    code, out, _ = cli(capsys, target, "password", "ann")
    assert code == 0
    assert me(central).status_code == 401
    assert me(central, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert sign_in(central, "ann").status_code == 401  # the old password
    assert sign_in(central, "ann", out.strip()).status_code == 303


def test_an_expired_session_signs_the_browser_out(
    store: CentralStore, central: httpx.Client
) -> None:
    add_user(store, "ann", "viewer")
    sign_in(central, "ann")
    assert me(central).status_code == 200
    # As if its 8 idle hours (or 7 days) had passed.
    with store.write() as tx:
        tx.run("UPDATE sessions SET expires_ms = ?", (1,))
    assert me(central).status_code == 401
    page = central.get("/", headers={"Accept": "text/html"})
    assert (page.status_code, page.headers["location"]) == (303, "/login?next=/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("central.example", "give the address users open", id="no-scheme"),
        pytest.param("ftp://central.example", "give the address users open", id="ftp"),
        pytest.param("https://", "give the address users open", id="no-host"),
        pytest.param("https://central.example:99999", "give the address users", id="bad-port"),
        pytest.param("https://central.example/central", "without a path", id="a-path"),
        pytest.param("https://central.example/?x=1", "without a path", id="a-query"),
    ],
)
def test_serve_refuses_a_public_url_that_is_not_an_origin(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path, url: str, message: str
) -> None:
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN)
    capsys.readouterr()
    code = main(["serve", "--db", target, "--admin-token-file", str(token), "--public-url", url])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert url in err
