"""Log output of the command and the service: text lines, or one JSON object per line
(``FACESEAL_LOG_FORMAT=json``) for log shippers.

A JSON line carries the time (UTC, ISO 8601), level, logger and message, the traceback when
there is one, and only the structured fields named in :data:`FIELDS` (the access log's), so a
log call can never add a field nobody reviewed. Messages are escaped by JSON, so a control
character or a newline in a logged value cannot forge a second line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import click

LOG_FORMAT_ENV = "FACESEAL_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Structured fields a log call may attach with ``extra=``: the access log's, none identifying.
FIELDS = ("client", "method", "route", "status", "duration_ms", "request_id")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        document: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if name in record.__dict__:
                document[name] = record.__dict__[name]
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def log_format() -> str:
    """The format ``$FACESEAL_LOG_FORMAT`` asks for (default text); a usage error otherwise."""
    chosen = os.environ.get(LOG_FORMAT_ENV, "text").strip().lower() or "text"
    if chosen not in FORMATS:
        raise click.UsageError(f"${LOG_FORMAT_ENV} must be one of {', '.join(FORMATS)}")
    return chosen


def configure_logging(debug: bool, verbose: int) -> None:
    """Log to stderr at WARNING, INFO (``-v``) or DEBUG (``--debug``), as text or JSON."""
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format() == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("faceseal").setLevel(level)
