"""Fake upstream vendors: Starlette apps speaking each vendor's wire format."""

from tests.fakes.upstream import (
    FakeVendor,
    Recorded,
    RecordedFile,
    TimedASGITransport,
    serve_in_thread,
)

__all__ = [
    "FakeVendor",
    "Recorded",
    "RecordedFile",
    "TimedASGITransport",
    "serve_in_thread",
]
