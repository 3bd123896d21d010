"""The server's own log (not a job's log lines): where ``emit serve`` writes it, at what
level, as text or as JSON lines.

Loggers, by what they report: ``emit.access`` (one line per HTTP request and per
WebSocket open and close: `emit.http.access`), ``emit.callbacks``, ``emit.space``,
``emit.store``, ``emit.runtime``, ``emit.realtime`` and ``actors`` (supervisors:
crashes and restarts). A record may carry ``fields`` (a dict, given as
``extra={"fields": …}``): the JSON form puts them beside the message as keys of their
own, the text form leaves them out (the message says the same in words).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any, TextIO

import orjson

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """A whole second's text, formatted once: lines come many a second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _iso(created: float) -> str:
    seconds = int(created)
    return f"{_second(seconds)}.{int((created - seconds) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-12-03T17:30:00.123Z INFO emit.access POST /api/v1/… 201 1.2ms key=…``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, then the
    record's ``fields`` (an access line's method, route, status, ms, key), and ``error``
    with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "info", form: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` and above to ``stream`` (stderr) in ``form``;
    replaces what an earlier call set."""
    if level not in LEVELS or form not in FORMATS:
        raise ValueError(f"level one of {LEVELS}, form one of {FORMATS}")
    # Not asked for by either form: skip the work of finding them for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "emit_serve", False)]:
        root.removeHandler(old)
    handler.emit_serve = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx says "HTTP Request: …" at INFO for every webhook try; the sender says what
    # an operator must know about those itself.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
