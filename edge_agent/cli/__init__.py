"""The ``edge-agent`` command line: parse arguments, call app.py, print the result.

Every error the project raises on purpose becomes one readable line and exit code 2.
"""

from __future__ import annotations

import argparse
import calendar
import csv
import json
import random
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, cast

from edge_agent import __version__
from edge_agent.config import Settings, load_settings
from edge_agent.errors import EdgeAgentError

if TYPE_CHECKING:
    # The command line imports its adapters lazily: `--help` stays fast and light.
    from edge_agent.ops.provision import Change
    from edge_agent.serving.models import Models
    from edge_agent.store.backup import Copied
    from edge_agent.store.database import Store

Handler = Callable[[argparse.Namespace, Settings], int]


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def _agent_line(heartbeat: tuple[str, int] | None, every_s: float) -> str:
    if heartbeat is None:
        return "never ran"
    state, at = heartbeat
    if state == "stopped":
        return f"stopped at {_when(at)}"
    silent_s = time.time() - at / 1000
    if silent_s > 3 * every_s:
        return f"not seen since {_when(at)}: is it running? (it may have been killed)"
    return f"running (heartbeat {silent_s:.0f} s ago)"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the agent in the foreground."""
    from edge_agent import app, logs
    from edge_agent.service import under_journald

    logs.setup(settings.log.level, under_journald())
    app.run(settings)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the store's counters."""
    from edge_agent import app

    status = app.status(settings)
    if args.json:
        print(json.dumps(asdict(status), indent=2))
        return 0
    broker = status.broker.get("broker")
    heartbeat = status.broker.get("heartbeat")
    print(f"site:             {settings.site.id}")
    print(f"database:         {settings.database}")
    print(f"events stored:    {status.stored}")
    print(f"duplicates:       {status.duplicates}")
    print(f"dead letters:     {sum(status.dead_letters_by_reason.values())}")
    for reason, count in status.dead_letters_by_reason.items():
        print(f"  {reason:<24}{count}")
    print(f"agent:            {_agent_line(heartbeat, app.HEARTBEAT_EVERY_S)}")
    print(f"last event time:  {_when(status.last_event_ms)}")
    print(f"last stored at:   {_when(status.last_stored_ms)}")
    print(
        "broker:           "
        + (f"{broker[0]} since {_when(broker[1])}" if broker else "unknown (the agent never ran)")
    )
    queued = ", ".join(f"{k} {n}" for k, n in sorted(status.outbox.items())) or "empty"
    print(f"outbox:           {queued}")
    lost = ", ".join(
        f"{kind} {reason} {n}"
        for kind, reasons in sorted(status.outbox_losses.items())
        for reason, n in sorted(reasons.items())
    )
    print(f"outbox losses:    {lost or 'none'}")
    return 0


def cmd_dead_letters_list(args: argparse.Namespace, settings: Settings) -> int:
    """List dead letters, newest first."""
    from edge_agent import app

    rows = app.list_dead_letters(settings, args.reason, args.all, args.limit)
    if args.json:
        print(
            json.dumps([{k: v for k, v in asdict(r).items() if k != "raw"} for r in rows], indent=2)
        )
        return 0
    if not rows:
        print("no dead letters")
    for r in rows:
        repeat = f" x{r.occurrences}" if r.occurrences > 1 else ""
        print(f"{r.id:>6}  {_when(r.received_ms)}  {r.status:<8} {r.reason:<20} {r.topic}{repeat}")
        print(f"        {r.detail}")
    return 0


