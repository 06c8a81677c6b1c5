"""The central collector: receives what sites' agents sync (docs/sync-protocol.md), keeps it in
SQLite or PostgreSQL, and serves merged insights per venue. Entry point: ``edge-agent-collector``.
"""
