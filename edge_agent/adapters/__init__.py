"""Thin adapters between the core and the outside world (MQTT, SQLite, processes)."""
