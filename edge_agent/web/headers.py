"""The security headers on every answer: a Content-Security-Policy that allows only this
server's own files and no inline script (the site may have no internet, and the page shows
names that visitors typed)."""

from __future__ import annotations

from starlette.types import ASGIApp

from edge_agent.securityheaders import SecurityHeaders

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class Hardened(SecurityHeaders):
    """ASGI middleware: every answer carries the agent's security headers."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app, lambda _path: _SECURITY)
