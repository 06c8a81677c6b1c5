"""The ``edge-agent-collector`` command line: serve the API, add a site, print a summary.

The database is ``--db`` or ``$EDGE_COLLECTOR_DB``: a ``postgresql://`` DSN, else a SQLite file.
Every error the collector raises on purpose becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent import logs
from edge_agent.collector import summary, wire
from edge_agent.collector.wire import valid_id
from edge_agent.core.cellcheck import CellLimits
from edge_agent.errors import CollectorError, EdgeAgentError
from edge_agent.service import Notifier, service_manager, under_journald

if TYPE_CHECKING:
    # The central store and the web app need the `[collector]` extra, checked in `main`.
    import uvicorn

    from edge_agent.collector.store.central import CentralStore

ENV_DB = "EDGE_COLLECTOR_DB"
ENV_ADMIN_TOKEN = "EDGE_COLLECTOR_ADMIN_TOKEN"  # noqa: S105 - a variable name, not a secret

Handler = Callable[[argparse.Namespace], int]


def _target(args: argparse.Namespace) -> str:
    target = str(args.db or os.environ.get(ENV_DB, ""))
    if not target:
        raise CollectorError(
            f"no database: pass --db PATH_OR_DSN or set {ENV_DB} "
            "(a SQLite file path, or postgresql://user@host/dbname)"
        )
    return target


def _open(args: argparse.Namespace) -> CentralStore:
    from edge_agent.collector.store.central import CentralStore

    return CentralStore.open(_target(args))


#: What ``pip install 'edge-agent[collector]'`` brings, which a site box does without.
EXTRA = ("fastapi", "pydantic", "psycopg")


def check_extra(find: Callable[[str], object] = importlib.util.find_spec) -> None:
    """Fail with the command that fixes it when the collector's packages are missing.

    Raises:
        CollectorError: one of `EXTRA` is not installed.
    """
    missing = [name for name in EXTRA if find(name) is None]
    if missing:
        raise CollectorError(
            f"the collector's packages are not installed ({', '.join(missing)} missing): "
            "run pip install 'edge-agent[collector]' in the collector's environment"
        )


def _admin_token(args: argparse.Namespace) -> str:
    if args.admin_token_file is not None:
        try:
            return str(args.admin_token_file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise CollectorError(
                f"cannot read the admin token file {args.admin_token_file}: {exc.strerror}"
            ) from exc
    token = os.environ.get(ENV_ADMIN_TOKEN, "")
    if not token:
        raise CollectorError(
            f"no admin token: pass --admin-token-file FILE or set {ENV_ADMIN_TOKEN} "
            "(the Bearer token for /v1/insights, /v1/sites and /v1/audit)"
        )
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API in the foreground until interrupted."""
    import uvicorn  # here: the other commands need no web server

    from edge_agent.collector.app import create_app
    from edge_agent.collector.store.central import redact
    from edge_agent.slowclients import guarded_http

    token = _admin_token(args)
    store = _open(args)
    try:
        app = create_app(store, token, _limits(args))
        logs.setup(args.log_level, under_journald())
        logs.log(
            logging.getLogger("edge_agent.collector"),
            logging.INFO,
            "collector_started",
            "collector listening",
            host=args.host,
            port=args.port,
            database=redact(_target(args)),
        )
        # log_config None: uvicorn's own records go through the JSON lines handler too.
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
            http=guarded_http(args.connections_per_client, args.request_timeout_s),
        )
        manager = service_manager()
        server = _service(config, Notifier(manager.notify_socket, manager.watchdog_usec))
        server.run()
        if not server.started:
            raise CollectorError(
                f"the collector could not listen on {args.host}:{args.port} (see the log above)"
            )
    finally:
        store.close()
    return 0


def _not_negative(kind: type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} is negative")
        return value

    return parse


def _limits(args: argparse.Namespace) -> wire.Limits:
    return wire.Limits(
        CellLimits(args.max_zones, args.max_list_items, args.max_count, args.max_order_total),
        int(args.max_clock_skew_s * 1000),
    )


