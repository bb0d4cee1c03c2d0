"""Structured logs: one JSON object per line on stderr, the request id on every line.

A line is `{"time", "level", "logger", "message", "request_id"}` plus `exception` (the
traceback) or `stack` when the record has one. `time` is ISO 8601 in UTC. `request_id` is
the id of the HTTP request being served (see `observability.middleware`), null outside one.
The `text` format prints the same facts for a human at a terminal.

Every line passes `RedactSecrets` first (see `observability.redact`). The gateway never logs
prompts or keys; the filter catches what slips through by accident.

The handler lives on the root logger and uvicorn's loggers propagate to it, so the server's
own lines have the same shape. Other handlers on the root (pytest's, an operator's) are left
alone; only ours is replaced when logging is configured again.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from image_router.observability.redact import redact

#: The id of the request being served, set by the middleware for the request's lifetime.
#: Tasks started while serving a request copy it, so their lines carry it too.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

FORMATS = ("json", "text")
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
#: Libraries whose DEBUG lines carry user data: aiosqlite prints every statement with its
#: parameters (prompts, key hashes), hpack every header (credentials). They stay at INFO
#: even when LOG_LEVEL=DEBUG.
QUIET_LOGGERS = ("aiosqlite", "hpack")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamp the current request id on the record while still in the caller's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RedactSecrets(logging.Filter):
    """Blank out secrets in the message, the traceback and the stack of a record.

    The record itself is rewritten (message merged with its arguments), so any handler
    after ours sees the redacted text as well.
    """

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry).decode()
        except orjson.JSONEncodeError:
            # orjson refuses lone surrogates (undecodable file names); json escapes them.
            return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = None
        return super().format(record)


class GatewayHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time, like `logging.lastResort`.

    Binding the stream once would keep writing to a replaced or closed stream (test
    capture, daemonising).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def make_handler(fmt: str = "json") -> GatewayHandler:
    """Our handler with its filters and the formatter for `fmt` ("json" or "text")."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = GatewayHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log line (ours and uvicorn's) through one handler on the root logger.

    Idempotent: calling it again replaces our handler, never adds a second one. Raises
    ValueError on an unknown level or format, so a typo stops the server at start.
    """
    handler = make_handler(fmt)
    root = logging.getLogger()
    root.setLevel(level.upper())
    for old in [h for h in root.handlers if isinstance(h, GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    for name in UVICORN_LOGGERS:
        # uvicorn's default config gives its loggers their own handlers and stops them
        # propagating; we want its lines in the same format on the same stream. A logger
        # without handlers is left as it is: that is how uvicorn switches the access log
        # off (it logs access only if `hasHandlers()`), and it must stay off.
        uvicorn_logger = logging.getLogger(name)
        if uvicorn_logger.handlers:
            uvicorn_logger.handlers.clear()
            uvicorn_logger.propagate = True


def is_configured() -> bool:
    return any(isinstance(h, GatewayHandler) for h in logging.getLogger().handlers)


def ensure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """`configure_logging` unless this process already did.

    The CLI configures logging before uvicorn starts; a worker process of `--workers N`, or
    a bare `uvicorn --factory` run, has not, and gets it from `create_app`.
    """
    if not is_configured():
        configure_logging(level, fmt)
