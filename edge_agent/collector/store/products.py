"""The names of the products central shows, as each site's catalogue gives them.

A site's cells carry product ids only. When the rollup lists a product among a day's top
products it is marked seen here (`seen`); the answer to the site's next check-in asks for the
names of the products it has none for, or none since they were last seen a day later
(`wanted`), and the check-in after carries them (`named`). So the names of what the dashboard
shows arrive within two check-ins, a site's whole catalogue never travels, and a renamed
product is asked again at most once a day while it keeps selling.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from edge_agent.collector.store.engine import Database, Migration, Tx
from edge_agent.core.fleet import HOUR_MS
from edge_agent.core.wireform import MAX_CHECKIN_PRODUCTS

MIGRATIONS: tuple[Migration, ...] = (
    (
        "0008_product_names",
        # name: NULL until the site has said; '' when its catalogue has no name for it.
        """
        CREATE TABLE product_names (
            site TEXT NOT NULL REFERENCES sites (site),
            product_id TEXT NOT NULL,
            name TEXT,
            seen_ms BIGINT NOT NULL,
            named_ms BIGINT,
            PRIMARY KEY (site, product_id)
        )
        """,
    ),
)

#: A name is asked again when the product was seen this long after it was last named.
ASK_AGAIN_MS = 24 * HOUR_MS


def seen(tx: Tx, site: str, products: Iterable[str], at_ms: int) -> None:
    """Mark products a rolled-up day of ``site`` lists among its top ones."""
    for product in dict.fromkeys(products):
        tx.run(
            "INSERT INTO product_names (site, product_id, seen_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (site, product_id) DO UPDATE SET seen_ms = excluded.seen_ms",
            (site, product, at_ms),
        )


def named(tx: Tx, site: str, names: Mapping[str, str], at_ms: int) -> None:
    """Keep the names a check-in of ``site`` carried; only of products central asked for,
    so a site cannot fill the table with names of products it never sold."""
    for product, name in names.items():
        tx.run(
            "UPDATE product_names SET name = ?, named_ms = ? WHERE site = ? AND product_id = ?",
            (name, at_ms, site, product),
        )


def wanted(tx: Tx, site: str) -> list[str]:
    """The products whose names the answer to ``site``'s check-in asks for, latest seen
    first: never named, or seen a day after they were."""
    return [
        str(product)
        for (product,) in tx.rows(
            "SELECT product_id FROM product_names WHERE site = ? "
            "AND (named_ms IS NULL OR named_ms < seen_ms - ?) "
            "ORDER BY seen_ms DESC, product_id LIMIT ?",
            (site, ASK_AGAIN_MS, MAX_CHECKIN_PRODUCTS),
        )
    ]


class ProductStore(Database):
    """The names of the products the sites' top lists show."""

    def product_names(self, sites: Collection[str], products: Collection[str]) -> dict[str, str]:
        """The name of each of ``products`` that one of ``sites`` gave one (the name most
        recently given, where they differ)."""
        if not sites or not products:
            return {}
        found: dict[str, str] = {}
        for product, name in self.read(
            "SELECT product_id, name FROM product_names "
            f"WHERE site IN ({', '.join('?' * len(sites))}) "
            f"AND product_id IN ({', '.join('?' * len(products))}) "
            "AND name IS NOT NULL AND name <> '' ORDER BY named_ms",
            [*sites, *products],
        ):
            found[str(product)] = str(name)
        return found
