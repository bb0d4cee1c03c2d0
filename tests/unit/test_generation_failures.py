"""A failed generation's event (and its job) carries the error its synchronous request is
answered with: the fleet soak found S3 and database outages reported as `internal_error`."""

from __future__ import annotations

import logging

import pytest

from image_router.db.outage import DatabaseUnreachable
from image_router.generation.failures import client_error, event_error
from image_router.storage.base import StorageError


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (StorageError("S3 upload failed: connection refused"), "storage_unavailable"),
        (DatabaseUnreachable("cannot connect to the database"), "database_unavailable"),
    ],
)
def test_an_outage_event_says_what_the_client_was_told(
    failure: Exception, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    answered = client_error(failure)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        event = event_error(failure)
    assert event == {"message": answered.message, "type": answered.error_type, "code": code}
    assert answered.code == code
    assert caplog.records == []  # logged once, when the client's answer was made


def test_a_bug_is_still_an_internal_error() -> None:
    assert event_error(KeyError("oops"))["code"] == "internal_error"
