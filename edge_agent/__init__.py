"""edge-agent: the site agent for in-store visitor events."""

__version__ = "0.1.0"
