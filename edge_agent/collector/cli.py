"""The ``edge-agent-collector`` command line: serve the API, add a site, print a summary.

The database is ``--db`` or ``$EDGE_COLLECTOR_DB``: a ``postgresql://`` DSN, else a SQLite file.
Every error the collector raises on purpose becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from edge_agent import logs
from edge_agent.collector import summary, wire
from edge_agent.core.cellcheck import CellLimits
from edge_agent.core.names import valid_id
from edge_agent.errors import CollectorError, EdgeAgentError
from edge_agent.service import Notifier, service_manager, under_journald

if TYPE_CHECKING:
    # The central store and the web app need the `[collector]` extra, checked in `main`.
    import uvicorn

    from edge_agent.collector import fleet, hygiene
    from edge_agent.collector.store.central import CentralStore
    from edge_agent.collector.workers import Reporter, Slot

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


def _open(
    args: argparse.Namespace, *, existing: bool = False, pool_size: int | None = None
) -> CentralStore:
    """The collector's store; with ``existing``, a SQLite file that is not there is an
    error rather than a new empty database (a mistyped ``--db`` would read as no data)."""
    from edge_agent.collector.store.central import CentralStore
    from edge_agent.collector.store.engine import POOL_SIZE

    target = _target(args)
    if existing and not target.startswith("postgresql://") and not Path(target).is_file():
        raise CollectorError(
            f"no collector database at {target}: check --db or ${ENV_DB} (the collector's "
            "serve, add-site and users add make one)"
        )
    return CentralStore.open(target, pool_size=POOL_SIZE if pool_size is None else pool_size)


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


@dataclass(frozen=True)
class _Serving:
    """What each serving process is given: serve's options, read and checked once (by the
    supervisor, with several workers: each is spawned with a copy)."""

    target: str
    admin_token: str = field(repr=False)
    limits: wire.Limits
    name: str
    public_url: str | None
    fleet: fleet.Options
    retention: hygiene.Retention
    host: str
    port: int
    log_level: str
    connections_per_client: int
    request_timeout_s: float
    pool_size: int
    processes: int = 1
    shared_metrics: Path | None = None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API in the foreground until interrupted: in this process, or with
    ``--workers`` above 1 in that many worker processes sharing the port."""
    from edge_agent.collector import fleet, hygiene
    from edge_agent.collector.app import check_admin_token
    from edge_agent.collector.store.engine import redact
    from edge_agent.collector.workers import MAX_WORKERS

    if not 1 <= args.workers <= MAX_WORKERS:
        raise CollectorError(
            f"--workers {args.workers}: give 1-{MAX_WORKERS} processes (about one per core; "
            "docs/sync-and-collector.md says how to size them)"
        )
    token = _admin_token(args)
    check_admin_token(token)
    serving = _Serving(
        target=_target(args),
        admin_token=token,
        limits=_limits(args),
        name=args.name,
        public_url=_public_url(args.public_url),
        fleet=fleet.Options(args.silent_after_s, args.metrics_open),
        retention=hygiene.Retention(args.keys_kept_days),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        connections_per_client=args.connections_per_client,
        request_timeout_s=args.request_timeout_s,
        pool_size=args.pool_size,
        processes=args.workers,
    )
    # Opened (and migrated) here, before anything listens, whatever the number of workers:
    # a database that cannot be reached is one line on stderr, and an upgrade's migrations
    # run once, not in each worker at the same time.
    store = _open(args, pool_size=args.pool_size)
    logs.setup(args.log_level, under_journald())
    logs.log(
        logging.getLogger("edge_agent.collector"),
        logging.INFO,
        "collector_started",
        "collector listening",
        host=args.host,
        port=args.port,
        database=redact(serving.target),
        workers=args.workers,
        pool_size=args.pool_size,
    )
    manager = service_manager()
    notifier = Notifier(manager.notify_socket, manager.watchdog_usec)
    if args.workers == 1:
        try:
            _serve(serving, notifier, store, background=True)
        finally:
            store.close()
        return 0
    store.close()
    _supervise(serving, notifier, manager.watchdog_usec)
    return 0


