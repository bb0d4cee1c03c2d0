"""A background loop's failed pass: one WARNING line while the database is away, the
traceback for anything else (db/outage.py: log_failed_pass)."""

from __future__ import annotations

import logging

import pytest

from image_router.db.outage import DatabaseUnreachable, log_failed_pass

log = logging.getLogger("tests.outage_logging")


def test_an_outage_is_one_line_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise DatabaseUnreachable(f"cannot connect to the database: {exc}") from exc
    except DatabaseUnreachable as exc:
        with caplog.at_level(logging.WARNING, logger=log.name):
            log_failed_pass(log, "delivering webhooks failed", exc)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage() == (
        "delivering webhooks failed: the database is unavailable (cannot connect to the "
        "database: [Errno 111] Connection refused); will retry"
    )


def test_any_other_failure_keeps_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("a bug")
    except KeyError as exc:
        with caplog.at_level(logging.WARNING, logger=log.name):
            log_failed_pass(log, "retention purge failed", exc)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert record.getMessage() == "retention purge failed; will retry"
