"""The frame of every collector page: its head (the style sheet, no script), a bar with the
collector's name and who is signed in, with a sign-out button. Every text put in is escaped."""

from __future__ import annotations

from html import escape

from edge_agent.collector.auth import CSRF_FIELD, Principal


def page(collector: str, title: str, main: str, user: Principal | None = None) -> str:
    """A whole HTML page titled ``title`` around ``main`` (HTML the caller escaped)."""
    signed_in = ""
    csrf_meta = ""
    if user is not None:
        sign_out = ""
        if user.csrf is not None:
            csrf_meta = f'<meta name="csrf-token" content="{escape(user.csrf)}">'
            sign_out = (
                '<form method="post" action="/logout" class="sign-out">'
                f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(user.csrf)}">'
                '<button type="submit">Sign out</button></form>'
            )
        signed_in = (
            f'<div class="who"><span>Signed in as <strong>{escape(user.name)}</strong></span>'
            f'<span class="role">{escape(user.role)}</span>{sign_out}</div>'
        )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{csrf_meta}
<title>{escape(title)} · {escape(collector)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/dashboard.css">
<link rel="stylesheet" href="/static/workspace.css">
</head>
<body>
<header class="bar"><span class="brand">{escape(collector)}</span>{signed_in}</header>
<main>
{main}
</main>
</body>
</html>
"""
