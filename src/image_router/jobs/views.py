"""The job object the API answers (docs/jobs.md), built from the usage row and the job row.

The usage row decides the outcome: `processing` is queued or running (the job row says
which), `success` is succeeded, `error` is failed, or cancelled when the job row says the
client cancelled it. A generation without a job row (a synchronous request that finished
with its client still there) reads the same way from its usage row alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from image_router.kit.money import usd_number

ACTIVE_STATES = ("queued", "running")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

CANCELLED: dict[str, Any] = {
    "message": "The job was cancelled (POST /v1/jobs/{id}/cancel). You were not charged.",
    "type": "cancelled",
    "code": "job_cancelled",
}


def status_of(generation_status: str, state: str | None) -> str:
    if generation_status == "processing":
        return "queued" if state == "queued" else "running"
    if generation_status == "success":
        return "succeeded"
    return "cancelled" if state == "cancelled" else "failed"


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def job_object(
    generation: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    answer: Mapping[str, Any] | None,
    *,
    now: datetime,
    outputs_hours: int,
) -> dict[str, Any]:
    """The API's job object. `generation`: the usage row; `job`: the job row (None for a
    plain synchronous generation); `answer`: the stored answer, opened (None if none)."""
    state = job["state"] if job is not None else None
    status = status_of(generation["status"], state)
    data: list[Any] | None = None
    error: dict[str, Any] | None = None
    latency = cost = None
    if status == "succeeded":
        latency = generation["latency_ms"]
        cost = usd_number(int(generation["cost"] or 0))
        expires_at = generation["outputs_expire_at"]
        urls = list(generation["output_urls"] or [])
        if expires_at is not None and expires_at <= now:
            error = {
                "message": f"This job's outputs expired: they are kept {outputs_hours} hours "
                "after the generation (RETENTION_OUTPUTS_HOURS).",
                "type": "invalid_request_error",
                "code": "job_outputs_expired",
            }
        elif answer is not None:
            data = list(answer.get("data") or [])
        elif urls:
            # The answer was not kept (a synchronous request answered while its client was
            # there): its stored outputs, which is what `url` answers carried.
            data = [{"url": url} for url in urls]
        else:
            error = {
                "message": "This job's outputs were answered once (b64_ephemeral) and are "
                "never stored, so they cannot be fetched again.",
                "type": "invalid_request_error",
                "code": "job_outputs_not_kept",
            }
    elif status == "cancelled":
        error = dict(job["error"]) if job is not None and job["error"] else dict(CANCELLED)
    elif status == "failed":
        if job is not None and job["error"]:
            error = dict(job["error"])
        else:
            error = {
                "message": f"The generation failed ({generation['error'] or 'no detail'}). "
                "You were not charged.",
                "type": "upstream_error",
                "code": "generation_failed",
            }
    return {
        "id": generation["id"],
        "object": "job",
        "status": status,
        "model": generation["model"],
        "modality": generation["modality"],
        "created": _unix(generation["created_at"]),
        "finished": _unix(generation["finished_at"]) if status in _FINAL else None,
        "progress": job["progress"] if job is not None and status == "running" else None,
        "data": data,
        "latency": latency,
        "cost": cost,
        "error": error,
    }


_FINAL = frozenset({"succeeded", "failed", "cancelled"})
