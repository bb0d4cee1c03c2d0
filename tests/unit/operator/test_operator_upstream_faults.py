"""Vendor answers that are the operator's to fix: a base URL given with or without the
vendor's API prefix works, a 404/401 to our own call is misconfiguration (not the user's
fault), a refused connection is "unreachable" at once (not a timeout), and an ERROR line
names vendor and URL without the key."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from image_router.providers import PROVIDERS
from image_router.providers.contract import Job, Target, normalise_base_url
from image_router.providers.errors import (
    UpstreamMisconfiguredError,
    UpstreamRejectedError,
    UpstreamUnreachableError,
    error_for_status,
    log_operator_fault,
)
from image_router.providers.openai import OpenAIProvider
from image_router.providers.openrouter import error_from_response as openrouter_error
from image_router.providers.replicate import ReplicateProvider
from tests.fakes.contract import ContractCase, discover_cases

FAKE_ROOT = "http://fake.test"


@pytest.mark.parametrize(
    ("given", "default", "prefix", "expected"),
    [
        # The adapter expects the prefix in its base URL (Replicate): added when missing.
        (
            "https://api.replicate.com",
            "https://api.replicate.com/v1",
            "/v1",
            "https://api.replicate.com/v1",
        ),
        (
            "https://api.replicate.com/v1/",
            "https://api.replicate.com/v1",
            "/v1",
            "https://api.replicate.com/v1",
        ),
        # The adapter adds the prefix itself (OpenRouter): removed when given.
        (
            "https://openrouter.ai/api/v1",
            "https://openrouter.ai",
            "/api/v1",
            "https://openrouter.ai",
        ),
        ("https://openrouter.ai/", "https://openrouter.ai", "/api/v1", "https://openrouter.ai"),
        (
            "http://proxy.local/or/api/v1",
            "https://openrouter.ai",
            "/api/v1",
            "http://proxy.local/or",
        ),
        # No prefix known: left as given.
        ("https://queue.fal.run/", "https://queue.fal.run", "", "https://queue.fal.run"),
    ],
)
def test_normalise_base_url(given: str, default: str, prefix: str, expected: str) -> None:
    assert normalise_base_url(given, default, prefix) == expected


def test_every_default_base_url_is_kept_as_is() -> None:
    for cls in PROVIDERS.values():
        default = cls.default_base_url
        assert normalise_base_url(default, default, cls.api_prefix) == default.rstrip("/"), cls.id


def _other_form(case: ContractCase) -> str:
    """The base path the case does not use: with the prefix if it has none, and back."""
    prefix = case.provider.api_prefix
    if not prefix:
        pytest.skip(f"{case.id} has no API path prefix")
    if case.base_path.endswith(prefix):
        return case.base_path[: -len(prefix)]
    return case.base_path + prefix


@pytest.mark.parametrize("case", discover_cases(), ids=lambda c: c.id)
async def test_both_forms_of_the_base_url_reach_the_vendor(case: ContractCase) -> None:
    fake = case.make_fake()
    async with fake.client(FAKE_ROOT) as http:
        provider = case.provider(
            http,
            credential=case.credential,
            base_url=FAKE_ROOT + _other_form(case),
            poll_interval=0.0,
            extra={k: v.replace("{root}", FAKE_ROOT) for k, v in case.extra.items()},
        )
        result = await provider.generate(case.job, case.target)
    assert result.artifacts


@pytest.mark.parametrize("status", [401, 403, 404, 405])
def test_our_own_call_refused_is_misconfiguration(status: int) -> None:
    error = error_for_status("acme", status, f"acme answered HTTP {status}")
    assert isinstance(error, UpstreamMisconfiguredError)
    assert error.retry_elsewhere


def test_the_users_input_refused_is_still_a_rejection() -> None:
    assert isinstance(error_for_status("acme", 400, "bad image"), UpstreamRejectedError)
    assert isinstance(error_for_status("acme", 422, "bad prompt"), UpstreamRejectedError)


def test_openrouter_404_without_a_body_is_our_base_url() -> None:
    # The probe's case: OPENROUTER_BASE_URL with /api/v1 twice answered a bare 404.
    error = openrouter_error(404, "Not Found")
    assert isinstance(error, UpstreamMisconfiguredError)
    assert error.message == "OpenRouter answered HTTP 404"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


JOB = Job(modality="image", model="openai/gpt-image-1", prompt="a lighthouse")


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_refused_connection_is_unreachable_at_once(transport: str) -> None:
    # The gateway's own transport (aiohttp) reports a refusal as httpx.ConnectTimeout.
    chosen = AiohttpTransport() if transport == "aiohttp" else httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=chosen, timeout=10) as http:
        provider = OpenAIProvider(
            http, credential="sk-x", base_url=f"http://127.0.0.1:{_closed_port()}"
        )
        started = time.monotonic()
        with pytest.raises(UpstreamUnreachableError) as caught:
            await provider.generate(JOB, Target(upstream="gpt-image-1"))
    assert time.monotonic() - started < 2
    assert caught.value.kind == "unreachable"
    assert "connection refused" in caught.value.message


def test_the_error_log_names_vendor_and_url_never_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    http = httpx.AsyncClient()
    provider = ReplicateProvider(
        http, credential="r8_secret", base_url="https://user:pw@proxy.local/replicate"
    )
    error = UpstreamMisconfiguredError("Invalid token r8_secret", provider="replicate", status=401)
    with caplog.at_level(logging.ERROR):
        log_operator_fault(provider.id, provider.public_base_url(), error)
        log_operator_fault(
            provider.id,
            provider.public_base_url(),
            UpstreamRejectedError("no", provider="replicate", status=400),
        )
    [record] = caplog.records
    line = record.getMessage()
    assert record.levelno == logging.ERROR
    assert "replicate" in line and "HTTP 401" in line
    assert "https://proxy.local/replicate/v1" in line
    assert "r8_secret" not in line and "pw" not in line
