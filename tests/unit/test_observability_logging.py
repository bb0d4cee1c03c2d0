"""JSON and text log lines: their fields, the request id, redaction, configuration."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from image_router.kit.ids import new_api_key
from image_router.observability.logging import (
    UVICORN_LOGGERS,
    GatewayHandler,
    JsonFormatter,
    configure_logging,
    ensure_logging,
    make_handler,
    request_id,
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and the loggers configure_logging touches back as they were."""
    names = [*UVICORN_LOGGERS, "aiosqlite", "hpack"]
    root = logging.getLogger()
    saved_root = root.level, list(root.handlers)
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    propagate = {n: logging.getLogger(n).propagate for n in names}
    yield
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate[name]


def _logger(name: str, fmt: str) -> logging.Logger:
    logger = logging.getLogger(f"tests.observability.{name}")
    logger.handlers[:] = [make_handler(fmt)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_a_json_line_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    _logger("fields", "json").warning("released %d expired holds", 3)
    [line] = _lines(capsys)
    assert set(line) == {"time", "level", "logger", "message", "request_id"}
    assert line["level"] == "WARNING"
    assert line["logger"] == "tests.observability.fields"
    assert line["message"] == "released 3 expired holds"
    assert line["request_id"] is None
    assert line["time"].endswith("Z")
    logged = datetime.fromisoformat(line["time"])
    assert logged.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - logged) < timedelta(seconds=5)


def test_lines_carry_the_current_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    log = _logger("rid", "json")
    token = request_id.set("req-42")
    try:
        log.info("inside")
    finally:
        request_id.reset(token)
    log.info("outside")
    inside, outside = _lines(capsys)
    assert inside["request_id"] == "req-42"
    assert outside["request_id"] is None


def test_exceptions_are_logged_with_their_traceback_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = new_api_key()
    try:
        raise ValueError(f"vendor rejected Bearer {key}")
    except ValueError:
        _logger("exc", "json").exception("call failed for %s", key)
    [line] = _lines(capsys)
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ValueError: vendor rejected Bearer [redacted]" in line["exception"]
    assert line["message"] == "call failed for [redacted]"
    assert key not in json.dumps(line)


def test_other_handlers_see_the_redacted_record(capsys: pytest.CaptureFixture[str]) -> None:
    """Handlers after ours (an operator's file handler...) get the cleaned record too."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = _logger("others", "json")
    log.addHandler(Keep())
    log.info("url https://x.example/?key=%s", "abcdef123")
    assert seen == ["url https://x.example/?key=[redacted]"]
    assert "abcdef123" not in capsys.readouterr().err


def test_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    log = _logger("text", "text")
    token = request_id.set("abc123")
    try:
        log.error("upstream down")
    finally:
        request_id.reset(token)
    out = capsys.readouterr().err
    assert out.endswith("ERROR tests.observability.text [abc123] upstream down\n")


def test_lone_surrogates_do_not_break_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    name = b"caf\xe9.png".decode("utf-8", "surrogateescape")
    _logger("surrogate", "json").warning("cannot read %s", name)
    [line] = _lines(capsys)
    assert line["message"].startswith("cannot read caf")


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_is_idempotent_and_takes_over_uvicorn() -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler())
    uvicorn_error.propagate = False
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    configure_logging("warning", "json")
    configure_logging("DEBUG", "text")
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, GatewayHandler)]
    assert len(ours) == 1
    assert not isinstance(ours[0].formatter, JsonFormatter)
    assert root.level == logging.DEBUG
    assert uvicorn_error.handlers == [] and uvicorn_error.propagate
    # uvicorn silences its access log by leaving it no handler and no propagation.
    assert not logging.getLogger("uvicorn.access").hasHandlers()
    # aiosqlite prints statement parameters (prompts) at DEBUG.
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.INFO


@pytest.mark.usefixtures("restore_logging")
def test_ensure_logging_keeps_an_existing_configuration() -> None:
    configure_logging("INFO", "text")
    ensure_logging("DEBUG", "json")
    [ours] = [h for h in logging.getLogger().handlers if isinstance(h, GatewayHandler)]
    assert not isinstance(ours.formatter, JsonFormatter)
    assert logging.getLogger().level == logging.INFO


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("level", "fmt"), [("INFO", "xml"), ("LOUD", "json")])
def test_bad_settings_fail_at_start(level: str, fmt: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message comes from logging itself)
        configure_logging(level, fmt)
