"""The project's exceptions, one tree so callers can catch at the level they need.

    EdgeAgentError
     ├── ConfigError        a setting is missing or out of range (names file, key, value)
     ├── StorageError       the SQLite database cannot be opened or written
     ├── BrokerError        the MQTT broker cannot be started, reached or used
     ├── SchemaError        the shipped JSON Schemas are missing or do not compile
     ├── BudgetSpent        a differentially private release would exceed the day's epsilon
     └── CollectorError     the central collector cannot start, or refuses a request
          └── collector.wire.WireError   a request refused, with its HTTP status

A bad *event* is not an exception: validation returns a rejection with a reason code,
and the rejection is stored as a dead letter.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose; its message is for an installer."""


class ConfigError(EdgeAgentError):
    """A configuration value is invalid; the message names the source, key, value and rule."""


class StorageError(EdgeAgentError):
    """The local SQLite store cannot be opened, migrated or written."""


class BrokerError(EdgeAgentError):
    """The MQTT broker cannot be started or reached."""


class SchemaError(EdgeAgentError):
    """The shipped event schemas cannot be loaded or compiled."""


class BudgetSpent(EdgeAgentError):
    """The day's differential-privacy budget cannot pay for this release."""


class CollectorError(EdgeAgentError):
    """The central collector cannot open its database or start, or refuses a request."""
