"""`Idempotency-Key` on the POSTs that cost money or change state (issue #14 §1).

Without the header nothing changes. With it, the endpoint reads its body through
`Fingerprinted.request`, whose receive channel feeds every raw body byte (multipart
included) to the fingerprint; once the body is read and the request admitted,
`Fingerprinted.begin` checks the key (1–255 printable ASCII, else 400) and claims it in the
database (`idempotency/store.py`) before any work. A repeat gets the stored answer (status,
body, `X-Generation-Id`, plus `Idempotent-Replayed: true`), waits for a first request still
running, or is refused (422 another request's key, 409 still running).

What the work answers is stored, errors included (a 402 or a 502 is final: nothing was
charged, and the same request would fail the same way), except answers asking for a retry
(409, 429, `Retry-After`), which release the key instead. Refusals before the claim
(authentication, rate limits, a malformed or invalid body, the free tier) are answered
afresh each time and never stored, as at Stripe.

`idempotently` wraps a JSON endpoint (key creation, checkout). A generation stores its own
outcome from inside its task (`Idempotent.record`), so the answer is kept even when the
client hangs up after the charge, and a keep-alive answer is stored as sent: status 200 and
the final JSON.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from image_router.errors import GatewayError, InternalError, PayloadTooLarge
from image_router.idempotency.keys import Digest, check_key, key_hash, new_fingerprint
from image_router.idempotency.store import Answer, Claim, Idempotency
from image_router.kit.shielding import shielded
from image_router.resources import Resources

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The headers of an answer that are part of it (the rest describe this one response).
KEPT_HEADERS = frozenset({"content-type", "location", "x-generation-id"})
# Key creation and checkout: a transaction and at most one call to Stripe.
SHORT_LEASE_S = 120.0
# A body the endpoint did not read (a content type it ignores) is still fingerprinted.
_MAX_UNREAD_BYTES = 1024 * 1024
_JSON = {"content-type": "application/json"}
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)

Parsed = TypeVar("Parsed")


@dataclass
class Idempotent:
    """This request's claim on its key, for an `act` that records its own outcome."""

    store: Idempotency
    claim: Claim
    settled: bool = False  # the answer is stored, or the claim released
    streamed: bool = False  # the answer switched to keep-alive (status 200 committed)

    async def finish(self, answer: Answer) -> None:
        if not self.settled:
            self.settled = True
            await shielded(self.store.finish(self.claim, answer))

    async def release(self) -> None:
        if not self.settled:
            self.settled = True
            await shielded(self.store.release(self.claim))

    def stream_started(self) -> None:
        self.streamed = True

    async def record(
        self, work: Awaitable[dict[str, Any]], headers: Mapping[str, str], generation_id: str
    ) -> dict[str, Any]:
        """Run a generation and store its outcome before handing it on, whatever becomes
        of the response: a client gone after the charge still finds its answer."""
        kept = {name.lower(): value for name, value in headers.items()} | _JSON
        try:
            body = await work
        except asyncio.CancelledError:
            # The client hung up: released unless the settle had already charged it.
            if not self.settled:
                self.settled = True
                await shielded(self.store.abandon(self.claim, generation_id))
            raise
        except GatewayError as exc:
            if not self.streamed:
                # As the error handler answers it: without the generation's id.
                await self.finish(_error_answer(exc, {}))
            elif _error_answer(exc, {}).kept:
                await self.finish(Answer(200, kept, orjson.dumps(exc.body())))
            else:
                await self.release()  # a busy vendor: the retry should run again
            raise
        except Exception:
            failure = InternalError(
                "Failed to generate. You were not charged."
                if self.streamed
                else "Internal server error"
            )
            await self.finish(
                Answer(200 if self.streamed else 500, kept, orjson.dumps(failure.body()))
            )
            raise
        await self.finish(Answer(200, kept, orjson.dumps(body)))
        return body


