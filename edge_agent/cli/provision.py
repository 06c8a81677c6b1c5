"""``provision``: a site's keys, certificates, credentials and configuration."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from edge_agent.config import Settings

if TYPE_CHECKING:
    from edge_agent.ops.provision import Change


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


def cmd_provision_venue(args: argparse.Namespace, settings: Settings) -> int:
    """Create a venue's folder: one broker, one folder per agent, one site key for all."""
    from edge_agent.ops import provision

    devices = []
    for spec in args.device or ():
        agent, sep, device = spec.partition(":")
        if not sep:
            print(f"edge-agent: --device {spec!r} must be AGENT:DEVICE, e.g. hall-a:door-1",
                  file=sys.stderr)  # fmt: skip
            return 2
        devices.append((agent, device))
    agents = tuple(a.strip() for a in args.agents.split(",") if a.strip())
    folder = provision.init_venue(
        args.out,
        args.venue,
        agents,
        tuple(devices),
        args.broker_host,
        args.broker_port,
        broker_user=args.broker_user,
        agent_user=args.agent_user or "",
    )
    print(f"venue {args.venue} provisioned in {folder.root}")
    print(f"  broker:  mosquitto -c {folder.shared.broker_config}")
    for agent in agents:
        print(f"  agent {agent}: edge-agent --config {folder.agent(agent) / 'agent.toml'} run")
    for agent, device in devices:
        print(f"  device {device} of {agent}: bundle {folder.root / 'devices' / device}")
    return 0
