"""The API explorer (``/docs``) served from the collector itself: Swagger UI's files from the
``fastapi-offline`` package (its files only: the page and its start-up script are the
collector's), so it works on a network with no way out and under the same
Content-Security-Policy as every other page (no inline script, nothing from another origin)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Swagger UI 5 (OpenAPI 3.1, which FastAPI writes), as the package ships it.
SWAGGER_UI = Path(str(files("fastapi_offline") / "static"))

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API · {title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/swagger/swagger-ui.css">
</head>
<body>
<div id="explorer" data-spec="/openapi.json"></div>
<script src="/static/swagger/swagger-ui-bundle.js"></script>
<script src="/static/explorer.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and Swagger UI's files under ``/static/swagger``. Mounted before the
    collector's own ``/static``, which would otherwise take the path."""
    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_UI), name="swagger")
    page = _PAGE.format(title=app.title)

    @app.get("/docs", include_in_schema=False)
    async def explorer() -> HTMLResponse:
        return HTMLResponse(page)
