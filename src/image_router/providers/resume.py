"""Vendor jobs that outlive the process that submitted them (issue #14 §3).

A resumable adapter (`Provider.resumable`) gets its vendor job through `submit_or_resume`:

- a fresh job is submitted; when the vendor's answer leaves something to wait on, the
  gateway is handed a reference to it (`Job.on_submitted`) before the wait begins. If the
  gateway cannot record it, the vendor job is stopped (best effort) and the error raised:
  a job nobody recorded must not run on, billed to our vendor account, for nobody;
- a job that carries `Job.vendor_ref` (the gateway resuming it, maybe in another process)
  is not submitted again: the adapter rebuilds what it waits on from the reference.

A reference is a small JSON object: `{"provider": <adapter id>, "v": 1, ...}` plus what the
adapter needs to wait on and stop that job (ids, and the status/result/cancel URLs as the
vendor gave them). It never holds our credential: the resuming process uses its own.
An answer that was final already (a synchronous image, `Prefer: wait` that held until the
end) is read at once, so nothing is handed over and there is nothing to resume.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from image_router.providers.contract import Job
from image_router.providers.errors import UpstreamMisconfiguredError
from image_router.providers.inflight import cancel_quietly

#: The reference format's version, so that a later format can still read today's rows.
REF_VERSION = 1
#: The error code of a reference an adapter cannot resume from (the gateway's fault).
INVALID_REF_CODE = "invalid_vendor_ref"

H = TypeVar("H")

log = logging.getLogger(__name__)


def make_ref(provider: str, **fields: str | int | float | None) -> dict[str, Any]:
    """The reference of one vendor job (`fields` left None are left out)."""
    ref: dict[str, Any] = {"provider": provider, "v": REF_VERSION}
    ref.update((name, value) for name, value in fields.items() if value is not None)
    return ref


def ref_text(ref: Mapping[str, Any], name: str, provider: str) -> str:
    """`ref[name]`, a non-empty string, from a reference made by `provider`'s adapter."""
    check_ref(ref, provider)
    value = ref.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid(f"it has no '{name}'", ref, provider)
    return value


def optional_text(ref: Mapping[str, Any], name: str) -> str | None:
    value = ref.get(name)
    return value if isinstance(value, str) and value else None


def check_ref(ref: Mapping[str, Any], provider: str) -> None:
    """Refuse a reference another adapter (or a later format) made."""
    if ref.get("provider") != provider:
        raise _invalid(f"it names provider {ref.get('provider')!r}", ref, provider)
    if ref.get("v") != REF_VERSION:
        raise _invalid(f"its version is {ref.get('v')!r}, not {REF_VERSION}", ref, provider)


def _invalid(why: str, ref: Mapping[str, Any], provider: str) -> UpstreamMisconfiguredError:
    return UpstreamMisconfiguredError(
        f"cannot resume the {provider} job: {why}",
        provider=provider,
        body=dict(ref),
        code=INVALID_REF_CODE,
    )


async def submit_or_resume(
    job: Job,
    submit: Callable[[], Awaitable[H]],
    *,
    vendor: str,
    to_ref: Callable[[H], Mapping[str, Any] | None],
    from_ref: Callable[[Mapping[str, Any]], H],
    stop: Callable[[H], Awaitable[object]] | None = None,
) -> H:
    """The vendor job `job` waits on: the one its `vendor_ref` names, else a new one.

    `submit` makes the vendor call and returns the adapter's handle on the job; `to_ref`
    is that handle's reference, or None when the answer is final already; `from_ref`
    rebuilds a handle from a reference (raising `UpstreamMisconfiguredError` with code
    `invalid_vendor_ref` when it cannot); `stop` stops the job, for vendors that can.
    """
    if job.vendor_ref is not None:
        return from_ref(job.vendor_ref)
    handle = await submit()
    ref = to_ref(handle)
    if ref is not None and job.on_submitted is not None:
        try:
            await job.on_submitted(ref)
        except BaseException as exc:  # cancelled too: the record may not have been written
            stopped = stop is not None and await cancel_quietly(stop(handle), vendor=vendor)
            log.warning(
                "%s: the gateway could not record the vendor job of %s (%r); cancel %s",
                vendor,
                job.job_id or "-",
                exc,
                "sent" if stopped else "not possible" if stop is None else "failed",
            )
            raise
    return handle
