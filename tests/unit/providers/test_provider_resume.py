"""Durable vendor jobs (issue #14 §3): every resumable adapter, against its fake over loopback.

A resumable adapter hands the gateway a reference to each vendor job it will wait on
(`Job.on_submitted`), and given that reference back (`Job.vendor_ref`), in a process that
never submitted the job, waits on the same job, and can stop it. The cases are the shared
contract cases (`tests/fakes/*.CONTRACT_CASES`) whose job the vendor runs as a polled job,
for every adapter that says it is `resumable`: converting an adapter adds its cases here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from typing import Any

import httpx
import pytest

from image_router.providers.contract import Job, Provider, Result
from image_router.providers.errors import UpstreamMisconfiguredError
from image_router.providers.resume import INVALID_REF_CODE
from tests.fakes import FakeVendor, Recorded, serve_in_thread
from tests.fakes.contract import ContractCase, discover_cases

TIMEOUT = 5.0

RESUMABLE_CASES = [c for c in discover_cases() if c.polls and c.provider.resumable]


def _case_id(case: ContractCase) -> str:
    return f"{case.id}-{case.job.modality}"


@pytest.fixture(params=RESUMABLE_CASES, ids=_case_id)
def case(request: pytest.FixtureRequest) -> ContractCase:
    param: ContractCase = request.param
    return param


@pytest.fixture
def fake(case: ContractCase) -> FakeVendor:
    return case.make_fake()


@pytest.fixture
def root(fake: FakeVendor) -> Iterator[str]:
    with serve_in_thread(fake.app) as url:
        yield url


@pytest.fixture
async def process(case: ContractCase, root: str) -> AsyncIterator[Any]:
    """`process()`: the adapter as a fresh gateway process has it: its own HTTP client."""
    clients: list[httpx.AsyncClient] = []

    def build() -> Provider:
        client = httpx.AsyncClient(timeout=TIMEOUT)
        clients.append(client)
        return case.build(client, root)

    yield build
    for client in clients:
        await client.aclose()


class Recorder:
    """A gateway's `on_submitted`: keeps each reference, as JSON, as the database would,
    and the request the fake had received last at that moment (the submission). `fail`:
    the database is down instead."""

    def __init__(
        self, fake: FakeVendor, *, interrupt: bool = False, fail: Exception | None = None
    ) -> None:
        self.fake = fake
        self.interrupt = interrupt
        self.fail = fail
        self.refs: list[dict[str, Any]] = []
        self.last_requests: list[Recorded] = []

    async def __call__(self, ref: Mapping[str, Any]) -> None:
        self.last_requests.append(self.fake.last)
        if self.fail is not None:
            raise self.fail
        self.refs.append(json.loads(json.dumps(ref)))  # raises if not JSON-serialisable
        if self.interrupt:
            # The process dies once the job is on record: its wait is cut short at the
            # adapter's next await, and nothing else runs in it (cf. kill -9).
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

    @property
    def ref(self) -> dict[str, Any]:
        (ref,) = self.refs
        return ref

    @property
    def submission(self) -> Recorded:
        (request,) = self.last_requests
        return request

    def submissions(self) -> int:
        """Jobs submitted: requests like the submission (every status check differs)."""
        sent = self.submission
        return sum(
            1
            for r in self.fake.requests
            if (r.method, r.path, r.body) == (sent.method, sent.path, sent.body)
        )


async def interrupted_job(
    case: ContractCase, fake: FakeVendor, process: Any
) -> tuple[Job, Recorder]:
    """Submit `case.job` in a process that dies once the vendor job is on record; return
    the job as the gateway resumes it (with `vendor_ref`), and what was recorded."""
    recorder = Recorder(fake, interrupt=True)
    job = replace(case.job, job_id="gen-resume-1", on_submitted=recorder)
    with pytest.raises(asyncio.CancelledError):
        await process().generate(job, case.target)
    # The dying process left the vendor job running: it is on record, to be resumed.
    assert fake.cancelled_jobs() == []
    return replace(case.job, job_id="gen-resume-1", vendor_ref=recorder.ref), recorder


def assert_has_outputs(result: Result) -> None:
    assert result.artifacts
    assert all(a.data or a.url for a in result.artifacts)


# ---------------------------------------------------------------------------- (a)


async def test_on_submitted_gets_one_json_reference_before_the_wait(
    case: ContractCase, fake: FakeVendor, process: Any
) -> None:
    recorder = Recorder(fake)

    result = await process().generate(replace(case.job, on_submitted=recorder), case.target)

    assert_has_outputs(result)
    ref = recorder.ref  # exactly one call
    assert ref["provider"] == case.id
    # Called right after the submission was accepted, before any status check: the last
    # request the vendor had seen then carried the job, and none like it came after.
    assert recorder.submission.method == "POST"
    assert recorder.submissions() == 1
    assert fake.requests[-1] is not recorder.submission
    assert case.credential not in json.dumps(ref)


# ---------------------------------------------------------------------------- (b)


async def test_a_job_interrupted_after_it_was_recorded_resumes_in_another_process(
    case: ContractCase, fake: FakeVendor, process: Any
) -> None:
    resumed, recorder = await interrupted_job(case, fake, process)

    result = await process().generate(resumed, case.target)

    assert_has_outputs(result)
    assert recorder.submissions() == 1
    assert fake.cancelled_jobs() == []


async def test_resuming_a_finished_job_returns_the_same_result(
    case: ContractCase, fake: FakeVendor, process: Any
) -> None:
    recorder = Recorder(fake)
    first = await process().generate(replace(case.job, on_submitted=recorder), case.target)

    again = await process().generate(replace(case.job, vendor_ref=recorder.ref), case.target)

    assert again.artifacts == first.artifacts
    assert again.reported_cost == first.reported_cost
    assert recorder.submissions() == 1


# ---------------------------------------------------------------------------- (c)


async def test_cancel_from_the_reference_alone_stops_the_vendor_job(
    case: ContractCase, fake: FakeVendor, process: Any
) -> None:
    resumed, recorder = await interrupted_job(case, fake, process)

    stopped = await process().cancel(resumed, case.target)

    assert stopped is case.cancels
    assert len(fake.cancelled_jobs()) == (1 if case.cancels else 0)
    assert recorder.submissions() == 1


async def test_cancel_just_after_the_wait_was_cut_short_still_stops_the_job(
    case: ContractCase, fake: FakeVendor, process: Any
) -> None:
    """The gateway abandoning a job cancels the waiting task first, then calls `cancel`
    (generation/attempts.py): by then the wait has unwound, leaving the durable job
    running, and `cancel` must still reach it without any reference in hand."""
    provider = process()
    job = replace(case.job, job_id="gen-deadline", on_submitted=Recorder(fake, interrupt=True))
    with pytest.raises(asyncio.CancelledError):
        await provider.generate(job, case.target)
    assert fake.cancelled_jobs() == []

    stopped = await provider.cancel(job, case.target)

    assert stopped is case.cancels
    assert len(fake.cancelled_jobs()) == (1 if case.cancels else 0)
    assert await provider.cancel(job, case.target) is False  # once is enough


# ---------------------------------------------------------------------------- (d)


async def test_a_reference_the_gateway_cannot_record_stops_the_job_and_raises(
    case: ContractCase, fake: FakeVendor, process: Any
) -> None:
    recorder = Recorder(fake, fail=ConnectionError("the database is down"))
    job = replace(case.job, job_id="gen-unrecorded", on_submitted=recorder)

    with pytest.raises(ConnectionError, match="database is down"):
        await process().generate(job, case.target)

    assert len(fake.cancelled_jobs()) == (1 if case.cancels else 0)
    assert recorder.submissions() == 1


# ---------------------------------------------------------------------------- bad refs


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "someone-else"},
        {"v": 99},
    ],
    ids=["other-provider", "unknown-version"],
)
async def test_a_reference_the_adapter_did_not_make_is_refused_without_a_call(
    case: ContractCase, fake: FakeVendor, process: Any, change: dict[str, Any]
) -> None:
    resumed, _ = await interrupted_job(case, fake, process)
    before = len(fake.requests)
    bad = replace(resumed, vendor_ref={**(resumed.vendor_ref or {}), **change})

    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await process().generate(bad, case.target)

    assert caught.value.code == INVALID_REF_CODE
    assert len(fake.requests) == before


# ---------------------------------------------------------------------------- final at once

ANSWERED_AT_ONCE = [c for c in discover_cases() if not c.polls and c.provider.resumable]


@pytest.mark.parametrize("case", ANSWERED_AT_ONCE, indirect=True, ids=_case_id)
async def test_an_answer_final_at_submit_leaves_nothing_to_record(
    case: ContractCase, fake: FakeVendor, process: Any
) -> None:
    """A synchronous answer is read at once: no reference, so no database write."""
    recorder = Recorder(fake)

    result = await process().generate(replace(case.job, on_submitted=recorder), case.target)

    assert_has_outputs(result)
    assert recorder.refs == []
    assert recorder.last_requests == []


def test_every_resumable_adapter_is_checked_here() -> None:
    resumable = {c.provider for c in discover_cases() if c.provider.resumable}
    assert {c.provider for c in RESUMABLE_CASES} == resumable
