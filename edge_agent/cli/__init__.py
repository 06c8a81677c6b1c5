"""The ``edge-agent`` command line: each command group's module parses nothing and decides
nothing; it calls one use case of `edge_agent.app` and prints the result. `parser` builds the
arguments of every subcommand and turns every error the project raises on purpose into one
readable line and exit code 2. Adapters are imported lazily, so ``--help`` stays fast."""

from __future__ import annotations

from edge_agent.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
