"""The soak's clients: closed-loop users of many accounts, through HAProxy.

Each client belongs to one account and loops: pick an action by weight, do it, think for
up to a second. Every HTTP exchange is recorded (`Sample`); the report and the books are
built from these records alone, so what is reported is what a client saw.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from tests.fakes.fal_video import fal_video_toml

IMAGE_MODEL = "openai/dall-e-2"
EDIT_MODEL = "openai/gpt-image-1"
VIDEO_MODEL = "soak/video"
VIDEO_PRICE_USD = "0.10"
PAGES = ("/", "/models", "/pricing", "/docs")
GENERATION_KINDS = ("image", "edit", "video")
# A job's outcome (`job-result`) is a generation the client got, as a 200 of the kinds above.
CHARGED_KINDS = (*GENERATION_KINDS, "job-result")
# In the body of HAProxy's own error pages (its `errorfile`s, written by soak_fleet), so a
# 502/503/504 from the proxy is told apart from one from a gateway.
HAPROXY_MARK = b"soak-haproxy:"
# Action weights: mostly generations (the money path), then what users do around them.
WEIGHTS = {
    "image": 34,
    "edit": 14,
    "video": 7,
    "credits": 15,
    "keys": 8,
    "page": 22,
    "job": 6,  # only when the server offers /v1/jobs (Clients.jobs)
}
TERMINAL = ("succeeded", "failed", "cancelled")


def video_catalog() -> str:
    """The operator catalog entry of the soak's video model: fal's queue API, whose fake
    serves it (the same entry as the durable-job tests', under the soak's id and price)."""
    return "# Written by bench/soak.py.\n" + fal_video_toml(VIDEO_MODEL, VIDEO_PRICE_USD)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


EDIT_INPUT = _png()


@dataclass
class Account:
    email: str
    key: str
    manager: str
    hook: int  # the receiver path /hook/<n> of its webhook endpoint


@dataclass
class Sample:
    kind: str
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer (transport error)
    error: str | None  # "<status> <code>" or "transport <Exception>", None when ok
    generation_id: str | None = None
    urls: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    detail: str | None = None  # the first bytes of an error body, for the report

    @property
    def ok(self) -> bool:
        return self.error is None


def _urls(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "url" and isinstance(item, str):
                yield item
            else:
                yield from _urls(item)
    elif isinstance(value, list):
        for item in value:
            yield from _urls(item)


def classify(status: int, body: bytes) -> tuple[str | None, Any]:
    """(error label or None, parsed JSON). Our errors are JSON `{"error": {"code", "type"}}`;
    anything else with an error status came from HAProxy (its HTML pages) or is a bug."""
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if status < 400 and not error:
        return None, parsed
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or "no-code"
        # A slow generation answers 200 early and writes its failure into the body
        # (keep-alive mode): still a failure the client sees.
        label = f"{status} {code}" if status >= 400 else f"{status} {code} (in body)"
        return label, parsed
    if HAPROXY_MARK in body:
        return f"{status} haproxy", parsed
    return f"{status} non-json", parsed


class Clients:
    def __init__(
        self,
        base_url: str,
        accounts: list[Account],
        concurrency: int,
        seed: int,
        request_timeout_s: float,
    ) -> None:
        self.base_url = base_url
        self.accounts = accounts
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.samples: list[Sample] = []
        self.timeout = request_timeout_s
        self.stopping = asyncio.Event()
        self.in_flight = 0
        self.broke: list[str] = []  # accounts that saw 402 since the last top-up
        self.jobs = False  # set when the server has /v1/jobs (Prefer: respond-async)
        self.poll_s = 2.0

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=0)
        # No keep-alive: every request is a new connection through HAProxy, so a host
        # that left the pool is never reached again over an old connection.
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, limits=limits
        ) as http:
            await asyncio.gather(
                *(
                    self._client(http, self.accounts[n % len(self.accounts)], n)
                    for n in range(self.concurrency)
                )
            )

    async def _client(self, http: httpx.AsyncClient, account: Account, n: int) -> None:
        rng = random.Random(self.rng.random())
        mix = {k: w for k, w in WEIGHTS.items() if k != "job" or self.jobs}
        kinds, weights = zip(*mix.items(), strict=True)
        await asyncio.sleep(rng.uniform(0, 2))  # no thundering start
        while not self.stopping.is_set():
            kind = rng.choices(kinds, weights)[0]
            self.in_flight += 1
            try:
                await getattr(self, f"_{kind}")(http, account, rng)
            finally:
                self.in_flight -= 1
            await asyncio.sleep(rng.uniform(0.0, 1.0))

    async def _send(
        self,
        http: httpx.AsyncClient,
        kind: str,
        method: str,
        path: str,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[Sample, Any]:
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        started = time.monotonic()
        try:
            reply = await http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            sample = Sample(kind, started, time.monotonic(), 0, f"transport {type(exc).__name__}")
            sample.idempotency_key = idempotency_key
            self.samples.append(sample)
            return sample, None
        error, parsed = classify(reply.status_code, reply.content)
        if kind == "job-poll" and reply.status_code == 200:
            error = None  # a failed job's `error` is its outcome, not the poll's
        sample = Sample(kind, started, time.monotonic(), reply.status_code, error)
        sample.idempotency_key = idempotency_key
        sample.generation_id = reply.headers.get("x-generation-id")
        if error is not None:
            sample.detail = reply.text[:300]
        elif kind in GENERATION_KINDS:
            sample.urls = list(_urls(parsed))
        self.samples.append(sample)
        return sample, parsed

    async def _generate(
        self, http: httpx.AsyncClient, account: Account, kind: str, path: str, **kwargs: Any
    ) -> None:
        # What a careful client does: an Idempotency-Key on every generation, and one retry
        # with the same key when the answer was lost on the way (the connection dropped,
        # or HAProxy's 502/503/504 from a dead host). It must never be charged twice.
        idem = str(uuid.uuid4())
        sample, _ = await self._send(
            http, kind, "POST", path, key=account.key, idempotency_key=idem, **kwargs
        )
        lost = sample.status == 0 or (sample.error or "").endswith("haproxy")
        if lost and not self.stopping.is_set():
            await asyncio.sleep(1.0)
            await self._send(
                http, kind, "POST", path, key=account.key, idempotency_key=idem, **kwargs
            )
        if sample.status == 402:
            self.broke.append(account.email)
            await asyncio.sleep(5)  # out of credit: a person would not retry at once

    async def _image(self, http: httpx.AsyncClient, account: Account, rng: random.Random) -> None:
        body = {
            "model": IMAGE_MODEL,
            "prompt": f"a lighthouse at dusk, soak {rng.random():.6f}",
            "size": "256x256",
            "response_format": "url",
        }
        await self._generate(http, account, "image", "/v1/openai/images/generations", json=body)

    async def _edit(self, http: httpx.AsyncClient, account: Account, rng: random.Random) -> None:
        data = {
            "model": EDIT_MODEL,
            "prompt": f"make it autumn, soak {rng.random():.6f}",
            "quality": "low",
            "size": "1024x1024",
        }
        files = {"image": ("in.png", EDIT_INPUT, "image/png")}
        await self._generate(
            http, account, "edit", "/v1/openai/images/edits", data=data, files=files
        )

    async def _video(self, http: httpx.AsyncClient, account: Account, rng: random.Random) -> None:
        body = {"model": VIDEO_MODEL, "prompt": f"waves on a beach, soak {rng.random():.6f}"}
        await self._generate(http, account, "video", "/v1/openai/videos/generations", json=body)

    async def _credits(self, http: httpx.AsyncClient, account: Account, rng: random.Random) -> None:
        await self._send(http, "credits", "GET", "/v1/credits", key=account.key)

    async def _keys(self, http: httpx.AsyncClient, account: Account, rng: random.Random) -> None:
        # A management key's round: make a key, list the keys, revoke the new one.
        sample, made = await self._send(
            http,
            "keys",
            "POST",
            "/v1/api-keys",
            key=account.manager,
            json={"name": f"soak-{rng.randrange(10**6)}"},
        )
        await self._send(http, "keys", "GET", "/v1/api-keys", key=account.manager)
        if sample.ok and isinstance(made, dict) and made.get("id"):
            await self._send(
                http, "keys", "DELETE", f"/v1/api-keys/{made['id']}", key=account.manager
            )

    async def _page(self, http: httpx.AsyncClient, account: Account, rng: random.Random) -> None:
        await self._send(http, "page", "GET", rng.choice(PAGES))

    async def _job(self, http: httpx.AsyncClient, account: Account, rng: random.Random) -> None:
        """An asynchronous generation (docs/jobs.md): `Prefer: respond-async` answers 202
        with the job, which is then polled until it ends. A video mostly, an image some."""
        if rng.random() < 0.7:
            path = "/v1/openai/videos/generations"
            body: dict[str, Any] = {"model": VIDEO_MODEL, "prompt": "a slow tide, soak job"}
        else:
            path = "/v1/openai/images/generations"
            body = {"model": IMAGE_MODEL, "prompt": "a harbour, soak job", "size": "256x256"}
        idem = str(uuid.uuid4())
        headers = {"Authorization": f"Bearer {account.key}", "Prefer": "respond-async"}
        sample, made = await self._send(
            http, "job", "POST", path, idempotency_key=idem, json=body, headers=headers
        )
        if sample.status == 402:
            self.broke.append(account.email)
            await asyncio.sleep(5)
        if sample.status != 202 or not isinstance(made, dict) or not made.get("id"):
            if sample.ok:  # a 200 where a 202 was asked for: a finding, not a success
                sample.error = f"{sample.status} not-a-job"
            return
        job_id = str(made["id"])
        began = sample.started
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            poll, job = await self._send(
                http, "job-poll", "GET", f"/v1/jobs/{job_id}", key=account.key
            )
            if not poll.ok or not isinstance(job, dict) or job.get("status") not in TERMINAL:
                continue  # a failed poll (e.g. during a fault) is recorded; the job runs on
            error = job.get("error") or {}
            label = None
            if job["status"] != "succeeded":
                label = f"job {job['status']} {error.get('code') or 'no-code'}"
            result = Sample("job-result", began, time.monotonic(), 200, label, job_id)
            result.idempotency_key = idem
            result.urls = list(_urls(job.get("data"))) if label is None else []
            result.detail = json.dumps(error)[:300] if label else None
            self.samples.append(result)
            return
        self.samples.append(
            Sample("job-result", began, time.monotonic(), 0, "job never ended", job_id)
        )
