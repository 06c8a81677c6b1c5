"""The ``products`` table: the site's catalogue, imported and learned from its tills."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from edge_agent.core.catalogue import Entry
from edge_agent.store.connection import Connection

_FAILING = "cannot use the product catalogue"


@dataclass(frozen=True, slots=True)
class Product:
    """A product as the site knows it."""

    product_id: str
    name: str | None
    category: str | None
    price: float | None
    currency: str | None
    available: bool | None
    imported: bool
    updated_ms: int


class Catalogue:
    """The ``products`` table."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def imported(self, entries: Sequence[Entry], now_ms: int) -> None:
        """Take a catalogue file's entries: each field it gives replaces the stored one."""
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            conn.executemany(
                "INSERT INTO products (product_id, name, category, price, currency, available, "
                "imported, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (product_id) DO UPDATE SET "
                "name = coalesce(excluded.name, products.name), "
                "category = coalesce(excluded.category, products.category), "
                "price = coalesce(excluded.price, products.price), "
                "currency = coalesce(excluded.currency, products.currency), "
                "available = coalesce(excluded.available, products.available), "
                "imported = 1, updated_ms = excluded.updated_ms",
                [_values(e, now_ms) for e in entries],
            )

    def learn(self, entries: Iterable[Entry], now_ms: int) -> None:
        """Take what the tills said, inside the caller's transaction (the ingest commit).

        A field an import gave is the site's word: a till only fills what the import left
        empty. A field nobody gave stays as it was.
        """
        rows = [_values(e, now_ms) for e in entries]
        if not rows:
            return
        self.connection.conn.executemany(
            "INSERT INTO products (product_id, name, category, price, currency, available, "
            "imported, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 0, ?) "
            "ON CONFLICT (product_id) DO UPDATE SET "
            "name = CASE WHEN products.imported AND products.name IS NOT NULL "
            "THEN products.name ELSE coalesce(excluded.name, products.name) END, "
            "category = CASE WHEN products.imported AND products.category IS NOT NULL "
            "THEN products.category ELSE coalesce(excluded.category, products.category) END, "
            "price = CASE WHEN products.imported AND products.price IS NOT NULL "
            "THEN products.price ELSE coalesce(excluded.price, products.price) END, "
            "updated_ms = excluded.updated_ms",
            rows,
        )

    def names(self) -> dict[str, str]:
        """Every named product's name."""
        with self.connection.failing(_FAILING) as conn:
            return dict(
                conn.execute("SELECT product_id, name FROM products WHERE name IS NOT NULL")
            )

    def names_of(self, ids: Collection[str]) -> dict[str, str]:
        """The names of those of ``ids`` the catalogue names."""
        with self.connection.failing(_FAILING):
            return dict(
                self.connection.in_chunks(
                    "SELECT product_id, name FROM products WHERE name IS NOT NULL AND "
                    "product_id IN ({marks})",
                    list(ids),
                )
            )

    def unavailable(self) -> frozenset[str]:
        """The products the catalogue says are not on sale."""
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute("SELECT product_id FROM products WHERE available = 0").fetchall()
        return frozenset(r[0] for r in rows)

    def listed(self, limit: int, after: str = "") -> list[Product]:
        """Up to ``limit`` products after ``after``, by id."""
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute(
                "SELECT product_id, name, category, price, currency, available, imported, "
                "updated_ms FROM products WHERE product_id > ? ORDER BY product_id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            Product(p, n, c, pr, cu, None if a is None else bool(a), bool(i), u)
            for p, n, c, pr, cu, a, i, u in rows
        ]

    def counts(self) -> tuple[int, int, int]:
        """Products known, named, and named by an import."""
        with self.connection.failing(_FAILING) as conn:
            ((known, named, imported),) = conn.execute(
                "SELECT count(*), count(name), coalesce(sum(imported AND name IS NOT NULL), 0) "
                "FROM products"
            ).fetchall()
        return int(known), int(named), int(imported)


def _values(e: Entry, now_ms: int) -> tuple[object, ...]:
    available = None if e.available is None else int(e.available)
    return (e.product_id, e.name, e.category, e.price, e.currency, available, now_ms)
