"""The site key file: 32 random bytes, created once with mode 0600, never logged."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from edge_agent.core.identity import KEY_BYTES, SiteKey
from edge_agent.errors import ConfigError


def load_or_create(path: Path) -> SiteKey:
    """Read the site key, creating it on first start.

    Losing the file changes every pseudonym (old and new visits of a person no longer match),
    so it is created exclusively and never overwritten.

    Raises:
        ConfigError: the file cannot be created or read, is not private, or has the wrong size.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"site key {path} cannot be created: {exc.strerror}") from exc
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
    try:
        mode = path.stat().st_mode & 0o777
        secret = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"site key {path} cannot be read: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"site key {path} is readable by others (mode {mode:o}): chmod 600 it")
    if len(secret) != KEY_BYTES:
        raise ConfigError(
            f"site key {path} has {len(secret)} bytes, expected {KEY_BYTES}: restore it from backup"
        )
    return SiteKey(secret)
