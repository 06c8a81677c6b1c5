"""The collector's security headers: a Content-Security-Policy that allows only the
collector's own files and no inline script, on every answer, and no caching of anything but
the static files (answers hold the sites' figures and people's names)."""

from __future__ import annotations

from edge_agent.securityheaders import Headers

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
_CSP = (b"content-security-policy", CSP.encode())
_NO_STORE = (b"cache-control", b"no-store")


def headers(path: str) -> Headers:
    """The security headers of the answer to ``path``."""
    if path.startswith("/static/"):
        return (*_ALWAYS, _CSP)
    return (*_ALWAYS, _CSP, _NO_STORE)
