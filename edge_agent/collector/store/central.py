"""Central storage: the sites, what they push (insight cells, notices, identified items),
model releases and the audit trail, on the `engine`'s SQLite or PostgreSQL.

Each request is one transaction: its items, its idempotency key and the site's last-seen
time commit together or not at all. `CentralStore` joins this part with the store's other
parts (`fleet`, `accounts`, `forwarding`, `rollups`, `products`, `partitions`), each with its
own tables.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from edge_agent.collector.store import (
    accounts,
    fleet,
    forwarding,
    partitions,
    products,
    rollups,
)
from edge_agent.collector.store.engine import Migration, Tx, audit, now_ms
from edge_agent.collector.wire import Batch, Insight, Notice, SyncBody, WireError
from edge_agent.errors import CollectorError

_MIGRATIONS: tuple[Migration, ...] = (
    (
        "0001_central",
        """
        CREATE TABLE sites (
            site TEXT PRIMARY KEY,
            venue TEXT NOT NULL,
            token_sha256 TEXT NOT NULL UNIQUE,
            created_ms BIGINT NOT NULL,
            last_seen_ms BIGINT,
            losses TEXT,                        -- JSON: class -> reason -> count
            losses_sent_ms BIGINT
        );
        CREATE TABLE idempotency (
            site TEXT NOT NULL REFERENCES sites (site),
            idempotency_key TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            body_sha256 TEXT NOT NULL,          -- of the uncompressed body
            response TEXT NOT NULL,             -- JSON answered the first time
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (site, idempotency_key)
        );
        CREATE TABLE sync_items (
            site TEXT NOT NULL REFERENCES sites (site),
            item_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (site, item_id)
        );
        CREATE TABLE insight_cells (
            site TEXT NOT NULL REFERENCES sites (site),
            start_ms BIGINT NOT NULL,
            venue TEXT NOT NULL,
            version_ms BIGINT NOT NULL,         -- computed_ms, else the body's sent_ms
            item_id TEXT NOT NULL,
            k INTEGER NOT NULL,
            suppressed INTEGER NOT NULL,        -- 1: the site released only a marker
            reason TEXT,
            cell TEXT,                          -- JSON: aggregate.to_document, NULL if suppressed
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (site, start_ms)
        );
        CREATE INDEX insight_cells_venue_start ON insight_cells (venue, start_ms);
        CREATE INDEX insight_cells_start ON insight_cells (start_ms);
        CREATE TABLE identified (
            id {identity},
            site TEXT NOT NULL REFERENCES sites (site),
            message_id TEXT NOT NULL,
            subject_hash TEXT NOT NULL,
            user_id TEXT NOT NULL,
            type TEXT NOT NULL,
            event TEXT,
            timestamp_ms BIGINT NOT NULL,
            body TEXT NOT NULL,                 -- the Segment item, JSON
            received_ms BIGINT NOT NULL,
            UNIQUE (site, message_id)
        );
        CREATE INDEX identified_subject ON identified (site, subject_hash);
        CREATE TABLE erasure_receipts (
            id {identity},
            site TEXT NOT NULL REFERENCES sites (site),
            subject_hash TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- erasure or consent_withdrawn
            item_id TEXT NOT NULL,
            rows_removed INTEGER NOT NULL,
            requested_ms BIGINT NOT NULL,       -- the notice's time at the site
            completed_ms BIGINT NOT NULL
        );
        CREATE INDEX erasure_receipts_subject ON erasure_receipts (site, subject_hash);
        CREATE TABLE audit (
            id {identity},
            ts_ms BIGINT NOT NULL,
            site TEXT,
            action TEXT NOT NULL,
            detail TEXT NOT NULL                -- JSON, never a user id or a token
        );
        CREATE INDEX audit_site ON audit (site, id)
        """,
    ),
    (
        "0002_model_releases",
        """
        CREATE TABLE model_releases (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            manifest TEXT NOT NULL,             -- JSON, signed by the publisher
            model {blob} NOT NULL,              -- the ONNX file
            published_ms BIGINT NOT NULL,
            PRIMARY KEY (name, version)
        )
        """,
    ),
    # The site's revision of each cell (NULL from sites that send none). No comment after
    # the column: SQLite copies the column's text into the table's CREATE statement.
    ("0003_cell_revisions", "ALTER TABLE insight_cells ADD COLUMN revision BIGINT"),
    (
        "0009_hygiene",
        """
        CREATE TABLE previous_site_tokens (
            site TEXT NOT NULL REFERENCES sites (site),
            token_sha256 TEXT NOT NULL UNIQUE,
            replaced_ms BIGINT NOT NULL,        -- when rotate-token made the next token
            expires_ms BIGINT NOT NULL,         -- refused from then on
            PRIMARY KEY (site, token_sha256)
        );
        CREATE INDEX previous_site_tokens_expires ON previous_site_tokens (expires_ms);
        CREATE INDEX idempotency_created ON idempotency (created_ms);
        CREATE INDEX sync_items_kind_received ON sync_items (kind, received_ms)
        """,
    ),
)

#: The only item ids the hygiene job prunes (`prune_item_ids`): an insight cell is also kept
#: once by its natural key (site, start_ms) and version, so a replay after its id is gone
#: changes nothing. A notice's id is kept for good: applying a notice again would add a second
#: receipt and audit line, queue it for the CRM again and delete identified rows that arrived
#: after it (a new consent). Notices are few: as many as the audit lines they already leave.
PRUNED_ITEM_KIND = "insight"


@dataclass(frozen=True, slots=True)
class Site:
    """A site as its token identifies it."""

    site: str
    venue: str


@dataclass(frozen=True, slots=True)
class ReplacedToken:
    """A site token that `rotate_token` replaced and whose overlap has ended: refused, but
    told apart from an unknown token so the site's installer knows what to do."""

    replaced_ms: int
    expired_ms: int


