"""NanoGPT: the OpenAI-compatible `POST /v1/images/generations`, plus its Midjourney queue.

Most models answer at once (`data[].b64_json` or `url`, and the `cost` NanoGPT charged us).
Midjourney answers `{"task_id", "status": "submitted", "cost"}`; the result is then polled
at `POST /api/check-midjourney-status` (key in `x-api-key`) until SUCCESS or FAILED. See
spec §9.12. Unlike the reference, a failure is never a billed "soft failure" (§2.9): it is
raised as the `UpstreamError` that fits its reason.

Midjourney tasks are resumable (`providers.resume`): the reference is the task id and the
cost the submission reported (the status answers do not repeat it).
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from functools import partial
from typing import Any

import pybase64

from image_router.providers.contract import Artifact, Job, Provider, Result, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
    error_for_status,
    redact,
    translate_errors,
)
from image_router.providers.polling import poll_once
from image_router.providers.resume import make_ref, ref_text, submit_or_resume
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    OUR_KEY_PHRASES,
    RETRYABLE_PHRASES,
    PhraseRules,
    expect_object,
    first_match,
    scrub,
    usd_amount,
)

PROVIDER_ID = "nanogpt"
GENERATIONS_PATH = "/v1/images/generations"
MIDJOURNEY_STATUS_PATH = "/api/check-midjourney-status"

_REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
# Substrings (lower case) of refusals of the user's prompt or image, from NanoGPT or the
# model vendor behind it (OpenAI, Midjourney, ByteDance).
_REFUSAL_HINTS = (
    "safety system",
    "content policy",
    "content moderation",
    "moderation filter",
    "nsfw",
    "banned prompt",
    "inappropriate",
    "sensitive content",
)
# Spec §7.2 by meaning, first match wins: a refusal of the user's input; our key or this
# adapter's model name is wrong; our account is out of money or requests (the switch list
# also has a bare "429"); the vendor, not the user, failed (the "retry" strings and the
# switch list's overload one), so those are never a refusal even when sent with a 4xx.
_MESSAGE_RULES: PhraseRules = (
    (UpstreamRejectedError, _REFUSAL_HINTS),
    (UpstreamMisconfiguredError, (*OUR_KEY_PHRASES, "model not found", "invalid model")),
    (UpstreamRateLimitedError, (*ACCOUNT_LIMIT_PHRASES, "429")),
    (UpstreamUnavailableError, (*RETRYABLE_PHRASES, "the model is overloaded", "timed out")),
)


# ---------------------------------------------------------------------------- requests


def to_request(job: Job, target: Target) -> dict[str, Any]:
    """The JSON body of `POST /v1/images/generations`.

    No size: the reference never sends one and NanoGPT picks each model's default. Quality
    is sent only when the route maps it (`target.options["quality"]`, None = omit).
    """
    body: dict[str, Any] = {"prompt": job.prompt, "model": target.upstream, "n": 1}
    quality = target.options.get("quality")
    if quality is not None:
        body["quality"] = quality
    if job.user_ref:
        body["user"] = job.user_ref
    if len(job.images) == 1:
        body["imageDataUrl"] = job.images[0].data_uri()
    elif job.images:
        body["imageDataUrls"] = [image.data_uri() for image in job.images]
    if job.mask is not None:
        if not job.images:
            raise UpstreamRejectedError(
                "A mask needs an image to edit", provider=PROVIDER_ID, code="mask_without_image"
            )
        body["maskDataUrl"] = job.mask.data_uri()
    return body


# ---------------------------------------------------------------------------- answers


def submitted_task(body: Any) -> str | None:
    """The Midjourney task id when `body` is a queued submission, else None."""
    if not isinstance(body, Mapping) or body.get("status") != "submitted":
        return None
    task_id = body.get("task_id")
    if isinstance(task_id, str | int) and not isinstance(task_id, bool) and str(task_id):
        return str(task_id)
    raise UpstreamProtocolError(
        "NanoGPT queued a task without a task_id", provider=PROVIDER_ID, body=body
    )


def task_ref(answer: Any) -> dict[str, Any] | None:
    """The reference of a queued Midjourney task (None: the answer holds the images)."""
    task_id = submitted_task(answer)
    if task_id is None:
        return None
    cost = answer.get("cost")
    kept = cost if isinstance(cost, int | float | str) and not isinstance(cost, bool) else None
    return make_ref(PROVIDER_ID, task_id=task_id, cost=kept)


def submission_from_ref(ref: Mapping[str, Any]) -> dict[str, Any]:
    """The queued submission a `task_ref` stands for, as `NanoGPTProvider` reads it."""
    answer = {"status": "submitted", "task_id": ref_text(ref, "task_id", PROVIDER_ID)}
    if ref.get("cost") is not None:
        answer["cost"] = ref["cost"]
    return answer


def reported_cost(body: Any) -> Decimal | None:
    """NanoGPT's `cost` (USD) as an exact Decimal; None when absent or not a number."""
    return usd_amount(body.get("cost") if isinstance(body, Mapping) else None)