def cmd_dead_letters_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one dead letter with its payload."""
    from edge_agent import app

    row = app.get_dead_letter(settings, args.id)
    if row is None:
        print(f"no dead letter with id {args.id}", file=sys.stderr)
        return 1
    print(f"id:           {row.id}")
    print(f"status:       {row.status}")
    print(f"reason:       {row.reason}")
    print(f"detail:       {row.detail}")
    print(f"topic:        {row.topic}")
    print(
        f"received:     {_when(row.received_ms)} "
        f"(last seen {_when(row.last_seen_ms)}, {row.occurrences}x)"
    )
    print(
        f"payload:      {row.raw_size} bytes, sha256 {row.raw_sha256}"
        + (", truncated" if len(row.raw) < row.raw_size else "")
    )
    if args.raw:
        sys.stdout.buffer.write(row.raw)
        sys.stdout.flush()
    else:
        print(row.raw[:4096].decode("utf-8", "backslashreplace"))
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Validate dead letters again with the current schemas."""
    from edge_agent import app

    if not (args.id or args.reason or args.all):
        print(
            "say which dead letters to replay: --id N (repeatable), --reason R or --all",
            file=sys.stderr,
        )
        return 2
    report = app.replay_dead_letters(settings, args.id or None, args.reason)
    print(
        f"examined {report.examined}, fixed {report.fixed} (stored {report.stored} events, "
        f"{report.duplicates} already stored), not replayable {report.not_replayable}"
    )
    for reason, count in report.still_rejected.items():
        print(f"  still rejected: {reason} x{count}")
    return 0


def _print_copy(done: Copied) -> None:
    print(f"file:    {done.path} ({done.size_bytes} bytes)")
    for table, count in done.rows.items():
        print(f"  {table:<16}{count} rows")


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    """Write a consistent copy of the database while the agent runs."""
    from edge_agent import app

    done = app.backup(settings, args.file)
    print(f"backed up {settings.database}")
    _print_copy(done)
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    """Put a backup in place of the database (the agent stopped)."""
    from edge_agent import app

    done = app.restore(settings, args.file)
    print(f"restored {args.file} to {settings.database}")
    _print_copy(done)
    if done.previous is not None:
        print(f"the database it replaced is kept as {done.previous}")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a simulated site's events to the broker."""
    from edge_agent.demo.simulate import SimulatorOptions, run_simulator

    report = run_simulator(
        SimulatorOptions(
            host=args.host or settings.mqtt.host,
            port=args.port or settings.mqtt.port,
            site=args.site or settings.site.id,
            rate=args.rate,
            duration=args.duration,
            seed=args.seed if args.seed is not None else random.randrange(2**32),
        )
    )
    print(report)
    return 0


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    """Drain the outbox to central now; exit 1 when something is left for a later retry."""
    from edge_agent import app
    from edge_agent.sync import client as sync

    with sync.client_for(settings) as client:
        report = sync.drain(settings, app.now_ms(), client, force=True)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif report.skipped:
        print(f"nothing sent: {report.skipped}")
    else:
        sent = ", ".join(f"{k} {v}" for k, v in sorted(report.sent.items())) or "nothing"
        print(f"sent: {sent}")
        if report.withdrawn:
            print(f"not sent, consent withdrawn since queued: {report.withdrawn}")
        if report.dropped:
            print(f"dropped, outbox over its quota: {report.dropped}")
        if report.refused:
            print(f"refused by central (kept in sync_dead_letters): {report.refused}")
        if report.problem:
            print(f"stopped: {report.problem}; the next try in {report.retry_in_s:g} s")
        left = ", ".join(f"{k} {v}" for k, v in sorted(report.remaining.items())) or "nothing"
        print(f"still queued: {left}")
    return 1 if report.problem else 0


def _registry(settings: Settings) -> tuple[Store, Models]:
    from edge_agent.serving.models import Models
    from edge_agent.store.database import Store

    store = Store.open(settings.database, settings.store.synchronous)
    return store, Models(store, settings.models_folder)


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    """List every model version offered to this agent and what became of it."""
    store, models = _registry(settings)
    with store:
        entries = models.entries()
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    if not entries:
        print("no model releases yet (edge-agent models pull NAME)")
    for e in entries:
        figures = ", ".join(f"{k} {v:.4f}" for k, v in sorted((e.shadow or e.metrics).items()))
        print(f"{e.name:<16}{e.version:<24}{e.status:<10}{_when(e.changed_ms)}  {figures}")
        if e.reason:
            print(f"{'':<16}{e.reason}")
    return 0


