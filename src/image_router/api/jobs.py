"""`/v1/jobs`: async and durable generations (issue #14 §2–3; docs/jobs.md).

A generation asked with `Prefer: respond-async` answers 202 with a job object and
`Location: /v1/jobs/{id}` (api/generation.py); these routes read, list and cancel jobs.
The job id is the generation's (the synchronous answer's `X-Generation-Id`), so any
generation of the account can be read here, and a running one cancelled.

Authenticated like the generation routes (an API key or a website token); a website guest
(the shared guest account) and a management key are refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from image_router.account.service import Caller
from image_router.api.deps import ResourcesDep
from image_router.api.identity import CallerDep
from image_router.api.openapi import JobList, JobObject
from image_router.api.responses import json_response
from image_router.errors import Forbidden, InvalidRequest
from image_router.jobs.service import Jobs
from image_router.resources import Resources

router = APIRouter(tags=["Jobs"])

RESPOND_ASYNC = "respond-async"
PREFERENCE_APPLIED = "Preference-Applied"
MAX_LIMIT = 100
JobId = Annotated[str, Path(min_length=1, max_length=36, description="The job (generation) id")]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def wants_async(prefer: str | None) -> bool:
    """Whether a `Prefer` header (RFC 7240: comma-separated preferences, each a token
    with optional `=value` and `;` parameters, names case-insensitive) asks respond-async."""
    if not prefer:
        return False
    for preference in prefer.split(","):
        name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == RESPOND_ASYNC:
            return True
    return False


def jobs_for(caller: Caller, res: Resources) -> Jobs:
    """The jobs use case for a caller that may have jobs (refusals otherwise)."""
    if caller.guest:
        raise InvalidRequest(
            "Jobs belong to an account: sign in (or use an API key) to run generations as "
            "jobs and to read them",
            code="jobs_need_account",
        )
    if caller.is_management:
        raise Forbidden(
            "A management key manages API keys only; use a normal API key for jobs",
            code="management_key",
        )
    if res.generation_jobs is None:  # every served app has them (resources.py)
        raise RuntimeError("the jobs use case is not wired")
    return res.generation_jobs


@router.get("/v1/jobs/{job_id}", responses={200: {"model": JobObject}})
async def get_job(job_id: JobId, caller: CallerDep, res: ResourcesDep) -> Response:
    """A job (any generation of the account): status, and its `data` once it succeeded."""
    return json_response(await jobs_for(caller, res).get(caller.account_id, job_id))


@router.get("/v1/jobs", responses={200: {"model": JobList}})
async def list_jobs(
    caller: CallerDep,
    res: ResourcesDep,
    limit: int = Query(20, ge=1, le=MAX_LIMIT, description="Jobs per page"),
    after: str | None = Query(
        None, max_length=36, description="The `last_id` of the previous page"
    ),
    status: Annotated[Status | None, Query(description="Only jobs in this status")] = None,
) -> Response:
    """The account's jobs, newest first (async requests, and synchronous ones that became
    jobs: a resumable vendor job, or a client that hung up)."""
    page = await jobs_for(caller, res).listing(
        caller.account_id, limit=limit, after=after, status=status
    )
    return json_response(page)


@router.post("/v1/jobs/{job_id}/cancel", responses={200: {"model": JobObject}})
async def cancel_job(job_id: JobId, caller: CallerDep, res: ResourcesDep) -> Response:
    """Cancel a queued or running job: the hold goes back (nothing is charged) and the
    vendor is asked to stop; 409 `job_not_cancellable` once it has finished."""
    return json_response(await jobs_for(caller, res).cancel(caller.account_id, job_id))