def from_response(body: Any) -> Result:
    """Map a finished (synchronous) generation body to a `Result`."""
    body = expect_object(body, vendor="NanoGPT", provider=PROVIDER_ID)
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise UpstreamProtocolError(
            "NanoGPT answered without any image", provider=PROVIDER_ID, body=body
        )
    created = body.get("created")
    return Result(
        artifacts=tuple(_artifact(item, body) for item in data),
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
        reported_cost=reported_cost(body),
        raw=redact(body),
    )


def _artifact(item: Any, body: Mapping[str, Any]) -> Artifact:
    if isinstance(item, Mapping):
        encoded = item.get("b64_json")
        if isinstance(encoded, str) and encoded:
            try:
                return Artifact(data=pybase64.b64decode(encoded, validate=True))
            except binascii.Error as exc:
                raise UpstreamProtocolError(
                    "NanoGPT sent an image that is not valid base64",
                    provider=PROVIDER_ID,
                    body=body,
                ) from exc
        url = item.get("url")
        if isinstance(url, str) and url:
            return Artifact(url=url)
    raise UpstreamProtocolError(
        "NanoGPT image entry has neither b64_json nor url", provider=PROVIDER_ID, body=body
    )


def from_status(body: Any, cost: Decimal | None) -> Result | None:
    """Read one Midjourney status answer: a `Result` when done, None while it runs.

    `cost` is what the submission reported; the status answers do not repeat it.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        raise UpstreamProtocolError(
            "NanoGPT sent a Midjourney status without a status", provider=PROVIDER_ID, body=body
        )
    status = body["status"]
    if status == "SUCCESS":
        url = body.get("imageUrl")
        if not isinstance(url, str) or not url:
            raise UpstreamProtocolError(
                "NanoGPT reported Midjourney success without an imageUrl",
                provider=PROVIDER_ID,
                body=body,
            )
        return Result(
            artifacts=(Artifact(url=url),),
            reported_cost=cost if cost is not None else reported_cost(body),
            raw=redact(body),
        )
    if status == "FAILED":
        reason = body.get("failReason")
        raise task_failure(reason if isinstance(reason, str) and reason else None, body)
    # PENDING, RUNNING, IN_PROGRESS, submitted, NOT_START, unknown: still queued.
    return None


def task_failure(reason: str | None, body: Any) -> UpstreamError:
    """A FAILED Midjourney task: the user's content → rejected, anything else → unavailable."""
    message = reason or "Midjourney generation failed"
    args: dict[str, Any] = {"provider": PROVIDER_ID, "body": body, "code": "generation_failed"}
    cls = first_match(message, _MESSAGE_RULES)
    if cls is None:
        # An unexplained failure is the vendor's: another route may well succeed.
        cls = UpstreamUnavailableError
    return cls(message, **args)


# ---------------------------------------------------------------------------- errors


