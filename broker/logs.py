"""Logging: one JSON object per line, with a redaction step as the last line of defence.

Code never logs secrets on purpose; the redaction catches what slips through (an
exception message quoting a header, a library's debug line, a caller that put its key in
a URL): JWTs, the broker's own API keys (`atb_` and 43 base64url characters, as
`broker keygen` makes them), Basic/Bearer credentials, and `secret=`/`token=`-style pairs.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from broker.core.audit import iso_time

_REDACTIONS = (
    # A JWT: three base64url segments, the first one a JSON header ("eyJ").
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    # A broker API key (broker/cli/keygen.py), wherever it sits (a path, a header value).
    (re.compile(r"atb_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"), "[redacted-api-key]"),
    (re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (
        re.compile(
            r"(?i)((?:client_)?secret|password|api_key|access_token|token)([\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"
        ),
        r"\1\2[redacted]",
    ),
)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# Request context (request id, caller, realm) merged into every line logged while a
# request is handled, the access log included.
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")


# The current span's trace and span ids, while tracing is on (broker.adapters.tracing);
# None when it is off, so a line costs nothing more.
_trace_ids: Callable[[], dict[str, str]] | None = None


def set_trace_ids(source: Callable[[], dict[str, str]] | None) -> None:
    global _trace_ids
    _trace_ids = source


def bind_log_context(**values: str) -> None:
    """Add fields to the current request's log context."""
    _context.set({**_context.get({}), **values})


def clear_log_context() -> None:
    _context.set({})


# What any of the patterns needs to match, in lower case: most strings hold none of these
# words, and are let through after a few substring tests; a word alone (the "token" of a
# route path) costs one more search, and only a likely credential the substitutions.
_WORDS = ("eyj", "atb_", "basic", "bearer", "secret", "password", "api_key", "token")
_SUSPECT = re.compile(r"eyj|atb_|(?:basic|bearer)\s|(?:secret|password|api_key|token)[\"']?\s*[=:]")


def redact(text: str) -> str:
    lowered = text.lower()
    for word in _WORDS:  # a loop rather than any(): this runs for every logged string
        if word in lowered:
            break
    else:
        return text
    if _SUSPECT.search(lowered) is None:
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


_PLAIN = frozenset({int, float, bool, type(None)})


def _redact_value(value: Any) -> Any:
    """Redact every string inside a log entry before it is serialised, so quoting by the
    JSON encoder cannot hide a secret from the patterns and the line stays valid JSON."""
    if isinstance(value, str):
        return redact(value)
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _entry(created: float, level: str, logger: str, event: str) -> dict[str, Any]:
    """A line's fields before its own: time, level and logger are ours and not redacted;
    the event and the request's log context are."""
    entry: dict[str, Any] = {
        "time": iso_time(created, millis=True),
        "level": level,
        "logger": logger,
        "event": redact(event),
    }
    for key, value in _context.get({}).items():
        entry[key] = _redact_value(value)
    if _trace_ids is not None:
        entry.update(_trace_ids())
    return entry


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname.lower(), record.name, record.getMessage())
        fields = vars(record)
        for key in sorted(fields.keys() - _STANDARD):  # what `extra=` added
            if not key.startswith("_"):
                entry[key] = _redact_value(fields[key])
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class BufferedStreamHandler(logging.StreamHandler[TextIO]):
    """Writes each line at once but flushes at most every `interval` seconds (warnings
    and errors at once): one system call per burst of access-log lines, not per line."""

    def __init__(self, stream: TextIO, *, interval: float = 0.25) -> None:
        super().__init__(stream)
        self._interval = interval
        self._timer: threading.Timer | None = None

    def flush(self) -> None:
        with self.lock or threading.RLock():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._write(line, record)

    def write_info_line(self, line: str) -> None:
        """Write a line formatted elsewhere (`AccessLog`), as `emit` writes an INFO one."""
        with self.lock or threading.RLock():
            self._write(line, None)

    def _write(self, line: str, record: logging.LogRecord | None) -> None:
        """Write now; flush now for a warning or worse, else within the interval."""
        try:
            self.stream.write(line + self.terminator)
        except Exception:
            self.handleError(record or logging.makeLogRecord({"msg": "an access-log line"}))
            return
        if record is not None and record.levelno >= logging.WARNING:
            self.flush()
        else:
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self._interval, self.flush)
            self._timer.daemon = True
            self._timer.start()


def configure_logging(level: str = "info") -> None:
    # A line holds none of the caller's file, line, thread or process: not looking them
    # up saves a stack walk and several calls per line (the logging HOWTO's optimisations).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _handler
    handler = _handler = BufferedStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every request URL at INFO; the broker's own events say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


# The handler `configure_logging` installed: `AccessLog` writes to it directly while it is
# still the only one (tests and embedding applications may install their own).
_handler: BufferedStreamHandler | None = None


class AccessLog:
    """The access log (logger `broker.access`, INFO): one line per answered request.

    Every request writes one, so while `configure_logging`'s handler is the only one its
    lines are built here directly, in the shape `JsonFormatter` gives (the request's log
    context, redaction and all), without a LogRecord and the handler chain: that costs
    a third of what the rest of a cached-token request does (docs/BENCHMARKS.md). With any
    other logging set up, the lines go through `logging` like every other line."""

    def __init__(self, name: str = "broker.access") -> None:
        self.logger = logging.getLogger(name)

    def write(self, event: str, fields: dict[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _handler
        root = logging.root
        if (
            handler is None
            or logger.handlers
            or len(root.handlers) != 1
            or root.handlers[0] is not handler
        ):
            logger.info(event, extra=fields)
            return
        entry = _entry(time.time(), "info", logger.name, event)
        for key, value in fields.items():
            entry[key] = _redact_value(value)
        handler.write_info_line(orjson.dumps(entry).decode())