def _supervise(serving: _Serving, notifier: Notifier, watchdog_usec: int) -> None:
    """Serve with ``serving.processes`` workers until SIGTERM or SIGINT."""
    from edge_agent.collector import workers

    sock = workers.listen(serving.host, serving.port)
    # prometheus_client's multiprocess mode: set before a worker starts (each reads it when
    # it imports the library), so the counters of /metrics add up across workers.
    metrics = Path(tempfile.mkdtemp(prefix="edge-collector-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    try:
        workers.Supervisor(
            functools.partial(_serve_slot, replace(serving, shared_metrics=metrics)),
            serving.processes,
            sock,
            notifier,
            address=f"{serving.host}:{serving.port}",
            stall_s=watchdog_usec / 1_000_000 if watchdog_usec > 0 else workers.STALL_S,
        ).run()
    finally:
        sock.close()
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(metrics, ignore_errors=True)


def _serve_slot(serving: _Serving, slot: Slot) -> None:
    """A worker process's serving (`workers.Serve`): its own pool and app, on the shared
    socket; slot 0 runs the background jobs."""
    from edge_agent.collector.store.central import CentralStore

    logs.setup(serving.log_level, under_journald())
    store = CentralStore.open(serving.target, pool_size=serving.pool_size)
    try:
        _serve(serving, slot.heartbeat, store, background=slot.background, sock=slot.socket)
    finally:
        store.close()


def _serve(
    serving: _Serving,
    reporter: Reporter,
    store: CentralStore,
    *,
    background: bool,
    sock: socket.socket | None = None,
) -> None:
    """Serve the API over ``store`` until stopped: on ``sock`` when given (a worker), else
    on ``serving``'s address.

    Raises:
        CollectorError: it could not listen.
    """
    import uvicorn  # here: the other commands need no web server

    from edge_agent.collector import fleet, hygiene
    from edge_agent.collector.app import create_app
    from edge_agent.slowclients import guarded_http

    app = create_app(
        store,
        serving.admin_token,
        serving.limits,
        name=serving.name,
        public_url=serving.public_url,
        background=background,
        processes=serving.processes,
        shared_metrics=serving.shared_metrics,
    )
    fleet.configure(app, serving.fleet)
    hygiene.configure(app, serving.retention)
    # log_config None: uvicorn's own records go through the JSON lines handler too.
    config = uvicorn.Config(
        app,
        host=serving.host,
        port=serving.port,
        log_config=None,
        access_log=False,
        http=guarded_http(serving.connections_per_client, serving.request_timeout_s),
    )
    server = _service(config, reporter)
    server.run(None if sock is None else [sock])
    if not server.started:
        raise CollectorError(
            f"the collector could not listen on {serving.host}:{serving.port} (see the log above)"
        )


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


def _service(config: uvicorn.Config, notifier: Reporter) -> uvicorn.Server:
    """A uvicorn server that tells systemd (when it runs the collector), or its supervisor
    (a worker), how it is doing."""
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


#: ``rotate-token --overlap-hours``: the default (a day to reach every site's installer)
#: and the longest (an old token is meant to live only while its site is switched over).
OVERLAP_HOURS = 24.0
MAX_OVERLAP_HOURS = 720.0


def cmd_rotate_token(args: argparse.Namespace) -> int:
    """Give a site a new token, printed once or written to a 0600 file; the old one works
    until the overlap ends, then is refused."""
    from edge_agent.collector.credentials import digest

    if not args.overlap_hours <= MAX_OVERLAP_HOURS:  # "nan" is not negative either
        raise CollectorError(
            f"--overlap-hours {args.overlap_hours:g}: at most {MAX_OVERLAP_HOURS:g} (30 days); "
            "the old token is meant to work only while the site is switched to the new one"
        )
    token = secrets.token_urlsafe(32)
    sink = None if args.token_file is None else _new_secret_file(args.token_file)
    try:
        store = _open(args, existing=True)
        try:
            rotation = store.rotate_token(
                args.site, digest(token), int(args.overlap_hours * 3600 * 1000)
            )
        finally:
            store.close()
    except BaseException:
        if sink is not None:
            sink.close()
            args.token_file.unlink(missing_ok=True)
        raise
    until = datetime.fromtimestamp(rotation.expires_ms / 1000, UTC).isoformat(timespec="seconds")
    if sink is None:
        print(token)
        where = "The line above is its new token, shown only now"
    else:
        try:
            with sink:
                sink.write(token + "\n")
        except OSError as exc:
            raise CollectorError(
                f"the token of site {args.site} was replaced but {args.token_file} could not be "
                f"written ({exc.strerror}): run rotate-token again (the old token works until "
                f"{until})"
            ) from exc
        where = f"Its new token is in {args.token_file} (mode 0600)"
    earlier = (
        f" {rotation.earlier_valid} token(s) of earlier rotations also work until then at most."
        if rotation.earlier_valid
        else ""
    )
    ends = (
        "The old token is refused from now on."
        if rotation.expires_ms <= rotation.replaced_ms
        else f"The old token works until {until}, and is refused after."
    )
    print(
        f'site {args.site}: {where}. Put it in the agent\'s config as [sync] token = "..." '
        f"and restart the agent. {ends}{earlier}",
        file=sys.stderr,
    )
    return 0


def _new_secret_file(path: Path) -> TextIO:
    """``path`` made anew, readable by its owner only (never an existing file: it may hold
    the token the site still uses)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CollectorError(
            f"{path} exists: give a new file for the new token (one is never overwritten)"
        ) from None
    except OSError as exc:
        raise CollectorError(f"cannot write {path}: {exc.strerror}") from exc
    return os.fdopen(descriptor, "w", encoding="utf-8")


def _public_url(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise CollectorError(
            f"--public-url {url!r}: give the address users open, e.g. https://central.example"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # The pages link to /login, /static/...: they must be at the root of the address.
        raise CollectorError(
            f"--public-url {url!r}: give the address without a path "
            f"({parts.scheme}://{parts.netloc}); the collector is served at its root"
        )
    return url


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password of ``--password-file`` (its first line), else a new one; and whether it
    was made here (then it must be printed)."""
    from edge_agent.collector.credentials import password_problem

    if args.password_file is None:
        return secrets.token_urlsafe(18), True
    try:
        lines = args.password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectorError(f"cannot read the password file {args.password_file}: {exc}") from exc
    password = lines[0] if lines else ""
    problem = password_problem(password)
    if problem:
        raise CollectorError(f"{args.password_file}: {problem}")
    return password, False


def _hashed(password: str) -> str:
    from edge_agent.collector.credentials import hash_password

    return hash_password(password, secrets.token_bytes(16))


def _user_name(name: str) -> str:
    if not valid_id(name):
        raise CollectorError(f"user {name!r}: use 1-64 letters, digits, - _ or .")
    return name


def _said(password: str, made: bool, done: str, what: str) -> None:
    """Print a password made here on standard output, the only time it is shown, and what
    was done on standard error."""
    if made:
        print(password)
    shown = f" The line above is {what}, shown only now." if made else ""
    print(done + shown, file=sys.stderr)


def cmd_users_add(args: argparse.Namespace) -> int:
    """Add a user; print the password made for them, the only time it is shown."""
    password, made = _password(args)
    store = _open(args)
    try:
        store.add_user(_user_name(args.name), args.role, _hashed(password))
    finally:
        store.close()
    _said(password, made, f"user {args.name} added as {args.role}.", "their password")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    """Print every user: name, role, when added, tokens, and whether disabled."""
    store = _open(args, existing=True)
    try:
        found = store.users()
    finally:
        store.close()
    for user in found:
        added = datetime.fromtimestamp(user.created_ms / 1000, UTC).isoformat(timespec="seconds")
        state = "  disabled" if user.disabled else ""
        print(f"{user.name}\t{user.role}\tadded {added}\t{user.tokens} token(s){state}")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    """Remove a user: their sessions and API tokens stop working at once."""
    store = _open(args, existing=True)
    try:
        store.remove_user(args.name)
    finally:
        store.close()
    print(f"user {args.name} removed; their sessions and tokens no longer work", file=sys.stderr)
    return 0


def cmd_users_password(args: argparse.Namespace) -> int:
    """Set a user's password (printed when made here); their open sessions end."""
    password, made = _password(args)
    store = _open(args, existing=True)
    try:
        store.set_password(args.name, _hashed(password))
    finally:
        store.close()
    _said(password, made, f"password of {args.name} set; their sessions ended.", "the password")
    return 0


def cmd_users_token(args: argparse.Namespace) -> int:
    """Make an API token for a user and print it, the only time it is shown."""
    from edge_agent.collector.credentials import digest

    if not valid_id(args.label):
        raise CollectorError(f"label {args.label!r}: use 1-64 letters, digits, - _ or .")
    token = secrets.token_urlsafe(32)
    store = _open(args, existing=True)
    try:
        store.add_token(args.name, args.label, args.role, digest(token))
    finally:
        store.close()
    print(token)
    print(
        f"token {args.label!r} of {args.name} made. The line above is the token, shown only "
        "now: send it as Authorization: Bearer <token>",
        file=sys.stderr,
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Print merged insights, as ``GET /v1/insights`` answers them."""
    from edge_agent.collector.insights import summary_of

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
    store = _open(args, existing=True)
    try:
        result, found = summary_of(store, query, summary.summarise)
    finally:
        store.close()
    if not found:
        print(
            f"no insight cells from {query.start_day} to {query.end_day}"
            + (f" of venue {query.venue}" if query.venue else "")
            + (f" of site {query.site}" if query.site else "")
            + ": sites send an hour once it has ended, at their next sync (every 15 min by "
            "default); edge-agent-collector fleet shows when each site was last heard from",
            file=sys.stderr,
        )
    if args.format == "csv":
        sys.stdout.write(summary.to_csv(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write each site's days in the BI exports' fixed schema, as ``GET /v1/export`` does."""
    from edge_agent.collector import analytics, exports
    from edge_agent.collector.workspace import export_of

    span = analytics.period(args.start, args.end, datetime.now(UTC).date())
    store = _open(args, existing=True)
    try:
        sites = store.described_sites(args.venue, args.site)
        chunks = export_of(store, span, sites, args.shape)
        if args.format == "parquet":
            if args.out is None:
                raise CollectorError("--format parquet writes a file: give --out PATH")
            with args.out.open("wb") as sink:
                exports.write_parquet(chunks, args.shape, sink)
        elif args.out is None:
            for piece in exports.csv_chunks(chunks, args.shape):
                sys.stdout.write(piece)
        else:
            with args.out.open("w", encoding="utf-8", newline="") as text:
                for piece in exports.csv_chunks(chunks, args.shape):
                    text.write(piece)
    except OSError as exc:
        raise CollectorError(f"cannot write {args.out}: {exc.strerror}") from exc
    finally:
        store.close()
    if not sites:
        print(
            "no site is registered" + (f" in venue {args.venue}" if args.venue else ""),
            file=sys.stderr,
        )
    return 0


def _write_key(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectorError(f"cannot read the write key file {path}: {exc}") from exc
    key = lines[0].strip() if lines else ""
    if not key:
        raise CollectorError(f"{path}: its first line must be the write key")
    return key


def cmd_destinations_set_key(args: argparse.Namespace) -> int:
    """Give a destination another write key; its waiting items go with it at once."""
    key = _write_key(args.write_key_file)
    store = _open(args, existing=True)
    try:
        store.set_write_key(args.name, key)
    finally:
        store.close()
    print(f"write key of {args.name} changed; what waits for it is sent again", file=sys.stderr)
    return 0


def cmd_destinations_add(args: argparse.Namespace) -> int:
    """Add a CRM destination; it gets the identified items stored from now on."""
    if not valid_id(args.name):
        raise CollectorError(f"destination {args.name!r}: use 1-64 letters, digits, - _ or .")
    try:
        parts = urlsplit(args.url)
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise CollectorError(
            f"--url {args.url!r}: give the destination's base address, e.g. "
            "https://api.segment.io (the forwarder adds /v1/batch)"
        )
    key = _write_key(args.write_key_file)
    store = _open(args)
    try:
        store.add_destination(args.name, args.kind, args.url, key)
    finally:
        store.close()
    print(
        f"destination {args.name} added: identified items stored from now on, and notices, "
        "are forwarded to it by the serve process",
        file=sys.stderr,
    )
    return 0


def cmd_destinations_list(args: argparse.Namespace) -> int:
    """Print each destination and its queue: queued, delivered, failing, dead, last error."""
    store = _open(args, existing=True)
    try:
        found = store.destination_status()
    finally:
        store.close()
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "name": s.destination.name,
                        "kind": s.destination.kind,
                        "url": s.destination.url,
                        "enabled": s.destination.enabled,
                        "queued": s.queued,
                        "delivered": s.delivered,
                        "failing": s.failing,
                        "dead": s.dead,
                        "last_error": s.last_error,
                    }
                    for s in found
                ],
                indent=2,
            )
        )
        return 0
    for s in found:
        d = s.destination
        print(
            f"{d.name}\t{d.kind}\t{d.url}\tqueued {s.queued}\tdelivered {s.delivered}\t"
            f"failing {s.failing}\tdead {s.dead}"
            + (f"\tlast error: {s.last_error}" if s.last_error else "")
        )
    return 0


