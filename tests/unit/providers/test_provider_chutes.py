"""The Chutes adapter: per-chute hosts, the shared image host, raw-bytes answers, errors."""

from __future__ import annotations

import httpx
import pytest

from image_router.providers.chutes import (
    CAPACITY_MESSAGE,
    FREE_CAPACITY_MESSAGE,
    ChutesProvider,
    chute_url,
    error_from_response,
    from_response,
    to_request,
)
from image_router.providers.contract import InputFile, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from tests.fakes.chutes import (
    DEFAULT_API_KEY,
    INVALID_KEY_DETAIL,
    REFUSAL_DETAIL,
    FakeChutes,
    image_bytes,
)
from tests.unit.providers.conftest import ROOT, jobs, vendor_fixtures

TEMPLATE = f"{ROOT}/{{model}}"


job = jobs(model="x", prompt="a paper boat")
fake, provider = vendor_fixtures(
    FakeChutes, lambda http: ChutesProvider(http, credential=DEFAULT_API_KEY, base_url=TEMPLATE)
)


# ------------------------------------------------------------------ where requests go


def test_default_hosts_are_the_reference_ones() -> None:
    template = ChutesProvider.default_base_url

    assert to_request(job(), Target("z-image-turbo"), template).url == (
        "https://chutes-z-image-turbo.chutes.ai/generate"
    )
    assert to_request(job(), Target("hidream"), template).url == (
        "https://chutes-hidream.chutes.ai/generate"
    )
    shared = to_request(job(), Target("qwen-image"), template)
    assert shared.url == "https://image.chutes.ai/generate"
    assert shared.json == {"prompt": "a paper boat", "model": "qwen-image"}


@pytest.mark.parametrize(
    ("template", "shared", "expected"),
    [
        ("http://proxy:9000/{model}", False, "http://proxy:9000/chroma/generate"),
        ("http://proxy:9000/{model}", True, "http://proxy:9000/image/generate"),
        ("http://proxy:9000/chutes-{model}/", True, "http://proxy:9000/image/generate"),
        ("https://{model}.example.org/v1", False, "https://chroma.example.org/v1/generate"),
        ("https://{model}.example.org/v1", True, "https://image.example.org/v1/generate"),
        ("http://one-host:8000", False, "http://one-host:8000/generate"),
    ],
)
def test_chute_url_template(template: str, shared: bool, expected: str) -> None:
    assert chute_url(template, "chroma", shared=shared) == expected


def test_route_option_overrides_the_shared_host_rule() -> None:
    template = ChutesProvider.default_base_url

    opted_in = to_request(job(), Target("chroma", {"shared_host": True}), template)
    opted_out = to_request(job(), Target("qwen-image", {"shared_host": False}), template)

    assert (opted_in.url, opted_in.json["model"]) == ("https://image.chutes.ai/generate", "chroma")
    assert opted_out.url == "https://chutes-qwen-image.chutes.ai/generate"
    assert "model" not in opted_out.json


def test_a_single_host_template_names_the_chute_in_the_body() -> None:
    request = to_request(job(), Target("chroma"), "http://one-host:8000")

    assert request.json == {"prompt": "a paper boat", "model": "chroma"}


def test_a_chute_name_that_is_no_host_label_is_a_catalog_mistake() -> None:
    with pytest.raises(UpstreamMisconfiguredError):
        to_request(job(), Target("evil.com/x"), ChutesProvider.default_base_url)


# ------------------------------------------------------------------ what we send


async def test_per_chute_request_and_raw_image_answer(
    fake: FakeChutes, provider: ChutesProvider
) -> None:
    result = await provider.generate(job(size="1536x1024", quality="high"), Target("chroma"))

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/chroma/generate")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    # As the reference: no size, no quality, no output format.
    assert sent.json == {"prompt": "a paper boat"}
    (artifact,) = result.artifacts
    assert artifact.data == image_bytes()
    assert artifact.content_type == "image/jpeg"
    assert result.raw == {"content_type": "image/jpeg", "bytes": len(image_bytes())}