def cmd_models_pull(args: argparse.Namespace, settings: Settings) -> int:
    """Pull the newest release of each named model from central; exit 1 when one was not
    promoted, 2 when one could not be pulled."""
    from edge_agent import app
    from edge_agent.core.recommend import PERSONAL
    from edge_agent.serving.pull import Known, pull
    from edge_agent.serving.shadow import local_shadow
    from edge_agent.sync.client import client_for

    code = 0
    store, models = _registry(settings)
    with store, client_for(settings) as client:
        for name in dict.fromkeys(args.name):
            shadow = local_shadow(store) if name == PERSONAL else None
            try:
                outcome = pull(settings, models, name, client, app.now_ms(), shadow)
            except EdgeAgentError as exc:
                # One model's failure does not keep the others from being pulled.
                print(f"edge-agent: {name}: {exc}", file=sys.stderr)
                code = 2
                continue
            if isinstance(outcome, Known):
                e = outcome.entry
                print(f"{e.name} {e.version} is the newest release, already {e.status}")
                continue
            print(f"{outcome.name} {outcome.version}: {outcome.status}")
            if outcome.reason:
                print(f"  {outcome.reason}")
            if outcome.status != "serving":
                code = max(code, 1)
    return code


def cmd_models_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the previous version of a model again."""
    from edge_agent import app
    from edge_agent.core.releases import Refused

    store, models = _registry(settings)
    with store:
        back = models.rollback(args.name, app.now_ms())
    if isinstance(back, Refused):
        print(f"edge-agent: {back.reason}", file=sys.stderr)
        return 1
    print(f"{back.name} {back.version} is serving again")
    return 0


def cmd_models_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train the site's own models from its stored data and serve them."""
    from edge_agent import app
    from edge_agent.serving.training import (
        HOLDOUT_ORDERS,
        MIN_PEOPLE,
        install_shipped,
        train_complements,
        train_next_basket,
        train_trending,
    )

    store, models = _registry(settings)
    with store:
        for shipped in install_shipped(models, app.now_ms()):
            print(f"{shipped.name} {shipped.version} (shipped default): {shipped.status}")
        trend = train_trending(store, models, app.now_ms())
        # --quick: what the agent refreshes every train_every_s; the rest is nightly work.
        personal = None if args.quick else train_next_basket(store, models, app.now_ms())
        pairs = None if args.quick else train_complements(store, models, app.now_ms())
    if trend is None:
        print("trending: no orders in the last two weeks, nothing to learn from")
    if personal is None and not args.quick:
        print(
            f"next-basket: fewer than {MIN_PEOPLE} people with personalization consent and a "
            "repeat visit, nothing personal to learn from yet"
        )
    if pairs is None and not args.quick:
        print(f"complements: fewer than {2 * HOLDOUT_ORDERS} recent orders to learn from yet")
    for entry in (e for e in (trend, personal, pairs) if e is not None):
        figures = ", ".join(f"{k} {v:.4f}" for k, v in sorted(entry.shadow.items()))
        print(f"{entry.name} {entry.version}: {entry.status} {figures} {entry.reason}".rstrip())
    return 0 if any(e is not None for e in (trend, personal, pairs)) else 1


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    """Print what a staff screen would show for a visitor and a basket."""
    from edge_agent import app
    from edge_agent.core.identity import pseudonym
    from edge_agent.ops import keyfile
    from edge_agent.serving.recommend import Recommender, stocked_items

    visitor = (
        pseudonym(keyfile.load_or_create(settings.site_key), args.user_id) if args.user_id else None
    )
    basket = tuple(item for item in (args.basket or "").split(",") if item)
    store, models = _registry(settings)
    with store:
        stocked = frozenset(stocked_items(store, app.now_ms())[0])
        lists = Recommender(store, models).recommend(visitor, basket, args.k, stocked)
    if args.json:
        print(json.dumps({k: [asdict(p) for p in v] for k, v in lists.items()}, indent=2))
        return 0
    if not lists:
        print("nothing to recommend: no model is serving yet (edge-agent models train)")
    for source, picks in lists.items():
        print(f"{source}:")
        for p in picks:
            print(f"  {p.item:<16}{p.score:10.3f}  {p.reason}")
    return 0


def cmd_screens_add(args: argparse.Namespace, settings: Settings) -> int:
    """Register a screen and print its one-time pairing code."""
    from edge_agent import app
    from edge_agent.store.database import Store
    from edge_agent.store.screens import PAIRING_TTL_MS, Kind, Screens

    kind: Kind = "zone" if args.zone else "device"
    name = args.zone or args.device
    with Store.open(settings.database, settings.store.synchronous) as store:
        screen_id, code = Screens(store).add(name, args.label or name, app.now_ms(), kind)
    where = name if kind == "device" else f"zone {name}"
    print(f"screen {screen_id} for {where}: pairing code {code}")
    print(
        f"open {settings.http.base_url()}/#pair={code} on the screen (the code works once, "
        f"for {PAIRING_TTL_MS // 60000} minutes; the page keeps the token it gets for it)"
    )
    return 0