def cmd_destinations_remove(args: argparse.Namespace) -> int:
    """Remove a destination and its queue."""
    store = _open(args, existing=True)
    try:
        dropped = store.remove_destination(args.name)
    finally:
        store.close()
    print(f"destination {args.name} removed; {dropped} undelivered row(s) dropped", file=sys.stderr)
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    """Print every site's health, as ``GET /v1/fleet`` judges it."""
    from edge_agent.collector import fleet
    from edge_agent.collector.store.engine import now_ms

    store = _open(args, existing=True)
    try:
        sites = store.fleet()
    finally:
        store.close()
    listed = fleet.entries(sites, now_ms(), fleet.Options(silent_after_s=args.silent_after_s))
    if args.format == "json":
        print(json.dumps({"counts": fleet.counts(listed), "sites": listed}, indent=2))
    else:
        print(fleet.table(listed))
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
    serve.add_argument(
        "--public-url",
        help="the address users open (https://... behind a TLS proxy): the origin forms must "
        "come from; https makes the cookies Secure",
    )
    serve.add_argument(
        "--name", default="edge-agent collector", help="the name the collector's pages show"
    )
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
        (
            "--silent-after-s",
            float,
            900.0,
            "seconds without a check-in after which a site is silent in /v1/fleet and /metrics",
        ),
    ):
        shown = f"{default:,.0f}"
        serve.add_argument(
            flag, type=_not_negative(kind), default=default, help=f"{what} ({shown})"
        )
    # hygiene.KEYS_KEPT_DAYS and its bounds, checked by hygiene.Retention: not imported, as
    # the parser is built before the [collector] extra is known to be there.
    serve.add_argument(
        "--keys-kept-days",
        type=int,
        default=30,
        metavar="DAYS",
        help="days idempotency keys and insight item ids are kept to answer retries, 1-3650 "
        "(30); a retry after them is still stored once",
    )
    serve.add_argument(
        "--metrics-open",
        action="store_true",
        help="serve /metrics without the admin token (a scraper on a private network)",
    )
    # workers.MAX_WORKERS and engine.POOL_SIZE's bounds, checked by cmd_serve and the store:
    # not imported, for the same reason as above.
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port, 1-32 (1: this process serves); one of them "
        "runs the background jobs, and one that dies is replaced",
    )
    serve.add_argument(
        "--pool-size",
        type=int,
        default=16,
        metavar="P",
        help="database connections each worker may open at once, 1-64 (16); PostgreSQL must "
        "allow workers x P of them",
    )
    serve.set_defaults(handler=cmd_serve)

    fleet_table = with_db(
        commands.add_parser(
            "fleet",
            help="print every site's health: healthy, degraded or silent, and why",
            description="One line per site, the worst first: its name, verdict, how long ago "
            "it checked in and the first reason, as GET /v1/fleet judges them.",
        )
    )
    fleet_table.add_argument(
        "--silent-after-s",
        type=_not_negative(float),
        default=900.0,
        help="seconds without a check-in after which a site is silent (900)",
    )
    fleet_table.add_argument("--format", choices=("text", "json"), default="text")
    fleet_table.set_defaults(handler=cmd_fleet)

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

    rotate = with_db(
        commands.add_parser(
            "rotate-token",
            help="give a site a new token; the old one works until the overlap ends",
            description="Make a new token for SITE and print it once (or write it to a 0600 "
            "file). The old token keeps working for --overlap-hours, then is refused with a "
            "message telling the site to install the new one. A second rotation within the "
            "overlap never extends an older token's end.",
        )
    )
    rotate.add_argument("--site", required=True, help="the site's id, as add-site was given it")
    rotate.add_argument(
        "--overlap-hours",
        type=_not_negative(float),
        default=OVERLAP_HOURS,
        metavar="H",
        help="hours the old token still works, 0-720 (24); 0 refuses it at once (a leaked token)",
    )
    rotate.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="write the new token to this new file (mode 0600) instead of printing it",
    )
    rotate.set_defaults(handler=cmd_rotate_token)

    destinations = commands.add_parser(
        "destinations",
        help="the CRM endpoints consented identified data is forwarded to: add, list, remove",
        description="Segment-compatible destinations (docs/crm-forwarding.md): the serve "
        "process forwards each identified item stored after a destination is added, and "
        "every erasure and crm_sync withdrawal.",
    )
    destination_commands = destinations.add_subparsers(dest="destinations_command", required=True)
    destinations_add = with_db(
        destination_commands.add_parser("add", help="add a destination (Segment /v1/batch)")
    )
    destinations_add.add_argument(
        "name", help="the destination's name (1-64 letters, digits, - _ .)"
    )
    destinations_add.add_argument(
        "--url", required=True, help="its base address, e.g. https://api.segment.io"
    )
    destinations_add.add_argument(
        "--write-key-file",
        type=Path,
        required=True,
        help="file whose first line is the write key (sent as the Basic user name)",
    )
    destinations_add.add_argument("--kind", choices=("segment",), default="segment")
    destinations_add.set_defaults(handler=cmd_destinations_add)
    destinations_list = with_db(
        destination_commands.add_parser(
            "list", help="each destination: queued, delivered, failing, dead, last error"
        )
    )
    destinations_list.add_argument("--format", choices=("text", "json"), default="text")
    destinations_list.set_defaults(handler=cmd_destinations_list)
    destinations_remove = with_db(
        destination_commands.add_parser(
            "remove", help="remove a destination; what it has not received is dropped"
        )
    )
    destinations_remove.add_argument("name")
    destinations_remove.set_defaults(handler=cmd_destinations_remove)
    destinations_key = with_db(
        destination_commands.add_parser(
            "set-key", help="give a destination another write key; its queue is kept"
        )
    )
    destinations_key.add_argument("name")
    destinations_key.add_argument(
        "--write-key-file", type=Path, required=True, help="file whose first line is the key"
    )
    destinations_key.set_defaults(handler=cmd_destinations_set_key)

    users = commands.add_parser(
        "users",
        help="the people who sign in to central: add, list, remove, password, token",
        description="Accounts for the dashboard and the read API (docs/central-accounts.md). "
        "A viewer reads insights, sites and exports; an admin also the audit trail, people's "
        "data and user management.",
    )
    user_commands = users.add_subparsers(dest="users_command", required=True)
    roles = ("viewer", "admin")

    def with_password_file(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--password-file",
            type=Path,
            help="read the password from this file's first line (default: make one, print it)",
        )

    users_add = with_db(user_commands.add_parser("add", help="add a user"))
    users_add.add_argument("name", help="the user name (1-64 letters, digits, - _ .)")
    users_add.add_argument("--role", choices=roles, required=True)
    with_password_file(users_add)
    users_add.set_defaults(handler=cmd_users_add)
    users_list = with_db(user_commands.add_parser("list", help="list the users"))
    users_list.set_defaults(handler=cmd_users_list)
    users_remove = with_db(
        user_commands.add_parser("remove", help="remove a user, their sessions and tokens")
    )
    users_remove.add_argument("name")
    users_remove.set_defaults(handler=cmd_users_remove)
    users_password = with_db(
        user_commands.add_parser("password", help="set a user's password; ends their sessions")
    )
    users_password.add_argument("name")
    with_password_file(users_password)
    users_password.set_defaults(handler=cmd_users_password)
    users_token = with_db(
        user_commands.add_parser(
            "token",
            help="make an API token for a user (Bearer, for scripts and BI tools); printed once",
        )
    )
    users_token.add_argument("name")
    users_token.add_argument("--label", required=True, help="what the token is for, e.g. bi-tool")
    users_token.add_argument(
        "--role", choices=roles, help="the token's role, at most the user's (default: theirs)"
    )
    users_token.set_defaults(handler=cmd_users_token)

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
    report.add_argument(
        "--from", dest="start", metavar="YYYY-MM-DD", help="first day (each site's or venue's own)"
    )
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

    export = with_db(
        commands.add_parser(
            "export",
            help="write each site's days for a BI tool: long or wide, CSV or Parquet",
            description="The sites' rolled-up days (site-local) in a fixed schema, the same "
            "columns whatever the data (docs/central-workspace.md), as GET /v1/export.",
        )
    )
    export.add_argument("--venue", help="only this venue's sites")
    export.add_argument("--site", help="only this site")
    export.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first site-local day")
    export.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last day (default today)")
    export.add_argument(
        "--shape",
        choices=("long", "wide"),
        default="long",
        help="long: a line per site, day, metric and dimension; wide: a line per site and day",
    )
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument(
        "--out", type=Path, help="write to this file (CSV default: standard output)"
    )
    export.set_defaults(handler=cmd_export)

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
