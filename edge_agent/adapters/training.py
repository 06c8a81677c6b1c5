"""Training on the site's own stored data, into the model registry.

Trending learns from every recent order (no person involved: quantities per item). Models
of persons learn only from ``profile_purchases``, which holds purchases of people who granted
``personalization`` and nothing else.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import orjson

from edge_agent.adapters.models import Entry, Models
from edge_agent.adapters.store import Store
from edge_agent.core import trending
from edge_agent.core.releases import Manifest, release_unsigned
from edge_agent.errors import StorageError


def recent_orders(store: Store, since_ms: int) -> list[tuple[int, dict[str, int]]]:
    """``(time, {item: quantity})`` of every order stored since ``since_ms``.

    Raises:
        StorageError: the database cannot be read.
    """
    try:
        rows = store.db.execute(
            "SELECT ts_ms, body FROM events WHERE event = 'Order Completed' AND ts_ms >= ?",
            (since_ms,),
        ).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"database {store.path} cannot be read: {exc}") from exc
    orders = []
    for ts_ms, body in rows:
        lines: dict[str, int] = {}
        for line in orjson.loads(body).get("properties", {}).get("products", []):
            item = str(line.get("product_id"))
            lines[item] = lines.get(item, 0) + int(line.get("quantity", 1))
        orders.append((int(ts_ms), lines))
    return orders


def train_trending(store: Store, models: Models, now_ms: int) -> Entry | None:
    """Build and serve the trending model from the last two weeks' orders; None when the
    site has sold nothing in that time.

    Raises:
        StorageError: the database or the model folder cannot be used.
    """
    orders = recent_orders(store, now_ms - trending.WINDOW_DAYS * trending.DAY_MS)
    by_item = trending.scores(orders, now_ms)
    if not by_item:
        return None
    vocabulary = tuple(sorted(by_item))
    model = trending.graph(vocabulary, by_item)
    created = datetime.fromtimestamp(now_ms / 1000, UTC)
    manifest = Manifest(
        "trending",
        f"site-{created:%Y%m%dT%H%M%S}",
        created.isoformat(timespec="seconds"),
        vocabulary,
        "",
        0,
        inputs={},
        outputs={"scores": [1, len(vocabulary)]},
        training={"orders": len(orders), "window_days": trending.WINDOW_DAYS},
    )
    raw = orjson.dumps(release_unsigned(manifest, model).document())
    return models.install(raw, model, None, now_ms)