def _service(config: uvicorn.Config, notifier: Notifier) -> uvicorn.Server:
    """A uvicorn server that tells systemd (when it runs the collector) how it is doing."""
    import uvicorn

    class Service(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # Started means listening: requests are taken from here on.
            if self.started:
                notifier.ready(f"listening on {config.host}:{config.port}")

        async def on_tick(self, counter: int) -> bool:
            # uvicorn's main loop ticks every 0.1 s on the event loop that serves requests: a
            # request handler that blocks the loop stops the ticks, and with them the pings.
            notifier.alive()
            return await super().on_tick(counter)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            notifier.stopping()
            await super().shutdown(sockets)

    return Service(config)


def cmd_add_site(args: argparse.Namespace) -> int:
    """Register a site and print its token, the only time it is shown."""
    venue = args.venue or args.site
    for name, value in (("site", args.site), ("venue", venue)):
        if not valid_id(value):
            raise CollectorError(f"{name} {value!r}: use 1-64 letters, digits, - _ or .")
    token = secrets.token_urlsafe(32)
    store = _open(args)
    try:
        store.add_site(args.site, venue, hashlib.sha256(token.encode()).hexdigest())
    finally:
        store.close()
    print(token)
    print(
        f"site {args.site} added at venue {venue}. The line above is its token, shown only "
        'now: put it in the agent\'s config as [sync] token = "..."',
        file=sys.stderr,
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Print merged insights, as ``GET /v1/insights`` answers them."""
    query = summary.make_query(
        start=args.start,
        end=args.end,
        by=args.by,
        k=args.k,
        venue=args.venue,
        site=args.site,
        metrics=args.metric or (),
        today=datetime.now(UTC).date(),
    )
    store = _open(args)
    try:
        cells = store.insight_cells(query.start_ms, query.end_ms, query.venue, query.site)
    finally:
        store.close()
    result = summary.summarise([(c.site, c.venue, c.start_ms, c.cell) for c in cells], query)
    if args.format == "csv":
        sys.stdout.write(summary.to_csv(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Make the publisher's Ed25519 key pair: the private key to a 0600 file, the public key
    printed for the agents' ``[models] publisher_key``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if args.out.exists():
        raise CollectorError(f"{args.out} exists: a publisher key is never overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
    except OSError as exc:
        raise CollectorError(f"cannot write {args.out}: {exc.strerror}") from exc
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    print(base64.b64encode(raw).decode())
    print(
        f"private key written to {args.out} (keep it off the collector host if you can). The "
        "line above is the public key: put it in every agent's config as [models] "
        'publisher_key = "..."',
        file=sys.stderr,
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Sign a model release with the publisher's key and keep it for sites to pull."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.core.releases import Manifest, Refused, parse, release

    try:
        model = args.model.read_bytes()
        vocabulary = json.loads(args.vocabulary.read_text(encoding="utf-8"))
        key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
        metrics, training = json.loads(args.metrics), json.loads(args.training)
    except (OSError, ValueError) as exc:
        raise CollectorError(f"cannot read the release's files or options: {exc}") from exc
    if not isinstance(metrics, dict) or not isinstance(training, dict):
        raise CollectorError("--metrics and --training must be JSON objects")
    if not isinstance(key, Ed25519PrivateKey):
        raise CollectorError(f"{args.key} is not an Ed25519 private key (make one with keygen)")
    unsigned = Manifest(
        args.name,
        args.version,
        datetime.now(UTC).isoformat(timespec="seconds"),
        tuple(str(v) for v in vocabulary) if isinstance(vocabulary, list) else (),
        "",
        0,
        metrics=metrics,
        training=training,
    )
    manifest = json.dumps(release(unsigned, model, key).document()).encode()
    checked = parse(manifest)
    if isinstance(checked, Refused):
        raise CollectorError(f"the release would be refused by every site: {checked.reason}")
    store = _open(args)
    try:
        store.publish_release(args.name, args.version, manifest, model)
    finally:
        store.close()
    print(f"published {args.name} {args.version} ({len(model)} bytes)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent-collector",
        description="The central collector: sites sync insights, notices and identified data "
        "to it; it merges the insights of a venue's agents.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_db(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--db", help=f"SQLite file, or postgresql://user@host/dbname (default: ${ENV_DB})"
        )
        return sub

    serve = with_db(commands.add_parser("serve", help="run the HTTP API"))
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8700, help="port to listen on")
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        help=f"file holding the admin Bearer token (default: ${ENV_ADMIN_TOKEN})",
    )
    serve.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    cells = CellLimits()
    for flag, kind, default, what in (
        ("--max-zones", int, cells.max_zones, "zones one hour cell may name"),
        ("--max-list-items", int, cells.max_list_items, "entries of a cell's top list"),
        ("--max-count", int, cells.max_count, "any count of one hour at one site"),
        ("--max-order-total", float, cells.max_order_total, "mean order total of an hour"),
        (
            "--request-timeout-s",
            float,
            60.0,
            "seconds a client has to send a whole request (a site's push included)",
        ),
        (
            "--connections-per-client",
            int,
            64,
            "connections one client address may hold at once; 0: no bound (behind a proxy)",
        ),
        (
            "--max-clock-skew-s",
            float,
            wire.MAX_SKEW_MS / 1000,
            "seconds a site's times may be ahead of this server's clock",
        ),
    ):
        shown = f"{default:,.0f}"
        serve.add_argument(
            flag, type=_not_negative(kind), default=default, help=f"{what} ({shown})"
        )
    serve.set_defaults(handler=cmd_serve)

    add = with_db(
        commands.add_parser(
            "add-site",
            help="register a site and print its token once",
            description="Register SITE (the agent's [site] id) and print a new token for it. "
            "Only the token's sha256 is stored: keep the printed token.",
        )
    )
    add.add_argument("site", help="the agent's [site] id")
    add.add_argument("--venue", help="the venue whose agents merge (default: the site itself)")
    add.set_defaults(handler=cmd_add_site)

    report = with_db(
        commands.add_parser(
            "summary",
            help="print merged insights per venue (or site) and day (or hour)",
            description="Hours of the sites of a venue are merged, then released with k "
            "suppression, as GET /v1/insights does.",
        )
    )
    report.add_argument("--venue", help="only this venue")
    report.add_argument("--site", help="only this site, grouped by site")
    report.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first day (UTC)")
    report.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last day (default today)")
    report.add_argument(
        "--metric",
        action="append",
        choices=summary.METRICS,
        metavar="NAME",
        help="only this figure (repeatable): " + ", ".join(summary.METRICS),
    )
    report.add_argument("--by", choices=("day", "hour"), default="day")
    report.add_argument("--k", type=int, default=5, help="suppression threshold (default 5)")
    report.add_argument("--format", choices=("json", "csv"), default="json")
    report.set_defaults(handler=cmd_summary)

    keygen = commands.add_parser(
        "keygen",
        help="make the model publisher's Ed25519 key pair",
        description="Write a new Ed25519 private key (mode 0600) and print its public key, "
        "which agents pin as [models] publisher_key.",
    )
    keygen.add_argument("--out", type=Path, required=True, help="where to write the private key")
    keygen.set_defaults(handler=cmd_keygen)

    publish = with_db(
        commands.add_parser(
            "publish",
            help="sign a model release and keep it for sites to pull",
            description="Sign MODEL (an ONNX file) with the publisher's key into a release "
            "NAME VERSION; sites pull it, verify it against the pinned public key, "
            "shadow-score it and promote it when it is not worse.",
        )
    )
    publish.add_argument("name", help="the model's name, e.g. next-basket")
    publish.add_argument("version", help="a new version, e.g. 2026.11.26-1")
    publish.add_argument("--model", type=Path, required=True, help="the ONNX file")
    publish.add_argument(
        "--vocabulary", type=Path, required=True, help="JSON list of item ids, in score order"
    )
    publish.add_argument("--key", type=Path, required=True, help="the publisher's private key")
    publish.add_argument("--metrics", default="{}", help="offline metrics, JSON object")
    publish.add_argument("--training", default="{}", help="training data summary, JSON object")
    publish.set_defaults(handler=cmd_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the process exit code."""
    args = _parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        check_extra()
        return handler(args)
    except EdgeAgentError as exc:
        print(f"edge-agent-collector: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
