"""The Z.ai adapter: the request it sends for GLM-Image and how it reads answers and errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from image_router.providers.contract import InputFile, Target
from image_router.providers.errors import (
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from image_router.providers.zai import ZaiProvider, error_from_response, from_response, to_request
from tests.fakes.zai import (
    BALANCE_MESSAGE,
    CONCURRENCY_MESSAGE,
    CONTENT_FILTER_MESSAGE,
    DEFAULT_API_KEY,
    FakeZai,
    zai_error,
)
from tests.unit.providers.conftest import ROOT, jobs, vendor_fixtures

USER = "3f1c2b9a-0d5e-4b7a-9c61-2a8e5f4d7b10"


job = jobs(model="zai/glm-image", prompt="a kite", user_ref=USER)
fake, provider = vendor_fixtures(
    FakeZai,
    lambda http: ZaiProvider(http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/api/paas/v4"),
)


async def test_generation_sends_the_reference_body_and_returns_the_url(
    fake: FakeZai, provider: ZaiProvider, http: httpx.AsyncClient
) -> None:
    result = await provider.generate(job(size="1568x1056"), Target("glm-image", {"quality": "hd"}))

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/api/paas/v4/images/generations")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.json == {
        "model": "glm-image",
        "prompt": "a kite",
        "size": "1568x1056",
        "quality": "hd",
        "user_id": USER,
    }
    (artifact,) = result.artifacts
    assert artifact.url is not None
    assert (await http.get(artifact.url)).content.startswith(b"\x89PNG")
    assert isinstance(result.created, int)
    assert result.extra == {"content_filter": [{"role": "assistant", "level": 3}]}
    assert DEFAULT_API_KEY not in str(result.raw)


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"quality": "standard"}, "standard"), ({"quality": "hd"}, "hd"), ({"quality": None}, None)],
)
async def test_quality_mapping_is_sent_as_quality(
    fake: FakeZai, provider: ZaiProvider, options: dict[str, Any], expected: str | None
) -> None:
    await provider.generate(job(), Target("glm-image", options))
    assert fake.last.json.get("quality") == expected


def test_auto_size_becomes_the_reference_default() -> None:
    assert to_request(job(size="auto"), Target("glm-image"))["size"] == "1280x1280"


@pytest.mark.parametrize("user_ref", ["", "abc", "x" * 129])
def test_a_user_ref_z_ai_would_refuse_is_left_out(user_ref: str) -> None:
    assert "user_id" not in to_request(job(user_ref=user_ref), Target("glm-image"))


def test_images_are_refused_before_any_call() -> None:
    image = InputFile(b"\x89PNG", "image/png", "a.png")
    with pytest.raises(UpstreamRejectedError, match="does not support image inputs"):
        to_request(job(images=(image,)), Target("glm-image"))


async def test_content_filter_is_rejected_and_not_retried(provider: ZaiProvider) -> None:
    with pytest.raises(UpstreamRejectedError, match="unsafe or sensitive") as caught:
        await provider.generate(job(prompt="forbidden-content"), Target("glm-image"))
    assert caught.value.code == "1301"
    assert caught.value.retry_elsewhere is False


async def test_exhausted_balance_switches_provider(fake: FakeZai, provider: ZaiProvider) -> None:
    fake.broke = True
    with pytest.raises(UpstreamRateLimitedError, match="Insufficient balance") as caught:
        await provider.generate(job(), Target("glm-image"))
    assert caught.value.retry_elsewhere is True


async def test_unknown_model_is_our_misconfiguration(provider: ZaiProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match="Unknown Model"):
        await provider.generate(job(), Target("glm-image-2"))


async def test_a_size_z_ai_refuses_is_the_users_error(provider: ZaiProvider) -> None:
    with pytest.raises(UpstreamRejectedError, match="size"):
        await provider.generate(job(size="4096x4096"), Target("glm-image"))


async def test_no_credential_fails_without_a_call(fake: FakeZai, http: httpx.AsyncClient) -> None:
    with pytest.raises(UpstreamMisconfiguredError):
        await ZaiProvider(http, base_url=ROOT).generate(job(), Target("glm-image"))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, zai_error("1301", CONTENT_FILTER_MESSAGE), UpstreamRejectedError),
        (400, zai_error("1261", "Prompt is too long"), UpstreamRejectedError),
        (401, zai_error("401", "token expired or incorrect"), UpstreamMisconfiguredError),
        (401, zai_error("1002", "Invalid Authentication Token"), UpstreamMisconfiguredError),
        (429, zai_error("1113", BALANCE_MESSAGE), UpstreamRateLimitedError),
        # §7.2 lists this message as retryable: another route is tried.
        (429, zai_error("1302", CONCURRENCY_MESSAGE), UpstreamRateLimitedError),
        (500, zai_error("500", "Internal Error"), UpstreamUnavailableError),
        (503, zai_error("1234", "Network error"), UpstreamUnavailableError),
        (400, zai_error("9999", "Something new"), UpstreamRejectedError),
        (502, "<html>bad gateway</html>", UpstreamUnavailableError),
        (500, None, UpstreamUnavailableError),
    ],
)
def test_error_from_response(status: int, body: Any, expected: type[Exception]) -> None:
    error = error_from_response(status, body)
    assert type(error) is expected
    assert error.status == status
    assert error.message


@pytest.mark.parametrize(
    "body",
    [{"created": 1, "data": []}, {"data": [{"url": ""}]}, {"data": [{"b64": "x"}]}, ["x"]],
)
def test_an_answer_without_images_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(body)