async def test_qwen_image_goes_to_the_shared_host(
    fake: FakeChutes, provider: ChutesProvider
) -> None:
    result = await provider.generate(job(), Target("qwen-image"))

    assert fake.last.path == "/image/generate"
    assert fake.last.json == {"prompt": "a paper boat", "model": "qwen-image"}
    assert result.artifacts[0].data == image_bytes()


async def test_input_images_are_refused_before_any_call(
    fake: FakeChutes, provider: ChutesProvider
) -> None:
    upload = InputFile(image_bytes(), "image/jpeg", "a.jpg")

    with pytest.raises(UpstreamRejectedError, match="does not support image inputs"):
        await provider.generate(job(images=(upload,)), Target("hidream"))

    assert fake.requests == []


async def test_missing_token_is_misconfiguration(fake: FakeChutes, http: httpx.AsyncClient) -> None:
    provider = ChutesProvider(http, credential="", base_url=TEMPLATE)

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(), Target("chroma"))

    assert fake.requests == []


# ------------------------------------------------------------------ errors


async def test_free_model_at_capacity_is_an_outage_with_the_reference_message(
    fake: FakeChutes, provider: ChutesProvider
) -> None:
    fake.capacity_next()

    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(job(), Target("z-image-turbo"))

    assert caught.value.message == CAPACITY_MESSAGE
    assert caught.value.status == 429
    assert caught.value.retry_elsewhere is True


async def test_infrastructure_at_capacity_is_an_outage(
    fake: FakeChutes, provider: ChutesProvider
) -> None:
    fake.fail_next(429, {"detail": CAPACITY_MESSAGE})

    with pytest.raises(UpstreamUnavailableError):
        await provider.generate(job(), Target("chroma"))


async def test_plain_429_is_our_rate_limit(fake: FakeChutes, provider: ChutesProvider) -> None:
    fake.fail_next(429)

    with pytest.raises(UpstreamRateLimitedError, match="Too many requests"):
        await provider.generate(job(), Target("chroma"))


async def test_unknown_chute_is_our_misconfiguration(
    fake: FakeChutes, provider: ChutesProvider
) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match="No matching chute found!"):
        await provider.generate(job(), Target("no-such-chute"))


async def test_wrong_token_reads_the_detail(fake: FakeChutes, http: httpx.AsyncClient) -> None:
    provider = ChutesProvider(http, credential="cpk_wrong", base_url=TEMPLATE)

    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("chroma"))

    assert caught.value.message == INVALID_KEY_DETAIL


async def test_refusal_is_rejected(fake: FakeChutes, provider: ChutesProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="forbidden-content please"), Target("hidream"))

    assert caught.value.message == REFUSAL_DETAIL


async def test_an_answer_that_is_not_an_image_is_a_protocol_error(
    fake: FakeChutes, provider: ChutesProvider
) -> None:
    fake.garbage_next()

    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.generate(job(), Target("chroma"))

    assert "502 Bad Gateway" in str(caught.value.body)


@pytest.mark.parametrize(
    ("status", "text", "expected", "message"),
    [
        (429, FREE_CAPACITY_MESSAGE, UpstreamUnavailableError, CAPACITY_MESSAGE),
        (
            503,
            '{"detail": "No instances available (yet) for chute_id=\'x\'"}',
            UpstreamUnavailableError,
            "No instances available (yet) for chute_id='x'",
        ),
        (429, '{"detail": "model is under maintenance"}', UpstreamUnavailableError, None),
        (
            402,
            '{"detail": {"message": "Quota exceeded and account balance is $0.0"}}',
            UpstreamRateLimitedError,
            "Quota exceeded and account balance is $0.0",
        ),
        (400, '{"detail": "prompt: Field required"}', UpstreamRejectedError, None),
        (500, "", UpstreamUnavailableError, "Chutes answered HTTP 500"),
        (400, "plain text problem", UpstreamRejectedError, "plain text problem"),
    ],
)
def test_error_classification(
    status: int, text: str, expected: type[UpstreamError], message: str | None
) -> None:
    error = error_from_response(status, text)

    assert type(error) is expected
    if message is not None:
        assert error.message == message


def test_bytes_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(b'{"ok": true}', "application/json")
    with pytest.raises(UpstreamProtocolError):
        from_response(b"\x00\x00\x00\x18ftypmp42", "video/mp4")
