"""The project's exceptions, one tree so callers can catch at the level they need.

    EdgeAgentError
     ├── ConfigError             a setting is missing or out of range (names file, key, value)
     ├── StorageError            the SQLite database cannot be opened or written
     ├── BrokerError             the MQTT broker cannot be started, reached or used
     │                           (``reason_code``: paho's, when the broker gave one)
     ├── TopicError              a topic is not sites/{site}/devices/{device}/events
     ├── SchemaError             the shipped JSON Schemas are missing or do not compile
     ├── BudgetSpent             a differentially private release would exceed the day's epsilon
     ├── SyncError               a sync with central or a destination did not go through
     │    ├── CollectorUnavailable   no answer, 5xx, 408 or 429: retried after a backoff
     │    └── CollectorRejected      refused for good: the batch goes to the sync dead letters
     ├── ModelError              a model cannot be used
     │    ├── ModelIntegrityError    a serving model's files are missing or do not load
     │    └── PullError              central cannot be reached for a release, or has none
     └── CollectorError          the central collector cannot start, or refuses a request
          ├── collector.wire.WireError        a request refused, with its HTTP status
          ├── collector.store.engine.Unavailable the central database cannot be reached
          └── collector.sandbox.SandboxFailed a worker process crashed or timed out

A bad *event* is not an exception: validation returns a rejection with a reason code,
and the rejection is stored as a dead letter. A refused model release is not one either:
the registry records it with its reason.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose; its message is for an installer."""


class ConfigError(EdgeAgentError):
    """A configuration value is invalid; the message names the source, key, value and rule."""


class StorageError(EdgeAgentError):
    """The local SQLite store cannot be opened, migrated or written."""


class BrokerError(EdgeAgentError):
    """The MQTT broker cannot be started or reached.

    Attributes:
        reason_code: the MQTT reason code paho reported (e.g. 135, not authorized), when the
            broker answered with one; None when it never answered.
    """

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class TopicError(EdgeAgentError):
    """A topic or an id in it does not have the inbound contract's shape."""


class SchemaError(EdgeAgentError):
    """The shipped event schemas cannot be loaded or compiled."""


class BudgetSpent(EdgeAgentError):
    """The day's differential-privacy budget cannot pay for this release."""


class SyncError(EdgeAgentError):
    """A batch did not reach central or a destination."""


class CollectorUnavailable(SyncError):
    """Central did not take a batch this time (no answer, 5xx, 408, 429): retried later."""


class CollectorRejected(SyncError):
    """Central refused a batch for good (another 4xx): it goes to the sync dead letters.

    Attributes:
        status: the HTTP status central answered with.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ModelError(EdgeAgentError):
    """A recommendation model cannot be used."""


class ModelIntegrityError(ModelError):
    """A serving model's files are missing, or do not load as their manifest says."""


class PullError(ModelError):
    """Central cannot be reached for a model release, or has no such release."""


class CollectorError(EdgeAgentError):
    """The central collector cannot open its database or start, or refuses a request."""
