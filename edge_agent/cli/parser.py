"""The ``edge-agent`` command's parser and entry point: every subcommand's arguments, and the
one place where an error becomes one readable line and exit code 2."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent import __version__
from edge_agent.cli.agent import cmd_run, cmd_status
from edge_agent.cli.backup import cmd_backup, cmd_restore
from edge_agent.cli.catalogue import cmd_catalogue_import, cmd_catalogue_list
from edge_agent.cli.deadletters import (
    cmd_dead_letters_list,
    cmd_dead_letters_replay,
    cmd_dead_letters_show,
)
from edge_agent.cli.demo import cmd_demo, cmd_simulate
from edge_agent.cli.insights import cmd_insights
from edge_agent.cli.models import (
    cmd_models_list,
    cmd_models_pull,
    cmd_models_rollback,
    cmd_models_train,
)
from edge_agent.cli.people import cmd_export_person, cmd_forget
from edge_agent.cli.provision import (
    cmd_provision_add_device,
    cmd_provision_init,
    cmd_provision_revoke_device,
    cmd_provision_rotate,
)
from edge_agent.cli.screens import (
    cmd_recommend,
    cmd_screens_add,
    cmd_screens_list,
    cmd_screens_revoke,
)
from edge_agent.cli.sync import cmd_sync
from edge_agent.config import Settings, load_settings
from edge_agent.errors import EdgeAgentError

Handler = Callable[[argparse.Namespace, Settings], int]


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
            "a real shop's receipts, kiosks, loyalty check-ins) at QoS 1."
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
        description="A screen is registered to a device (a till, a kiosk) or a zone (a booth), "
        "or as a gate screen (a TV at a venue's gates); it pairs once with the printed address "
        "and then uses its own token, stored only as a hash here.",
    )
    screen_commands = screens.add_subparsers(dest="screens_command", required=True)
    adding = screen_commands.add_parser(
        "add", help="register a screen by a device, in a zone, or at the venue's gates"
    )
    place = adding.add_mutually_exclusive_group(required=True)
    place.add_argument("--device", help="the device id it stands by, e.g. till-3")
    place.add_argument("--zone", help="the zone it stands in (as zone sensors name it)")
    place.add_argument(
        "--gate",
        action="store_true",
        help="a gate screen: entries per gate, attendance, hall occupancy and warnings",
    )
    adding.add_argument("--label", help="a name for it (default: the device, zone or gates)")
    adding.set_defaults(handler=cmd_screens_add)
    screen_commands.add_parser("list", help="the screens and their state").set_defaults(
        handler=cmd_screens_list
    )
    revoking = screen_commands.add_parser("revoke", help="lock a screen out at once")
    revoking.add_argument("id", type=int, help="the screen's number (screens list)")
    revoking.set_defaults(handler=cmd_screens_revoke)

    catalogue = commands.add_parser(
        "catalogue",
        help="the products the screens name: import a catalogue file, list what is known",
        description="Names, categories, prices, currency and availability per product, from a "
        "catalogue file (CSV with a header row, or JSON: docs/catalogue.md) and from what the "
        "tills send. An imported field is the site's word; the tills fill what it leaves empty.",
    )
    catalogue_commands = catalogue.add_subparsers(dest="catalogue_command", required=True)
    importing = catalogue_commands.add_parser(
        "import", help="take a catalogue file (CSV, or .json); refused rows are listed"
    )
    importing.add_argument("file", type=Path, help="the catalogue file")
    importing.set_defaults(handler=cmd_catalogue_import)
    listing = catalogue_commands.add_parser("list", help="the products, by id")
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    listing.add_argument("--after", help="start after this product id")
    listing.set_defaults(handler=cmd_catalogue_list)

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
            "items, consent, and the scans of the tickets and badges linked to them), queue an "
            "erasure notice for central, and print the receipt, which holds no personal data. "
            "A ticket or badge holder who never gave a userId is named by --ticket or --badge."
        ),
    )
    _person_arguments(forget)
    forget.set_defaults(handler=cmd_forget)

    export = commands.add_parser(
        "export-person",
        help="write everything held about a person as JSON (subject access)",
        description="Write everything held about a person as JSON (the right of access).",
    )
    _person_arguments(export)
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    export.set_defaults(handler=cmd_export_person)

    insights = commands.add_parser(
        "insights",
        help="print a day's insights (footfall, visits, conversion, NPS...)",
        description=(
            "Print the site's hourly insights and their total for one of its days ([site] "
            "timezone: 23 or 25 hours when the clocks change), with cells seen "
            "by fewer than k distinct visitors suppressed. Closed hours with new events are "
            "computed first; the current hour is shown as open."
        ),
    )
    insights.add_argument("--day", help="YYYY-MM-DD (default: the site's today)")
    insights.add_argument(
        "--hour", type=int, choices=range(24), metavar="H", help="only this hour (0-23, site time)"
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

    from edge_agent.cli.provision import cmd_provision_venue

    venue = actions.add_parser(
        "venue",
        help="create a venue's folder: one broker, N agents, one site key",
        description="Create a venue's folder: one CA and Mosquitto for the venue, one folder "
        "per agent (agents/AGENT: agent.toml with [site] venue and [venue] share = true, its "
        "password, and the venue's one site key, so a person seen by two agents counts once) "
        "and one bundle per device. Each device belongs to one agent and may publish only "
        "under that agent's site.",
    )
    venue.add_argument("--out", type=Path, required=True, help="the folder to create")
    venue.add_argument("--venue", required=True, help="the venue id, e.g. expo-centre")
    venue.add_argument(
        "--agents", required=True, help="the agents' site ids, comma-separated: hall-a,hall-b"
    )
    venue.add_argument(
        "--device",
        action="append",
        metavar="AGENT:DEVICE",
        help="a device and the agent it belongs to, e.g. hall-a:door-1 (repeatable)",
    )
    venue.add_argument(
        "--broker-host",
        default=socket.gethostname(),
        help="the name or address devices and agents reach the broker by (default: this "
        "machine's name)",
    )
    venue.add_argument(
        "--broker-port", type=int, default=8883, help="the broker's TLS port (default 8883)"
    )
    venue.add_argument("--broker-user", default="mosquitto", help="the account Mosquitto runs as")
    venue.add_argument(
        "--agent-user", help="the account the agents run as (given their folders as root)"
    )
    venue.set_defaults(handler=cmd_provision_venue)


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


def _person_arguments(command: argparse.ArgumentParser) -> None:
    """A person named by userId, or by the ticket or badge they held."""
    who = command.add_mutually_exclusive_group(required=True)
    who.add_argument("user_id", nargs="?", help="the person's userId, as the devices send it")
    who.add_argument("--ticket", metavar="ID", help="a ticket's id, as the gates scan it")
    who.add_argument("--badge", metavar="ID", help="a badge's id, as the scanners read it")