def error_from_response(status: int, body: Any) -> UpstreamError:
    """Classify a NanoGPT error answer.

    Bodies are OpenAI-shaped (`{"error": {message, type, code, param}}`) or the legacy
    `{"error": "<message>", "status": n}`; the message is matched against spec §7.2.
    """
    message, code, kind, param = _error_fields(body)
    text = message or f"NanoGPT answered HTTP {status}"
    args: dict[str, Any] = {"provider": PROVIDER_ID, "status": status, "body": body, "code": code}
    if code in _REFUSAL_CODES or kind == "image_generation_user_error":
        return UpstreamRejectedError(text, **args)
    if status in (401, 403) or code == "invalid_api_key":
        return UpstreamMisconfiguredError(text, **args)
    if status == 402:
        return UpstreamRateLimitedError(text, **args)
    if code == "model_not_found" or (status in (400, 404) and param == "model"):
        return UpstreamMisconfiguredError(text, **args)
    cls = first_match(" ".join(filter(None, (message, code, kind))), _MESSAGE_RULES)
    if cls is not None:
        return cls(text, **args)
    return error_for_status(PROVIDER_ID, status, text, body, code)


def _error_fields(body: Any) -> tuple[str, str | None, str | None, str | None]:
    if not isinstance(body, Mapping):
        return (body if isinstance(body, str) else ""), None, None, None
    error = body.get("error")
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, Mapping):
        message = body.get("message")
        return (message if isinstance(message, str) else ""), None, None, None
    fields = [error.get(key) for key in ("message", "code", "type", "param")]
    message, code, kind, param = (value if isinstance(value, str) else None for value in fields)
    return message or "", code, kind, param


# ---------------------------------------------------------------------------- provider


class NanoGPTProvider(Provider):
    id = PROVIDER_ID
    key_env = "NANO_GPT_API_KEY"
    base_url_env = ("NANO_GPT_BASE_URL", "NANOGPT_BASE_URL")
    default_base_url = "https://nano-gpt.com"
    api_prefix = "/v1"
    modalities = frozenset({"image"})
    image_inputs = frozenset({"nanogpt_data_urls", "single_data_uri"})
    #: Midjourney tasks; the other models answer at once, with nothing to resume.
    resumable = True

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("NanoGPT API key")
        answer: Any = await submit_or_resume(
            job,
            partial(self._submit, job, target, key),
            vendor="NanoGPT",
            to_ref=task_ref,
            from_ref=submission_from_ref,
        )
        async with translate_errors(self.id):
            task_id = submitted_task(answer)
            if task_id is None:
                return _clean(from_response(answer), key)
        result = await self._await_task(task_id, reported_cost(answer), key)
        # The submission holds the cost and task id; keep both answers for the usage log.
        return _clean(
            replace(result, raw={"submission": redact(answer), "status": result.raw}), key
        )

    async def _submit(self, job: Job, target: Target, key: str) -> Any:
        return await self.post_json(
            self.base_url + GENERATIONS_PATH,
            to_request(job, target),
            key=key,
            errors=error_from_response,
        )

    async def _await_task(self, task_id: str, cost: Decimal | None, key: str) -> Result:
        while True:
            # Also yields to the loop when poll_interval is 0, so polling never spins.
            await asyncio.sleep(self.poll_interval)
            # NanoGPT charged us at submission: a failed check must not throw the job away.
            status = await poll_once(
                partial(self._check, task_id, key), provider=self.id, interval=self.poll_interval
            )
            async with translate_errors(self.id):
                result = from_status(status, cost)
            if result is not None:
                return result

    async def _check(self, task_id: str, key: str) -> Any:
        return await self.post_json(
            self.base_url + MIDJOURNEY_STATUS_PATH,
            {"task_id": task_id},
            key=key,
            errors=error_from_response,
            auth=None,
            headers={"x-api-key": key},
        )


def _clean(result: Result, key: str) -> Result:
    return replace(result, raw=scrub(result.raw, key))