@dataclass(frozen=True, slots=True)
class Rotation:
    """What `rotate_token` did: when, until when the replaced token works, and how many
    earlier tokens of the site (from rotations before) still work, until at most then."""

    site: str
    replaced_ms: int
    expires_ms: int
    earlier_valid: int


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """A site, when it was last heard from, and its latest loss figures."""

    site: str
    venue: str
    created_ms: int
    last_seen_ms: int | None
    losses: dict[str, dict[str, int]] | None
    losses_sent_ms: int | None
    #: What the site says of itself in its check-ins (None until its first).
    name: str | None = None
    timezone: str | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class StoredCell:
    """One stored hour of one site; ``cell`` is the JSON document, None when suppressed."""

    site: str
    venue: str
    start_ms: int
    cell: str | None


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One line of the audit trail."""

    id: int
    ts_ms: int
    site: str | None
    action: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class Received:
    """The answer to a sync or batch request: how many items were new, whether a replay."""

    stored: int
    duplicate: bool

    def as_json(self) -> dict[str, object]:
        """The response body."""
        return {"stored": self.stored, "duplicate": self.duplicate}


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who sent a request, to which endpoint, and its idempotency key (if it gave one)."""

    site: Site
    endpoint: str
    key: str | None
    body_sha256: str


class CentralStore(
    fleet.FleetStore,
    accounts.AccountStore,
    forwarding.ForwardingStore,
    rollups.RollupStore,
    products.ProductStore,
    partitions.PartitionStore,
):
    """The collector's database. Thread-safe: each call takes a pooled connection."""

    MIGRATIONS = tuple(
        sorted(
            _MIGRATIONS
            + fleet.MIGRATIONS
            + accounts.MIGRATIONS
            + forwarding.MIGRATIONS
            + rollups.MIGRATIONS
            + products.MIGRATIONS
            + partitions.MIGRATIONS
        )
    )

    def maintain(self, at_ms: int) -> None:
        """The day partitions of the hour cells around ``at_ms`` (PostgreSQL)."""
        self.ensure_partitions(at_ms)

    # --- sites -----------------------------------------------------------------------------

    def add_site(self, site: str, venue: str, token_sha256: str) -> None:
        """Register a site by the sha256 of its token.

        Raises:
            CollectorError: the site is already registered.
        """
        with self.write() as tx:
            added = tx.run(
                "INSERT INTO sites (site, venue, token_sha256, created_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (site, venue, token_sha256, now_ms()),
            )
            if not added:
                raise CollectorError(f"site {site!r} is already registered")
            audit(tx, site, "site_added", {"venue": venue})

    def site_for_token(self, token: str) -> Site | ReplacedToken | None:
        """The site whose token this is: its current token, or a replaced one whose overlap
        has not ended (`rotate_token`); a replaced token past its overlap, while its row is
        kept (`prune_previous_tokens`); else None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        at_ms = now_ms()
        # Looked up by the digest, one indexed probe in each table and one round trip: a
        # fleet of thousands costs the same as one site. Timing can only tell an attacker
        # about the sha256 of their own guess, never of a real token.
        found = self.read(
            "SELECT site, venue, token_sha256, NULL, NULL FROM sites WHERE token_sha256 = ? "
            "UNION ALL "
            "SELECT s.site, s.venue, p.token_sha256, p.replaced_ms, p.expires_ms "
            "FROM previous_site_tokens p JOIN sites s ON s.site = p.site "
            "WHERE p.token_sha256 = ?",
            (digest, digest),
        )
        replaced: ReplacedToken | None = None
        for site, venue, stored, replaced_ms, expires_ms in found:
            if not hmac.compare_digest(stored, digest):
                continue
            if expires_ms is None or at_ms < int(expires_ms):
                return Site(site, venue)
            replaced = ReplacedToken(int(replaced_ms), int(expires_ms))
        return replaced

    def rotate_token(self, site: str, token_sha256: str, overlap_ms: int) -> Rotation:
        """Give ``site`` a new token (by its sha256); the one it replaces keeps working for
        ``overlap_ms`` more, and is refused after. Earlier replaced tokens still working
        keep their own end, or this one's if sooner: a rotation never extends an older
        token's life, and ``overlap_ms`` 0 ends every old token at once (a leaked token).

        Raises:
            CollectorError: no such site; ``overlap_ms`` is negative.
        """
        if overlap_ms < 0:
            raise CollectorError(f"the overlap must not be negative, got {overlap_ms} ms")
        at_ms = now_ms()
        expires_ms = at_ms + overlap_ms
        with self.write() as tx:
            # Written first, to itself: PostgreSQL then holds the site's row until commit, so
            # a rotation at the same time waits and replaces this one's token, not the same
            # one again (SQLite's write lock is already held).
            if not tx.run("UPDATE sites SET token_sha256 = token_sha256 WHERE site = ?", (site,)):
                raise CollectorError(
                    f"no site {site!r} at this collector: check the name "
                    "(edge-agent-collector fleet lists the sites; add-site adds one)"
                )
            tx.run(
                "UPDATE previous_site_tokens SET expires_ms = ? WHERE site = ? AND expires_ms > ?",
                (expires_ms, site, expires_ms),
            )
            ((earlier,),) = tx.rows(
                "SELECT count(*) FROM previous_site_tokens WHERE site = ? AND expires_ms > ?",
                (site, at_ms),
            )
            tx.run(
                "INSERT INTO previous_site_tokens (site, token_sha256, replaced_ms, expires_ms) "
                "SELECT site, token_sha256, ?, ? FROM sites WHERE site = ?",
                (at_ms, expires_ms, site),
            )
            tx.run("UPDATE sites SET token_sha256 = ? WHERE site = ?", (token_sha256, site))
            rotation = Rotation(site, at_ms, expires_ms, int(earlier))
            audit(
                tx,
                site,
                "token_rotated",
                {
                    "overlap_ms": overlap_ms,
                    "previous_expires_ms": expires_ms,
                    "earlier_tokens_valid": rotation.earlier_valid,
                },
            )
        return rotation

    def sites(self) -> list[SiteStatus]:
        """Every site, by name."""
        return [
            SiteStatus(
                site,
                venue,
                created,
                seen,
                None if losses is None else orjson.loads(losses),
                sent,
                *described,
            )
            for site, venue, created, seen, losses, sent, *described in self.read(
                "SELECT site, venue, created_ms, last_seen_ms, losses, losses_sent_ms, "
                "name, timezone, currency FROM sites ORDER BY site"
            )
        ]

    def publish_release(self, name: str, version: str, manifest: bytes, model: bytes) -> None:
        """Keep a signed model release for sites to pull (the signature is checked by them).

        Raises:
            CollectorError: that name and version was published before.
        """
        with self.write() as tx:
            added = tx.run(
                "INSERT INTO model_releases (name, version, manifest, model, published_ms) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (name, version, manifest.decode(), model, now_ms()),
            )
            if not added:
                raise CollectorError(
                    f"{name} {version} was already published: give the new release a new version"
                )
            audit(tx, None, "model_published", {"name": name, "version": version})

    def latest_release(self, name: str) -> tuple[str, bytes] | None:
        """The newest published release of ``name``: its version and manifest."""
        rows = self.read(
            "SELECT version, manifest FROM model_releases WHERE name = ? "
            "ORDER BY published_ms DESC, version DESC LIMIT 1",
            (name,),
        )
        return (str(rows[0][0]), str(rows[0][1]).encode()) if rows else None

    def release_model(self, name: str, version: str) -> bytes | None:
        """The ONNX file of a published release."""
        rows = self.read(
            "SELECT model FROM model_releases WHERE name = ? AND version = ?", (name, version)
        )
        return bytes(rows[0][0]) if rows else None

    def audit(self, site: str | None, limit: int) -> list[AuditLine]:
        """The newest ``limit`` audit lines, of one site or all."""
        where, params = ("WHERE site = ?", [site]) if site is not None else ("", [])
        return [
            AuditLine(id_, ts, line_site, action, orjson.loads(detail))
            for id_, ts, line_site, action, detail in self.read(
                f"SELECT id, ts_ms, site, action, detail FROM audit {where} "
                "ORDER BY id DESC LIMIT ?",
                [*params, limit],
            )
        ]

    def insight_cells(
        self, start_ms: int, end_ms: int, venue: str | None, site: str | None
    ) -> list[StoredCell]:
        """Stored hour cells starting in ``[start_ms, end_ms)``, of a venue and/or a site."""
        where, params = _cells_where(start_ms, end_ms, venue, site)
        return [
            StoredCell(*row)
            for row in self.read(
                f"SELECT site, venue, start_ms, cell FROM insight_cells WHERE {where} "
                "ORDER BY start_ms, site",
                params,
            )
        ]

    def count_cells(self, start_ms: int, end_ms: int, venue: str | None, site: str | None) -> int:
        """How many `insight_cells` would return."""
        where, params = _cells_where(start_ms, end_ms, venue, site)
        return int(self.read(f"SELECT count(*) FROM insight_cells WHERE {where}", params)[0][0])

    # --- hygiene (`edge_agent.collector.hygiene`) -------------------------------------------

    def prune_idempotency_keys(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` idempotency keys claimed before ``before_ms``, in one
        transaction; returns how many. A request sent again after its key is gone is
        stored as new, and its items are kept once by their own keys (`receive_sync`,
        `receive_batch`)."""
        # No DELETE ... LIMIT in PostgreSQL: the rows are chosen by their key in a sub-select,
        # the oldest first along idempotency_created, so a pass holds its locks briefly.
        return self._prune(
            "DELETE FROM idempotency WHERE (site, idempotency_key) IN ("
            "SELECT site, idempotency_key FROM idempotency WHERE created_ms < ? "
            "ORDER BY created_ms LIMIT ?)",
            (before_ms, limit),
        )

    def prune_item_ids(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` insight item ids received before ``before_ms``, in one
        transaction; returns how many. Notice ids are kept (`PRUNED_ITEM_KIND`)."""
        return self._prune(
            "DELETE FROM sync_items WHERE (site, item_id) IN ("
            "SELECT site, item_id FROM sync_items WHERE kind = ? AND received_ms < ? "
            "ORDER BY received_ms LIMIT ?)",
            (PRUNED_ITEM_KIND, before_ms, limit),
        )

    def prune_previous_tokens(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` replaced site tokens that expired before ``before_ms``, in
        one transaction; returns how many. Until then a request with one is told the token
        was replaced, not that it is unknown."""
        return self._prune(
            "DELETE FROM previous_site_tokens WHERE token_sha256 IN ("
            "SELECT token_sha256 FROM previous_site_tokens WHERE expires_ms < ? "
            "ORDER BY expires_ms LIMIT ?)",
            (before_ms, limit),
        )

    def _prune(self, statement: str, params: tuple[object, ...]) -> int:
        with self.write() as tx:
            return tx.run(statement, params)

    # --- requests --------------------------------------------------------------------------

    def receive_sync(self, request: Envelope, body: SyncBody) -> Received:
        """Store a sync body's new items and loss figures, in one transaction with its key."""

        def write(tx: Tx, at_ms: int) -> int:
            site = request.site.site
            stored = 0
            for item in body.items:
                if not tx.run(
                    "INSERT INTO sync_items (site, item_id, kind, received_ms) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (site, item.id, "insight" if isinstance(item, Insight) else item.kind, at_ms),
                ):
                    continue
                if isinstance(item, Insight):
                    version_ms = body.sent_ms if item.computed_ms is None else item.computed_ms
                    stored += _store_insight(tx, request.site, version_ms, item, at_ms)
                else:
                    _apply_notice(tx, site, item, at_ms)
                    stored += 1
            if body.losses is not None:
                tx.run(
                    "UPDATE sites SET losses = ?, losses_sent_ms = ? WHERE site = ? "
                    "AND (losses_sent_ms IS NULL OR losses_sent_ms <= ?)",
                    (orjson.dumps(body.losses).decode(), body.sent_ms, site, body.sent_ms),
                )
            return stored

        return self._receive(request, write)

    def receive_batch(self, request: Envelope, batch: Batch) -> Received:
        """Store a batch's new identified items, in one transaction with its key.

        An item of a subject erased or withdrawn at the site after the item happened is not
        stored: it was sent before the notice and arrived after it.
        """

        def write(tx: Tx, at_ms: int) -> int:
            site = request.site.site
            forgotten = {
                subject: _forgotten_ms(tx, site, subject)
                for subject in {i.subject_hash for i in batch.items}
            }
            kept: list[tuple[str, str]] = []
            for item in batch.items:
                until = forgotten[item.subject_hash]
                if until is not None and item.timestamp_ms <= until:
                    continue
                if tx.run(
                    "INSERT INTO identified (site, message_id, subject_hash, user_id, type, "
                    "event, timestamp_ms, body, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        site,
                        item.message_id,
                        item.subject_hash,
                        item.user_id,
                        item.type,
                        item.event,
                        item.timestamp_ms,
                        item.body,
                        at_ms,
                    ),
                ):
                    kept.append((item.message_id, item.subject_hash))
            forwarding.queue_items(tx, site, kept, at_ms)
            return len(kept)

        return self._receive(request, write)

    def _receive(self, request: Envelope, write: Callable[[Tx, int], int]) -> Received:
        site = request.site.site
        at_ms = now_ms()
        with self.write() as tx:
            if request.key is not None:
                # Claimed first: a concurrent request with the same key waits on this row
                # (PostgreSQL) or on the write lock (SQLite), then sees it as a replay.
                claimed = tx.run(
                    "INSERT INTO idempotency (site, idempotency_key, endpoint, body_sha256, "
                    "response, created_ms) VALUES (?, ?, ?, ?, '', ?) ON CONFLICT DO NOTHING",
                    (site, request.key, request.endpoint, request.body_sha256, at_ms),
                )
                if not claimed:
                    return _replay(tx, request)
            received = Received(write(tx, at_ms), duplicate=False)
            if request.key is not None:
                tx.run(
                    "UPDATE idempotency SET response = ? WHERE site = ? AND idempotency_key = ?",
                    (orjson.dumps(received.as_json()).decode(), site, request.key),
                )
            tx.run("UPDATE sites SET last_seen_ms = ? WHERE site = ?", (at_ms, site))
            return received