class Fingerprinted:
    """The request as its endpoint should read it: with an `Idempotency-Key`, every body
    byte read through `request` feeds the fingerprint."""

    def __init__(self, request: Request) -> None:
        self.key = request.headers.get(HEADER)
        self._hashing: _HashingReceive | None = None
        self.request = request
        if self.key is not None:
            digest = new_fingerprint(request.method, request.url.path)
            content_type = request.headers.get("content-type", "")
            self._hashing = _HashingReceive(request.receive, digest, content_type)
            self.request = Request(request.scope, self._hashing)

    async def begin(
        self, res: Resources, account_id: str, *, lease_s: float, scope: str = ""
    ) -> Idempotent | Response | None:
        """Once the body is read: None without the header, else this request's claim, or
        the stored answer to replay. Raises 400 (a bad key), 422 (the key is another
        request's) or 409 (its first request is still running past the wait)."""
        if self.key is None or self._hashing is None:
            return None
        key = check_key(self.key)
        await self._hashing.drain()
        begun = await res.idempotency.begin(
            account_id,
            key_hash(account_id, key, scope=scope),
            self._hashing.hexdigest(),
            lease_s=lease_s,
        )
        if isinstance(begun, Answer):
            return _replay(begun)
        return Idempotent(res.idempotency, begun)


async def idempotently(
    request: Request,
    res: Resources,
    account_id: str,
    read: Callable[[Request], Awaitable[Parsed]],
    act: Callable[[Parsed], Awaitable[Response]],
    *,
    lease_s: float = SHORT_LEASE_S,
) -> Response:
    """Answer `act(read(request))` once per `Idempotency-Key` of the account (see above);
    `act` answers JSON. `lease_s`: how long a claim stands before a retry may take over."""
    body = Fingerprinted(request)
    parsed = await read(body.request)
    begun = await body.begin(res, account_id, lease_s=lease_s)
    if begun is None:
        return await act(parsed)
    if isinstance(begun, Response):
        return begun
    try:
        response = await act(parsed)
    except GatewayError as exc:
        await begun.finish(_error_answer(exc, {}))
        raise
    except ClientDisconnect:
        await begun.release()
        raise
    except Exception:
        await begun.finish(
            Answer(500, _JSON, orjson.dumps(InternalError("Internal server error").body()))
        )
        raise
    except BaseException:
        await begun.release()  # cancelled (shutdown): nothing final to keep
        raise
    kept = {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    await begun.finish(Answer(response.status_code, kept, bytes(response.body)))
    return response


def _error_answer(error: GatewayError, headers: Mapping[str, str]) -> Answer:
    return Answer(error.status, {**headers, **_JSON, **error.headers}, orjson.dumps(error.body()))


def _replay(answer: Answer) -> Response:
    headers = {**answer.headers, REPLAYED_HEADER: "true"}
    media_type = headers.pop("content-type", None)
    return Response(answer.body, status_code=answer.status, headers=headers, media_type=media_type)


class _HashingReceive:
    """The request's receive channel, feeding every body byte to the fingerprint.

    A multipart body's boundary is random per request (clients draw a new one for each
    retry), so it is hashed as a fixed token: the same form is the same fingerprint.
    """

    def __init__(self, receive: Receive, digest: Digest, content_type: str) -> None:
        self._receive = receive
        self._digest = digest
        self._more = True
        found = _BOUNDARY.search(content_type)
        self._marker = b"--" + found.group(1).encode("latin-1") if found else b""
        self._tail = b""

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._feed(message.get("body", b""))
            self._more = bool(message.get("more_body", False))
        return message

    def _feed(self, chunk: bytes) -> None:
        if not self._marker:
            self._digest.update(chunk)
            return
        data = self._tail + chunk
        parts = data.split(self._marker)
        for part in parts[:-1]:
            self._digest.update(part + b"--<boundary>")
        # What follows the last marker may end in the start of the next one: kept back.
        rest = parts[-1]
        keep = min(len(rest), len(self._marker) - 1)
        self._digest.update(rest[: len(rest) - keep])
        self._tail = rest[len(rest) - keep :]

    def hexdigest(self) -> str:
        self._digest.update(self._tail)
        self._tail = b""
        return self._digest.hexdigest()

    async def drain(self) -> None:
        """Read (and fingerprint) what the endpoint left of the body."""
        unread = 0
        while self._more:
            message = await self()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            unread += len(message.get("body", b""))
            if unread > _MAX_UNREAD_BYTES:
                raise PayloadTooLarge("The request body is too large")
