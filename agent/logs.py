"""One JSON object per line on stdout (journald-friendly); every agent log line goes through here."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from runner.core.text import unicode_safe

LOGGER = "deploy_agent"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, the process (which gunicorn worker), event/message and
    the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        # Fields may carry text from a request or a container: the line stays valid UTF-8 whatever they hold.
        return unicode_safe(json.dumps(line, default=str, ensure_ascii=False))


def setup_logging() -> None:
    """Send the agent's and gunicorn's logs to stdout as JSON lines (idempotent)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER, "gunicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def log(event: str, *, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log one event with its fields; callers never pass secrets (they are Secret objects, masked anyway)."""
    logging.getLogger(LOGGER).log(level, event, extra={"event": event, "fields": fields}, exc_info=exc_info)


class Stopwatch:
    """Milliseconds since it was made, for the `duration_ms` of log lines."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)


# gunicorn's own logs (arbiter, workers) as JSON too; its access log is off, the agent logs requests itself.
GUNICORN_LOGCONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "agent.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
    },
}
