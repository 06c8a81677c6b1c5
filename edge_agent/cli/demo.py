"""``simulate`` and ``demo``: simulated devices, a whole demo site."""

from __future__ import annotations

import argparse
import random

from edge_agent.config import Settings


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


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run a whole demo site on this machine."""
    from edge_agent.demo.run import run_demo

    run_demo(data_dir=args.data_dir, rate=args.rate, duration=args.duration, seed=args.seed)
    return 0
