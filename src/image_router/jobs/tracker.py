"""One generation's job state in this process: the generator's `Tracker`
(generation/durability.py), written to the job row (jobs/store.py) when there is one.

A synchronous generation gets a tracker without a row (no database round trip); the row
appears when the request is async, when a resumable vendor accepts the job
(`submitted`), or when its client hangs up (`Jobs.detach`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, Protocol

import orjson

from image_router.account.personal_data import Vault
from image_router.generation.resumption import INTERRUPTED
from image_router.jobs.store import JobStore
from image_router.jobs.views import CANCELLED

#: The error codes of a generation whose task was cancelled (generation/failures.py).
_CUT_CODES = frozenset({"client_disconnected", "server_shutting_down"})


class Registry(Protocol):
    """The process's jobs, as a tracker sees them (`Jobs`)."""

    store: JobStore
    vault: Vault

    @property
    def stopping(self) -> bool: ...

    def done(self, tracker: JobTracker) -> None: ...


class JobTracker:
    """One generation's job state in this process (generation/durability.Tracker)."""

    durable = True

    def __init__(
        self,
        jobs: Registry,
        generation_id: str,
        account_id: str,
        *,
        modality: str,
        model: str,
        deadline_at: datetime,
        row: bool = False,
        ref_saved: bool = False,
    ) -> None:
        self.jobs = jobs
        self.generation_id = generation_id
        self.account_id = account_id
        self.modality = modality
        self.model = model
        self.deadline_at = deadline_at
        self.row = row  # a job row exists (async, vendor accepted, or detached)
        self.ref_saved = ref_saved  # the vendor's reference is on record
        self.ended = False  # keep() or failed() ran: the outcome is known
        self._cancelled = False
        self.task = asyncio.current_task()

    async def submitted(self, spec: Mapping[str, Any], ref: Mapping[str, Any]) -> None:
        await self.jobs.store.record_ref(self, spec, ref)
        self.row = self.ref_saved = True

    def keep(
        self, answer: Mapping[str, Any], expires_at: datetime | None
    ) -> Awaitable[None] | None:
        """Seal and store the answer before the settle (docs/jobs.md); None without a job
        row. An answer whose outputs are not stored (b64_ephemeral) is not kept either."""
        self.ended = True
        if not self.row or expires_at is None:
            return None
        return self._keep(answer, expires_at)

    async def _keep(self, answer: Mapping[str, Any], expires_at: datetime) -> None:
        sealed = await self.jobs.vault.seal(self.account_id, orjson.dumps(answer).decode())
        await self.jobs.store.keep(self.generation_id, sealed, expires_at)

    async def failed(self, error: Mapping[str, Any]) -> Mapping[str, Any]:
        self.ended = True
        if self._cancelled:
            error = CANCELLED
        elif self.row and error.get("code") in _CUT_CODES:
            # No client waits on a job: its task was cut (the process is stopping).
            error = INTERRUPTED
        if self.row:
            await self.jobs.store.record_error(self.generation_id, error)
        return error

    def suspended(self) -> bool:
        # Only a stopping process hands a job over: a cancellation otherwise is the
        # deadline's (cancel at the vendor, release) or the client's (`cancel`).
        return self.ref_saved and not self._cancelled and self.jobs.stopping

    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def done(self) -> None:
        self.jobs.done(self)