def _cells_where(
    start_ms: int, end_ms: int, venue: str | None, site: str | None
) -> tuple[str, list[object]]:
    clauses = ["start_ms >= ?", "start_ms < ?"]
    params: list[object] = [start_ms, end_ms]
    for column, value in (("venue", venue), ("site", site)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def _replay(tx: Tx, request: Envelope) -> Received:
    (endpoint, body_sha256, response), *_ = tx.rows(
        "SELECT endpoint, body_sha256, response FROM idempotency "
        "WHERE site = ? AND idempotency_key = ?",
        (request.site.site, request.key),
    )
    if endpoint != request.endpoint or not hmac.compare_digest(body_sha256, request.body_sha256):
        raise WireError(
            409,
            f"Idempotency-Key {request.key} was used before for another body: the key must be "
            "the sha256 of the uncompressed body, new for every new body",
        )
    first = orjson.loads(response)
    return Received(int(first["stored"]), duplicate=True)


def _store_insight(tx: Tx, site: Site, version_ms: int, item: Insight, at_ms: int) -> int:
    # The later version wins: an hour recomputed after late events replaces the earlier cell,
    # and an old version arriving late (a retried batch) does not undo it. Later means a
    # higher revision, a counter of the site's that no clock moves; a revision replaces any
    # cell stored without one (its computed_ms may come from a clock that ran ahead). The
    # same item again (its id in sync_items pruned by the hygiene job, then a site's late
    # retry) is the same version: it changes nothing, is not counted, queues no rollup.
    stored = tx.run(
        "INSERT INTO insight_cells (site, start_ms, venue, version_ms, revision, item_id, k, "
        "suppressed, reason, cell, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (site, start_ms) DO UPDATE SET venue = excluded.venue, "
        "version_ms = excluded.version_ms, revision = excluded.revision, "
        "item_id = excluded.item_id, k = excluded.k, suppressed = excluded.suppressed, "
        "reason = excluded.reason, cell = excluded.cell, received_ms = excluded.received_ms "
        "WHERE insight_cells.item_id <> excluded.item_id "
        "AND CASE WHEN excluded.revision IS NOT NULL "
        "THEN insight_cells.revision IS NULL OR insight_cells.revision <= excluded.revision "
        "ELSE insight_cells.revision IS NULL AND insight_cells.version_ms <= excluded.version_ms "
        "END",
        (
            site.site,
            item.start_ms,
            site.venue,
            version_ms,
            item.revision,
            item.id,
            item.k,
            int(item.document is None),
            item.reason,
            None if item.document is None else orjson.dumps(item.document).decode(),
            at_ms,
        ),
    )
    if stored:
        rollups.queue_hour(tx, site.site, item.start_ms)
    return stored


def _apply_notice(tx: Tx, site: str, notice: Notice, at_ms: int) -> None:
    detail: dict[str, object] = {
        "item_id": notice.id,
        "subject_hash": notice.subject_hash,
        "requested_ms": notice.timestamp_ms,
    }
    if notice.purpose is not None:
        detail["purpose"] = notice.purpose
    if notice.removes_identified:
        detail["forward_queue_dropped"] = forwarding.queue_notice(
            tx,
            site,
            notice.kind,
            notice.id,
            notice.subject_hash,
            notice.purpose,
            notice.timestamp_ms,
            at_ms,
        )
        removed = tx.run(
            "DELETE FROM identified WHERE site = ? AND subject_hash = ?",
            (site, notice.subject_hash),
        )
        tx.run(
            "INSERT INTO erasure_receipts (site, subject_hash, kind, item_id, rows_removed, "
            "requested_ms, completed_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                site,
                notice.subject_hash,
                notice.kind,
                notice.id,
                removed,
                notice.timestamp_ms,
                at_ms,
            ),
        )
        detail["identified_removed"] = removed
    else:
        detail["identified_removed"] = 0
        detail["note"] = "central holds nothing for this purpose"
    audit(tx, site, notice.kind, detail)


def _forgotten_ms(tx: Tx, site: str, subject_hash: str) -> int | None:
    rows = tx.rows(
        "SELECT max(requested_ms) FROM erasure_receipts WHERE site = ? AND subject_hash = ?",
        (site, subject_hash),
    )
    return None if rows[0][0] is None else int(rows[0][0])
