"""JSON lines on stdout, one object per record, ready for journald.

Callers log a stable snake_case ``event`` and context fields through ``extra={"fields": {...}}``.
They never pass userId, anonymousId, payloads or secrets: message ids and counts only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

# journald reads a "<N>" prefix as the syslog priority, so `journalctl -p` can filter.
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg, event, and fields."""

    def __init__(self, journald: bool = False) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "event": getattr(record, "event", record.msg if isinstance(record.msg, str) else ""),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        text = json.dumps(line, default=str)
        return f"<{_PRIORITY.get(record.levelname, 6)}>{text}" if self.journald else text


def setup(level: str, journald: bool, stream: TextIO = sys.stdout) -> None:
    """Send every log record of the process to ``stream`` as JSON lines."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(journald))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log(logger: logging.Logger, level: int, event: str, msg: str, **fields: object) -> None:
    """Log ``msg`` under a stable ``event`` name with context fields."""
    logger.log(level, msg, extra={"event": event, "fields": fields})
