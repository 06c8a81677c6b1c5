"""The text of a Mosquitto configuration: the demo's local broker and a provisioned site's.

Both share the settings that keep a site's events while the agent is down; only the listener
and who may connect differ.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.core.events import MAX_PAYLOAD_BYTES
from edge_agent.errors import ConfigError

# Mosquitto's defaults would lose a site's events while the agent is down: it keeps at most
# 1,000 queued QoS-1 messages per client and sends only 20 unacknowledged ones at a time.
# These keep the agent's session across agent and broker restarts and let group commit work.
DURABILITY = """\
persistence true
persistence_location {data}/
autosave_on_changes true
autosave_interval 100
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 1000
# A packet larger than this (the agent's payload limit and room for the topic) is refused to
# its publisher, which the broker disconnects, instead of being carried to the agent.
max_packet_size {max_packet}
"""

#: What a PUBLISH packet needs beyond its payload: headers, topic, properties.
PACKET_ROOM = 8 * 1024

_LOGGING = """\
log_dest file {log}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
"""


def _line_safe(value: str, what: str) -> str:
    # One value per line: a newline in a path or name would add a directive of its own.
    if any(c in value for c in "\r\n\x00"):
        raise ConfigError(f"{what} {value!r} has a line break or NUL: choose another")
    return value


def mosquitto_conf(
    *,
    user: str,
    listener: Sequence[str],
    access: Sequence[str],
    data: str,
    log: str,
    pid_file: str = "",
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> str:
    """A whole ``mosquitto.conf``.

    Args:
        user: the account Mosquitto switches to when started as root.
        listener: the ``listener`` line and the options that belong to it (TLS files).
        access: who may connect and do what (``allow_anonymous``, ``password_file``...).
        data: the persistence folder.
        log: the log file.
        pid_file: where Mosquitto writes its process id (empty: nowhere).
        max_payload_bytes: the agent's ``[ingest] max_payload_bytes``: the broker refuses
            packets larger than that and `PACKET_ROOM`.

    Raises:
        ConfigError: a value holds a line break, which would smuggle in a directive.
    """
    lines = [
        "# Written by edge-agent.",
        # Started as root, Mosquitto switches to this user and then fails, silently, to write
        # its log and persistence file into a folder that user does not own.
        f"user {_line_safe(user, 'user')}",
        *(_line_safe(line, "listener setting") for line in listener),
        *(_line_safe(line, "access setting") for line in access),
    ]
    if pid_file:
        lines.append(f"pid_file {_line_safe(pid_file, 'pid file')}")
    return (
        "\n".join(lines)
        + "\n"
        + DURABILITY.format(
            data=_line_safe(data, "data folder"), max_packet=max_payload_bytes + PACKET_ROOM
        )
        + _LOGGING.format(log=_line_safe(log, "log file"))
    )
