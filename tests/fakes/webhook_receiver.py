"""A webhook receiver: records what the gateway posts to `/hook` (and `/other`) and answers
200, or what it is told to (`fail_next(500)`, `hang_next(seconds)`). Mounted under
`/receiver` in-process, or served on loopback by `serve_in_thread(receiver.app)`."""

from __future__ import annotations

from typing import Any

from standardwebhooks import Webhook
from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.upstream import FakeVendor, Recorded


class WebhookReceiver(FakeVendor):
    def __init__(self) -> None:
        super().__init__()
        self.add_route("/hook", self._ok, ["POST"])
        self.add_route("/other", self._ok, ["POST"])

    async def _ok(self, request: Request, rec: Recorded) -> Response:
        return Response("ok", media_type="text/plain")

    def verified(self, secret: str, recorded: Recorded | None = None) -> Any:
        """The payload of `recorded` (default: the last request), verified with the
        `standardwebhooks` library against `secret`; raises when the signature is wrong."""
        recorded = recorded or self.last
        return Webhook(secret).verify(recorded.body, recorded.headers)