def cmd_screens_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the registered screens."""
    from edge_agent.store.database import Store
    from edge_agent.store.screens import Screens

    with Store.open(settings.database, settings.store.synchronous) as store:
        found = Screens(store).all()
    if not found:
        print("no screens (edge-agent screens add --device DEVICE)")
    for s in found:
        state = (
            f"revoked {_when(s.revoked_ms)}"
            if s.revoked_ms
            else f"paired {_when(s.paired_ms)}"
            if s.paired_ms
            else "waiting for its pairing code"
        )
        print(f"{s.id:>4}  {s.place:<16}{s.label:<20}{state}")
    return 0


def cmd_screens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Lock a screen out at once."""
    from edge_agent import app
    from edge_agent.store.database import Store
    from edge_agent.store.screens import Screens

    with Store.open(settings.database, settings.store.synchronous) as store:
        done = Screens(store).revoke(args.id, app.now_ms())
    if not done:
        print(f"edge-agent: no screen {args.id} to revoke", file=sys.stderr)
        return 1
    print(f"screen {args.id} is locked out")
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase a person and print the receipt."""
    from edge_agent import app

    receipt = app.forget(settings, args.user_id)
    print(json.dumps(receipt.as_dict(), indent=2))
    return 0


def cmd_export_person(args: argparse.Namespace, settings: Settings) -> int:
    """Write everything held about a person as JSON."""
    from edge_agent import app

    document = json.dumps(app.export_person(settings, args.user_id), indent=2, default=str)
    if args.output:
        args.output.write_text(document + "\n")
        print(f"written to {args.output}")
    else:
        print(document)
    return 0


# Column -> its heading in the table.
_FLAT = {
    "footfall_in": "in",
    "footfall_out": "out",
    "occupancy": "occupancy",
    "visits": "visits",
    "visitors": "visitors",
    "identified_share": "identified",
    "orders": "orders",
    "revenue": "revenue",
    "conversion": "conversion",
    "basket_value_mean": "basket",
    "basket_size_mean": "items",
    "nps": "nps",
    "ces": "ces",
    "unmatched_exits": "unmatched",
    "duplicates": "duplicates",
    "dead_letters": "dead",
}


def cmd_insights(args: argparse.Namespace, settings: Settings) -> int:
    """Print a day's (or an hour's) released insights."""
    from edge_agent import app

    day = args.day or time.strftime("%Y-%m-%d", time.gmtime())
    try:
        day_start = int(calendar.timegm(time.strptime(day, "%Y-%m-%d"))) * 1000
    except ValueError:
        print(f"edge-agent: --day must be YYYY-MM-DD, got {day!r}", file=sys.stderr)
        return 2
    hours = range(args.hour, args.hour + 1) if args.hour is not None else range(24)
    released = app.insights(settings, day_start, hours, args.k or settings.insights.k, args.dp)
    if args.format == "json":
        print(json.dumps(released, indent=2))
        return 0
    total = cast("dict[str, object] | None", released["total"])
    rows = [
        *cast("list[dict[str, object]]", released["hours"]),
        {**(total or {"suppressed": True}), "start_ms": None},
    ]
    if args.format == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(["hour", "suppressed", *_FLAT])
        for row in rows:
            out.writerow(
                [_label(row), bool(row.get("suppressed")), *(row.get(k, "") for k in _FLAT)]
            )
        return 0
    print(
        f"site {settings.site.id}, {day} (UTC), "
        f"cells from fewer than {released['k']} visitors suppressed"
    )
    print(f"{'hour':<7}" + "".join(f"{h:>11}" for h in _FLAT.values()))
    for row in rows:
        if row.get("suppressed"):
            print(f"{_label(row):<7}  suppressed: {row.get('reason', 'no released hour')}")
        else:
            print(f"{_label(row):<7}" + "".join(f"{_cell(row.get(k)):>11}" for k in _FLAT))
    if released["open_hour_ms"] is not None:
        print("(the current hour is still open: its figures are partial)")
    if total:
        _print_details(total)
    return 0


def _print_details(total: dict[str, object]) -> None:
    """The period total's figures that do not fit a column: zones, top lists, data quality."""
    print(f"\npeak occupancy: {_cell(total.get('occupancy_peak'))}")
    dwell = cast("dict[str, dict[str, object]]", total.get("dwell_s") or {})
    if dwell:
        print(f"{'zone':<20}{'stays':>8}{'median s':>10}{'p90 s':>10}")
        for zone, figures in dwell.items():
            if figures.get("suppressed"):
                print(f"{zone[:19]:<20}  suppressed")
            else:
                print(
                    f"{zone[:19]:<20}{_cell(figures['count']):>8}"
                    f"{_cell(figures['median']):>10}{_cell(figures['p90']):>10}"
                )
    for key, heading in (
        ("top_paths", "top paths"),
        ("top_products", "top products"),
        ("top_categories", "top categories"),
    ):
        ranked = cast("list[tuple[str, int]]", total.get(key) or [])
        if ranked:
            print(f"{heading}: " + ", ".join(f"{name} ({n})" for name, n in ranked))
    reasons = cast("dict[str, int]", total.get("dead_letters_by_reason") or {})
    if reasons:
        print("dead letters: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))


def _label(row: dict[str, object]) -> str:
    start = row.get("start_ms")
    return "total" if start is None else time.strftime("%H:00", time.gmtime(int(start) / 1000))  # type: ignore[call-overload]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def cmd_provision_init(args: argparse.Namespace, settings: Settings) -> int:
    """Create a site's folder: CA, broker certificate, credentials, configurations."""
    from edge_agent.ops import provision

    if bool(args.collector_url) != bool(args.site_token):
        print("edge-agent: --collector-url and --site-token go together", file=sys.stderr)
        return 2
    folder = provision.init_site(
        args.out,
        args.site,
        args.broker_host,
        args.broker_port,
        broker_user=args.broker_user,
        agent_user=args.agent_user or "",
        data_dir=args.data_dir,
        sync_url=args.collector_url or "",
        sync_token=args.site_token or "",
        devices=tuple(args.device or ()),
    )
    print(f"site {args.site} provisioned in {folder.root}")
    print(f"  broker:  mosquitto -c {folder.broker_config}")
    print(f"  agent:   edge-agent --config {folder.agent_config} run")
    for device in dict.fromkeys(args.device or ()):
        print(f"  device {device}: bundle {folder.bundle(device)}")
    return 0


def _print_change(change: Change, done: str) -> None:
    print(done)
    if change.bundle is not None:
        print(f"  bundle: {change.bundle}")
    print(
        "  broker reloaded"
        if change.reloaded
        else "  the broker is not running: it reads the new files when it starts"
    )


def cmd_provision_add_device(args: argparse.Namespace, settings: Settings) -> int:
    """Provision one more device."""
    from edge_agent.ops import provision

    _print_change(provision.add_device(args.dir, args.device), f"device {args.device} added")
    return 0


def cmd_provision_revoke_device(args: argparse.Namespace, settings: Settings) -> int:
    """Take a device's credential and topic away."""
    from edge_agent.ops import provision

    change = provision.revoke_device(args.dir, args.device)
    _print_change(change, f"device {args.device} revoked")
    return 0


def cmd_provision_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Replace a device's or the agent's password."""
    from edge_agent.ops import provision

    if args.agent:
        change = provision.rotate_agent(args.dir)
        _print_change(change, "the agent's password replaced (it reconnects with the new one)")
    else:
        change = provision.rotate_device(args.dir, args.device)
        _print_change(change, f"device {args.device}'s password replaced")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run a whole demo site on this machine."""
    from edge_agent.demo.run import run_demo

    run_demo(data_dir=args.data_dir, rate=args.rate, duration=args.duration, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (kept in one place so help is tested)."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Site agent: takes visitor events from the site's MQTT broker into SQLite, "
        "exactly once, with bad input kept as dead letters.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML settings file (default: $EDGE_AGENT_CONFIG, else built-in defaults)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the agent in the foreground",
        description=(
            "Run the agent: subscribe, validate, store, acknowledge. Stops on SIGTERM or Ctrl-C."
        ),
    )
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser(
        "status",
        help="show counters of the site's store",
        description=(
            "Show events stored, duplicates, dead letters by reason, the last event time and the "
            "broker connection."
        ),
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=cmd_status)

    dead = commands.add_parser(
        "dead-letters",
        help="list, show or replay rejected payloads",
        description=("Rejected payloads, kept with the reason, the topic and the raw bytes."),
    )
    dead_commands = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    listing = dead_commands.add_parser(
        "list",
        help="list dead letters, newest first",
        description="List dead letters, newest first.",
    )
    listing.add_argument("--reason", help="only this reason code (e.g. invalid_properties)")
    listing.add_argument("--all", action="store_true", help="include dead letters already replayed")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(handler=cmd_dead_letters_list)
    show = dead_commands.add_parser(
        "show",
        help="show one dead letter and its payload",
        description="Show one dead letter and its payload.",
    )
    show.add_argument("id", type=int, help="the dead letter's id (from list)")
    show.add_argument(
        "--raw", action="store_true", help="write the payload bytes exactly as received"
    )
    show.set_defaults(handler=cmd_dead_letters_show)
    replay = dead_commands.add_parser(
        "replay",
        help="validate dead letters again (e.g. after a schema update)",
        description=(
            "Validate open dead letters again with the current schemas; store what passes."
        ),
    )
    replay.add_argument("--id", type=int, action="append", help="this dead letter (repeatable)")
    replay.add_argument("--reason", help="every open dead letter with this reason")
    replay.add_argument("--all", action="store_true", help="every open dead letter")
    replay.set_defaults(handler=cmd_dead_letters_replay)

    backup = commands.add_parser(
        "backup",
        help="write a consistent copy of the database (the agent may be running)",
        description=(
            "Copy the database with SQLite's online backup while the agent keeps ingesting: "
            "the copy is the database as of one commit. It is written beside FILE and renamed "
            "into place, readable by its owner only, and checked; prints the rows per table. "
            "The site key (site.key in the data folder) is not in it: keep that safe too, or "
            "the restored pseudonyms cannot be matched to new events."
        ),
    )
    backup.add_argument("file", type=Path, help="the backup file to write (replaced if present)")
    backup.set_defaults(handler=cmd_backup)

    restore = commands.add_parser(
        "restore",
        help="replace the database with a backup (stop the agent first)",
        description=(
            "Replace the database with a backup made by 'backup'. Refuses while the agent runs "
            "(it holds an exclusive lock on <database>.lock for its lifetime), and refuses a file "
            "that is not an edge-agent database, fails PRAGMA integrity_check, or was written by "
            "a newer edge-agent. The replaced database is kept as <database>.before-restore. "
            "Run it as the agent's user (e.g. sudo -u edge-agent)."
        ),
    )
    restore.add_argument("file", type=Path, help="the backup file to restore")
    restore.set_defaults(handler=cmd_restore)

    simulate = commands.add_parser(
        "simulate",
        help="publish a simulated site's device events",
        description=(
            "Publish a realistic stream of a shop's devices (door counters, zones, tills with "
            "real Ta Feng baskets, kiosks, loyalty check-ins) at QoS 1."
        ),
    )
    simulate.add_argument("--host", help="broker host (default: [mqtt] host)")
    simulate.add_argument("--port", type=int, help="broker port (default: [mqtt] port)")
    simulate.add_argument("--site", help="site id (default: [site] id)")
    simulate.add_argument("--rate", type=float, default=20.0, help="events per second (default 20)")
    simulate.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds to run, 0 for until Ctrl-C (default 60)",
    )
    simulate.add_argument(
        "--seed",
        type=int,
        help="random seed; the same seed repeats the same messageIds (default: a new one)",
    )
    simulate.set_defaults(handler=cmd_simulate)

    sync = commands.add_parser(
        "sync",
        help="send the outbox to central now",
        description=(
            "Send what the outbox holds (insights, consent and erasure notices, identified data "
            "of people with crm_sync consent) to [sync] url now, ignoring any backoff. Exits 1 "
            "when central could not be reached or asked to wait: the items stay queued."
        ),
    )
    sync.add_argument("--json", action="store_true", help="print the report as JSON")
    sync.set_defaults(handler=cmd_sync)

    models = commands.add_parser(
        "models",
        help="model releases: list, pull from central, roll back",
        description="Model releases are signed by the publisher; the agent checks the "
        "signature against [models] publisher_key, the file's sha256 and size, that it loads "
        "in onnxruntime and matches its vocabulary, and that it is not worse than the serving "
        "model, before it serves it. The version it replaces is kept for rollback.",
    )
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser("list", help="versions, status, metrics, reasons")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_models_list)
    pulling = model_commands.add_parser("pull", help="pull the newest release from central")
    pulling.add_argument("name", nargs="+", help="the models' names, e.g. next-basket")
    pulling.set_defaults(handler=cmd_models_pull)
    rolling = model_commands.add_parser("rollback", help="serve the previous version again")
    rolling.add_argument("name", help="the model's name")
    rolling.set_defaults(handler=cmd_models_rollback)
    training = model_commands.add_parser(
        "train", help="train the site's own models from its stored data and serve them"
    )
    training.add_argument(
        "--quick",
        action="store_true",
        help="only install the shipped defaults and retrain trending (what the agent does "
        "every [models] train_every_s); the personal and complement models are nightly work",
    )
    training.set_defaults(handler=cmd_models_train)

    screens = commands.add_parser(
        "screens",
        help="staff screens: add (prints a pairing code), list, revoke",
        description="A screen is registered to a device (a till, a kiosk) or a zone (a booth); "
        "it pairs once with the printed address and then uses its own token, stored only as a "
        "hash here.",
    )
    screen_commands = screens.add_subparsers(dest="screens_command", required=True)
    adding = screen_commands.add_parser("add", help="register a screen by a device or in a zone")
    place = adding.add_mutually_exclusive_group(required=True)
    place.add_argument("--device", help="the device id it stands by, e.g. till-3")
    place.add_argument("--zone", help="the zone it stands in (as zone sensors name it)")
    adding.add_argument("--label", help="a name for it (default: the device or zone)")
    adding.set_defaults(handler=cmd_screens_add)
    screen_commands.add_parser("list", help="the screens and their state").set_defaults(
        handler=cmd_screens_list
    )
    revoking = screen_commands.add_parser("revoke", help="lock a screen out at once")
    revoking.add_argument("id", type=int, help="the screen's number (screens list)")
    revoking.set_defaults(handler=cmd_screens_revoke)

    recommend = commands.add_parser(
        "recommend",
        help="what a staff screen would show for a visitor and a basket",
        description="Rank items with the serving models and the screen's business rules. "
        "The visitor's history is used only if they granted personalization.",
    )
    recommend.add_argument("--user-id", help="the visitor's userId, as devices send it")
    recommend.add_argument("--basket", help="comma-separated product ids in the basket")
    recommend.add_argument("--k", type=int, default=5, help="items per list (default 5)")
    recommend.add_argument("--json", action="store_true", help="print JSON")
    recommend.set_defaults(handler=cmd_recommend)

    forget = commands.add_parser(
        "forget",
        help="erase everything held about a person, print the receipt",
        description=(
            "Erase every row held about a person (events, visit links, profile, vault, queued "
            "items, consent), queue an erasure notice for central, and print the receipt, which "
            "holds no personal data."
        ),
    )
    forget.add_argument("user_id", help="the person's userId, as the devices send it")
    forget.set_defaults(handler=cmd_forget)

    export = commands.add_parser(
        "export-person",
        help="write everything held about a person as JSON (subject access)",
        description="Write everything held about a person as JSON (the right of access).",
    )
    export.add_argument("user_id", help="the person's userId, as the devices send it")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    export.set_defaults(handler=cmd_export_person)

    insights = commands.add_parser(
        "insights",
        help="print a day's insights (footfall, visits, conversion, NPS...)",
        description=(
            "Print the site's hourly insights and their total for a day (UTC), with cells seen "
            "by fewer than k distinct visitors suppressed. Closed hours with new events are "
            "computed first; the current hour is shown as open."
        ),
    )
    insights.add_argument("--day", help="YYYY-MM-DD (default: today, UTC)")
    insights.add_argument(
        "--hour", type=int, choices=range(24), metavar="H", help="only this hour (0-23)"
    )
    insights.add_argument("--k", type=int, help="suppression threshold (default: [insights] k)")
    insights.add_argument(
        "--dp",
        action="store_true",
        help="add differential-privacy noise, paid from the day's epsilon budget",
    )
    insights.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format"
    )
    insights.set_defaults(handler=cmd_insights)

    _provision_parser(commands)

    demo = commands.add_parser(
        "demo",
        help="run a whole demo site on this machine",
        description=(
            "Start a private Mosquitto on a free port, the agent on a fresh data folder, and "
            "simulated devices (including a faulty one). Prints where the data is and how to see "
            "status. Ctrl-C stops it all."
        ),
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        help="folder for the demo site (default: a new folder under ./demo-sites)",
    )
    demo.add_argument(
        "--rate", type=float, default=50.0, help="simulated events per second (default 50)"
    )
    demo.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run, 0 for until Ctrl-C (default)"
    )
    demo.add_argument("--seed", type=int, help="random seed (default: a new one)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _provision_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    provision = commands.add_parser(
        "provision",
        help="set up a site: CA, broker TLS, device credentials, ACL",
        description="Write a site's folder: a local CA and the broker's certificate, the "
        "broker's configuration, password file and ACL (each device may publish only to its "
        "own topic, the agent may only read them), the agent's configuration and one bundle "
        "per device. Secrets are written with mode 0600 and never printed.",
    )
    actions = provision.add_subparsers(dest="provision_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="create a site's folder",
        description="Create a site's folder. Start the broker with its mosquitto.conf and the "
        "agent with its agent.toml.",
    )
    init.add_argument("--out", type=Path, required=True, help="the folder to create")
    init.add_argument("--site", required=True, help="the site id, e.g. shop-12")
    init.add_argument(
        "--broker-host",
        default=socket.gethostname(),
        help="the name or address devices and the agent reach the broker by; it goes in the "
        "broker's certificate with localhost and 127.0.0.1 (default: this machine's name)",
    )
    init.add_argument(
        "--broker-port", type=int, default=8883, help="the broker's TLS port (default 8883)"
    )
    init.add_argument(
        "--broker-user",
        default="mosquitto",
        help="the account Mosquitto runs as; it is given the broker's files when this runs as "
        "root (default mosquitto)",
    )
    init.add_argument(
        "--agent-user",
        help="the account the agent runs as (edge-agent under systemd); it is given agent/ "
        "and the data folder when this runs as root (default: nobody, they stay root's)",
    )
    init.add_argument(
        "--data-dir", type=Path, help="the agent's data folder (default: agent/data in --out)"
    )
    init.add_argument("--collector-url", help="central collector URL, for [sync] url")
    init.add_argument("--site-token", help="the site's token from the collector, for [sync]")
    init.add_argument("--device", action="append", help="a device to provision (repeatable)")
    init.set_defaults(handler=cmd_provision_init)

    add = actions.add_parser(
        "add-device",
        help="give a new device a credential and its topic",
        description="Add a device: a password, the right to publish to its own topic, and a "
        "bundle (device.json, ca.crt); the running broker is reloaded.",
    )
    add.add_argument("--dir", type=Path, required=True, help="the site's folder")
    add.add_argument("--device", required=True, help="the device id (letters, digits, - _ .)")
    add.set_defaults(handler=cmd_provision_add_device)

    revoke = actions.add_parser(
        "revoke-device",
        help="take a device's credential and topic away",
        description="Remove a device from the password file and ACL, delete its bundle and "
        "reload the running broker, which disconnects it.",
    )
    revoke.add_argument("--dir", type=Path, required=True, help="the site's folder")
    revoke.add_argument("--device", required=True, help="the device id")
    revoke.set_defaults(handler=cmd_provision_revoke_device)

    rotate = actions.add_parser(
        "rotate",
        help="replace a device's or the agent's password",
        description="Replace a password and reload the running broker. A device gets a new "
        "bundle; the agent reads its new password file when the broker drops its old "
        "connection, and reconnects without a restart.",
    )
    rotate.add_argument("--dir", type=Path, required=True, help="the site's folder")
    who = rotate.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", help="the device whose password to replace")
    who.add_argument("--agent", action="store_true", help="replace the agent's password")
    rotate.set_defaults(handler=cmd_provision_rotate)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        handler: Handler = args.handler
        return handler(args, settings)
    except EdgeAgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
