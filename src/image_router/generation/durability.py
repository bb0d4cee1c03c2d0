"""What a generation tells whoever keeps it alive beyond its HTTP request (the jobs).

The `Generator` is given a `Durability` collaborator (`jobs/`, wired by the composition
root) and asks it for a `Tracker` once a request's credit is held. The generation then
tells the tracker what happens to it:

- `submitted(plan, ref)`: a resumable vendor accepted the job; `ref` (JSON) is what its
  adapter needs to wait on it, or cancel it, from any process. The tracker persists it
  before the adapter waits, so a process that dies from here on leaves a job another
  process resumes instead of a result paid for and lost.
- `keep(answer)`: the answer, before the settle, for a job someone will fetch later.
- `failed(error)`: the error object of a failed job, after its release.
- `suspended()`: asked when the generation is cancelled. True means "this process is
  stopping, and the vendor job is persisted": leave the hold and the vendor job alone,
  another process resumes it once this one's lease expires.

A synchronous request to a vendor that answers in one call touches none of this beyond
an in-memory registration: no database round trip is added to the hot path (issue #12).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, Protocol

from image_router.errors import Conflict, GatewayError


class Tracker(Protocol):
    generation_id: str
    #: Whether vendors are asked for a resumable reference (`Job.on_submitted`) at all.
    durable: bool

    async def submitted(self, spec: Mapping[str, Any], ref: Mapping[str, Any]) -> None: ...

    def keep(
        self, answer: Mapping[str, Any], expires_at: datetime | None
    ) -> Awaitable[None] | None:
        """The outcome is known: the work that stores `answer` for the job, or None when
        there is nothing to store (no job row; outputs not stored). Most generations
        have none, and then cost no task for it."""
        ...

    async def failed(self, error: Mapping[str, Any]) -> Mapping[str, Any]:
        """Record a failed job's error (after its release); returns the error its
        events carry (a job words it itself: cancelled, interrupted)."""
        ...

    def suspended(self) -> bool: ...

    def cancelled(self) -> bool:
        """Whether the client cancelled it (POST /v1/jobs/{id}/cancel)."""
        ...

    def done(self) -> None:
        """The generation ended in this process (finished, failed or suspended)."""
        ...


class Durability(Protocol):
    def track(
        self, generation_id: str, account_id: str, *, modality: str, model: str, deadline_s: float
    ) -> Tracker:
        """Called in the generation's task once its credit is held."""
        ...


class JobCancelled(Conflict):
    """A generation its client cancelled through the job API: its hold was given back."""

    code = "job_cancelled"


class JobContinues(GatewayError):
    """The server stopped while a synchronous generation waited on a vendor job that is on
    record: it is not lost, another process finishes it (and charges it only if it
    succeeds). Sending the request again would pay twice, so clients are told not to
    retry (`x-should-retry: false`, which the OpenAI SDKs honour)."""

    status = 503
    error_type = "service_unavailable"
    code = "job_continues"


class _Untracked:
    durable = False

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id

    async def submitted(self, spec: Mapping[str, Any], ref: Mapping[str, Any]) -> None:
        return None

    def keep(self, answer: Mapping[str, Any], expires_at: datetime | None) -> None:
        return None

    async def failed(self, error: Mapping[str, Any]) -> Mapping[str, Any]:
        return error

    def suspended(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def done(self) -> None:
        return None


class NoDurability:
    """Nobody keeps generations beyond their request (tests and tools with a bare
    `Generator`): vendors are not asked for a resumable reference."""

    def track(
        self, generation_id: str, account_id: str, *, modality: str, model: str, deadline_s: float
    ) -> Tracker:
        return _Untracked(generation_id)


NO_DURABILITY = NoDurability()
