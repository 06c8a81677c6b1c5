"""``python -m edge_agent`` runs the command line."""

from edge_agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
