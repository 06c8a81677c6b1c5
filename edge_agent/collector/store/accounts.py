"""Central's accounts: the people who read the dashboard, their API tokens and sessions.

Only digests are kept: a password's scrypt hash, a token's or session id's sha256. The audit
trail names the user and, for logins, the client address; never a password or a token.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.collector.credentials import ROLES, Role, SessionTimes, lesser
from edge_agent.collector.store.engine import Database, Migration, Tx, audit, now_ms
from edge_agent.errors import CollectorError

MIGRATIONS: tuple[Migration, ...] = (
    (
        "0006_accounts",
        """
        CREATE TABLE users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,                 -- viewer or admin
            password TEXT NOT NULL,             -- scrypt$N$r$p$salt$key
            created_ms BIGINT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE api_tokens (
            token_sha256 TEXT PRIMARY KEY,
            user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            label TEXT NOT NULL,
            role TEXT NOT NULL,                 -- at most the user's
            created_ms BIGINT NOT NULL,
            last_used_ms BIGINT,
            UNIQUE (user_name, label)
        );
        CREATE TABLE sessions (
            id_sha256 TEXT PRIMARY KEY,
            user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            created_ms BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL
        );
        CREATE INDEX sessions_user ON sessions (user_name);
        CREATE INDEX sessions_expires ON sessions (expires_ms)
        """,
    ),
)

#: A session's or token's last use is written at most this often: a page's every request
#: would otherwise be a write.
_TOUCH_MS = 60_000


@dataclass(frozen=True, slots=True)
class User:
    """An account, as ``users list`` shows it."""

    name: str
    role: Role
    created_ms: int
    disabled: bool
    tokens: int


@dataclass(frozen=True, slots=True)
class Login:
    """What a login checks: the user's role and password hash."""

    name: str
    role: Role
    password: str


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a session or a token, and the role it grants."""

    name: str
    role: Role


def _role(text: object) -> Role:
    for role in ROLES:
        if text == role:
            return role
    # Nothing writes another value; a hand-edited row grants the least.
    return "viewer"


class AccountStore(Database):
    """Central's accounts: users, their API tokens and their sessions."""

    def add_user(self, name: str, role: Role, password: str) -> None:
        """Add a user with a password hash (`credentials.hash_password`).

        Raises:
            CollectorError: the name is taken.
        """
        with self.write() as tx:
            added = tx.run(
                "INSERT INTO users (name, role, password, created_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (name, role, password, now_ms()),
            )
            if not added:
                raise CollectorError(f"user {name!r} exists: users password {name} changes it")
            audit(tx, None, "user_added", {"user": name, "role": role})

    def users(self) -> list[User]:
        """Every user, by name."""
        return [
            User(name, _role(role), created, bool(disabled), int(tokens))
            for name, role, created, disabled, tokens in self.read(
                "SELECT name, role, created_ms, disabled, "
                "(SELECT count(*) FROM api_tokens t WHERE t.user_name = u.name) "
                "FROM users u ORDER BY name"
            )
        ]

    def remove_user(self, name: str) -> None:
        """Remove a user; their sessions and API tokens stop working at once.

        Raises:
            CollectorError: no such user.
        """
        with self.write() as tx:
            _known(tx, name)
            tokens = tx.run("DELETE FROM api_tokens WHERE user_name = ?", (name,))
            sessions = tx.run("DELETE FROM sessions WHERE user_name = ?", (name,))
            tx.run("DELETE FROM users WHERE name = ?", (name,))
            audit(tx, None, "user_removed", {"user": name, "tokens": tokens, "sessions": sessions})

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password hash; their open sessions end.

        Raises:
            CollectorError: no such user.
        """
        with self.write() as tx:
            _known(tx, name)
            tx.run("UPDATE users SET password = ? WHERE name = ?", (password, name))
            sessions = tx.run("DELETE FROM sessions WHERE user_name = ?", (name,))
            audit(tx, None, "user_password_set", {"user": name, "sessions_ended": sessions})

    def add_token(self, name: str, label: str, role: Role | None, token_sha256: str) -> None:
        """Give a user an API token (by its sha256) named ``label``, granting ``role`` (None:
        the user's).

        Raises:
            CollectorError: no such user, the role is above the user's, or the label is taken.
        """
        with self.write() as tx:
            user_role = _known(tx, name)
            role = role or user_role
            if lesser(role, user_role) != role:
                raise CollectorError(
                    f"user {name} is a {user_role}: their token's role can be at most that"
                )
            added = tx.run(
                "INSERT INTO api_tokens (token_sha256, user_name, label, role, created_ms) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (token_sha256, name, label, role, now_ms()),
            )
            if not added:
                raise CollectorError(f"user {name} has a token labelled {label!r}: pick another")
            audit(tx, None, "user_token_added", {"user": name, "label": label, "role": role})

    def login_of(self, name: str) -> Login | None:
        """The role and password hash of an enabled user, or None."""
        rows = self.read(
            "SELECT role, password FROM users WHERE name = ? AND disabled = 0", (name,)
        )
        return Login(name, _role(rows[0][0]), str(rows[0][1])) if rows else None

    def token_holder(self, token_sha256: str) -> Holder | None:
        """Who holds the API token of this sha256 (its role capped by the user's), or None."""
        rows = self.read(
            "SELECT u.name, u.role, t.role, t.last_used_ms FROM api_tokens t "
            "JOIN users u ON u.name = t.user_name WHERE t.token_sha256 = ? AND u.disabled = 0",
            (token_sha256,),
        )
        if not rows:
            return None
        name, user_role, token_role, used = rows[0]
        at = now_ms()
        if used is None or at - int(used) >= _TOUCH_MS:
            with self.write() as tx:
                tx.run(
                    "UPDATE api_tokens SET last_used_ms = ? WHERE token_sha256 = ?",
                    (at, token_sha256),
                )
        return Holder(str(name), lesser(_role(token_role), _role(user_role)))

    def login_failed(self, name: str, client: str) -> None:
        """Audit a refused login (the name as typed, when it could be a user's)."""
        with self.write() as tx:
            audit(tx, None, "login_failed", {"user": name, "client": client})

    def open_session(self, name: str, id_sha256: str, client: str) -> None:
        """Start a session of ``name`` (by its id's sha256), audited as a login; sessions
        that expired (anyone's) are removed."""
        at = now_ms()
        with self.write() as tx:
            tx.run("DELETE FROM sessions WHERE expires_ms <= ?", (at,))
            tx.run(
                "INSERT INTO sessions (id_sha256, user_name, created_ms, last_seen_ms, "
                "expires_ms) VALUES (?, ?, ?, ?, ?)",
                (id_sha256, name, at, at, SessionTimes(at, at).expires_ms()),
            )
            audit(tx, None, "login", {"user": name, "client": client})

    def session_holder(self, id_sha256: str) -> Holder | None:
        """Who holds the live session of this id's sha256, or None (expired, ended, or its
        user removed or disabled). Using it keeps it alive, up to its absolute end."""
        at = now_ms()
        rows = self.read(
            "SELECT u.name, u.role, s.created_ms, s.last_seen_ms FROM sessions s "
            "JOIN users u ON u.name = s.user_name "
            "WHERE s.id_sha256 = ? AND s.expires_ms > ? AND u.disabled = 0",
            (id_sha256, at),
        )
        if not rows:
            return None
        name, role, created, seen = rows[0]
        if at - int(seen) >= _TOUCH_MS:
            with self.write() as tx:
                tx.run(
                    "UPDATE sessions SET last_seen_ms = ?, expires_ms = ? WHERE id_sha256 = ?",
                    (at, SessionTimes(int(created), at).expires_ms(), id_sha256),
                )
        return Holder(str(name), _role(role))

    def end_session(self, id_sha256: str, client: str) -> None:
        """End a session (a logout, audited); nothing if there is none."""
        with self.write() as tx:
            rows = tx.rows("SELECT user_name FROM sessions WHERE id_sha256 = ?", (id_sha256,))
            if rows:
                tx.run("DELETE FROM sessions WHERE id_sha256 = ?", (id_sha256,))
                audit(tx, None, "logout", {"user": str(rows[0][0]), "client": client})


def _known(tx: Tx, name: str) -> Role:
    rows = tx.rows("SELECT role FROM users WHERE name = ?", (name,))
    if not rows:
        raise CollectorError(f"no user {name!r}: users list shows them")
    return _role(rows[0][0])
