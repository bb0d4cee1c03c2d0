"""What the generation use case tells the rest of the world when a generation ends.

The `Generator` is given an `events` collaborator (the webhooks, wired by the composition
root) and calls it once per accepted generation, right after the settle or the release has
committed: `completed` for a success, `failed` for a failure (a vendor error, a deadline, a
client that hung up). A request refused before its credit was held (400, 402, 429, 503 for
a failing model) is answered and is not an event.

The events are recorded after the money moved, never before and never inside its
transaction: a failure here is logged and changes neither the answer nor the charge (see
`tell`). `check_url` refuses a request's `webhook_url` before anything is held.

They are never lost, though (an outbox): `expects` says, when the hold is taken, whether
the generation's end will be an event, and the usage row opened with the hold carries
that mark (`events_pending`, and the request's `webhook_url`). Recording the deliveries
clears the mark in the same transaction; a closed row still marked (its process died, the
database failed right after the settle, or the hold reconciler released it) is recorded
by the events' sweeper (webhooks/events.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from image_router.kit.shielding import shielded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """A generation that ended: what its events say about it."""

    generation_id: str
    account_id: str
    modality: str  # image | video
    model: str
    cost: int  # credits charged (0 for a failure)
    webhook_url: str | None  # the request's own webhook, besides the account's endpoints
    latency_ms: int | None = None
    # The output URLs, as the API answer's `data` has them (None for a b64_ephemeral
    # output, which is never stored); never the bytes.
    urls: tuple[str | None, ...] = ()
    error: dict[str, Any] | None = None  # the API's error object: message, type, code


class GenerationEvents(Protocol):
    async def check_url(self, url: str) -> None:
        """Refuse (`InvalidRequest`) a request's `webhook_url` that may not be called."""
        ...

    def expects(self, account_id: str, webhook_url: str | None) -> bool:
        """Whether a generation of the account (with this `webhook_url`) that ends will be
        an event: its usage row is then opened marked. Answered from memory, no query."""
        ...

    async def completed(self, finished: Finished) -> None: ...

    async def failed(self, finished: Finished) -> None: ...


class NoEvents:
    """Nobody listens (tests and tools that build a bare `Generator`)."""

    async def check_url(self, url: str) -> None:
        return None

    def expects(self, account_id: str, webhook_url: str | None) -> bool:
        return False

    async def completed(self, finished: Finished) -> None:
        return None

    async def failed(self, finished: Finished) -> None:
        return None


NO_EVENTS = NoEvents()


async def tell(events: GenerationEvents, finished: Finished, *, ok: bool) -> None:
    """Hand the ended generation to `events` (`completed`, or `failed` when not `ok`),
    after its settle or release committed: a failure here is logged and changes neither
    the answer nor what was charged; a client hanging up meanwhile does not cut it short
    (`shielded`). Nothing at all (not even a task) when `events` expects no event of it."""
    if not events.expects(finished.account_id, finished.webhook_url):
        return
    try:
        await shielded((events.completed if ok else events.failed)(finished))
    except Exception:
        log.exception("recording the events of generation %s failed", finished.generation_id)
