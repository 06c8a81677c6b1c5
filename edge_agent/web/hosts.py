"""ASGI middleware: only requests addressed to this agent by a name it knows are answered.

A page on the internet can make a browser on the shop's network send requests to the agent
under the page's own domain (DNS rebinding: the domain is made to resolve to the agent's
address), and read the answers as if they came from that domain. The browser then names
the page's domain in ``Host``: refusing unknown names closes the hole. An address written
as numbers can never be such a domain, so it is always taken; the names are
`HttpSettings.hosts`.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from edge_agent.web.responses import refusal


def host_name(header: str) -> str:
    """The host a ``Host`` header names, lower case, without its port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class KnownHosts:
    """Refuse (421) a request whose ``Host`` is a name not in ``names``."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = next((v for k, v in scope["headers"] if k == b"host"), None)
            # No Host at all is no browser's request (every browser sends one).
            if header is not None:
                host = host_name(header.decode("latin-1"))
                if host not in self.names and not _is_address(host):
                    detail = (
                        f"this agent is not reached as {host[:100]!r}: open it by its address, "
                        "[http] public_url, or a name listed in [http] allowed_hosts"
                    )
                    await refusal(421, "unknown_host", detail)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
