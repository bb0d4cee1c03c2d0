"""The Vertex AI adapter: auth, the exact requests it sends, answers, errors, Veo jobs."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from image_router.providers.contract import Target
from image_router.providers.errors import (
    UpstreamCancelledError,
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.polling import DEFAULT_RETRY
from image_router.providers.vertex import (
    VertexProvider,
    from_gemini,
    from_imagen,
    nearest_ratio,
    to_request,
)
from image_router.providers.vertex_auth import (
    INVALID_KEY_MESSAGE,
    AccessTokens,
    error_from_response,
    parse_service_account,
    sign_assertion,
)
from image_router.providers.vertex_veo import from_operation
from tests.fakes.vertex import (
    CLIENT_EMAIL,
    DEFAULT_CREDENTIAL,
    FAILED_JOB_TRIGGER,
    FILTERED_TRIGGER,
    IMAGEN_FILTERED_MESSAGE,
    LOCATION,
    PRIVATE_KEY_ID,
    PROJECT,
    PUBLIC_KEY,
    REFUSAL_TRIGGER,
    SENSITIVE_WORDS_MESSAGE,
    TEXT_TRIGGER,
    VEO_FILTERED_MESSAGE,
    FakeVertex,
    encode_key,
    foreign_credential,
    png_bytes,
    service_account,
    video_bytes,
)
from tests.unit.providers.conftest import ROOT, jobs, upload

MODEL_PATH = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models"
IMAGEN = Target("imagen-4.0-generate-001")
GEMINI = Target("gemini-2.5-flash-image")
VEO = Target("veo-3.1-fast-generate-preview")

Factory = Callable[..., VertexProvider]


job = jobs(model="google/imagen-4", prompt="a fox")
video_job = jobs(
    modality="video", model="google/veo-3.1-fast", seconds=4, prompt="a fox running through snow"
)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition` holds (bounded, so a bug cannot hang the suite)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never came true")


@pytest.fixture
def fake() -> FakeVertex:
    return FakeVertex()


@pytest.fixture
def make(http: httpx.AsyncClient) -> Factory:
    def build(credential: str | None = DEFAULT_CREDENTIAL, **extra: str) -> VertexProvider:
        settings = {"token_url": f"{ROOT}/token", "project_id": PROJECT, "location": LOCATION}
        settings.update(extra)
        return VertexProvider(
            http,
            credential=credential,
            base_url=ROOT,
            poll_interval=0.0,
            extra={k: v for k, v in settings.items() if v},
        )

    return build


@pytest.fixture
def provider(make: Factory) -> VertexProvider:
    return make()


# ------------------------------------------------------------------ service-account auth


async def test_signs_a_jwt_assertion_and_sends_the_access_token(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    await provider.generate(job(), IMAGEN)

    token_call, api_call = fake.requests
    assert token_call.path == "/token"
    assert token_call.content_type == "application/x-www-form-urlencoded"
    (assertion,) = fake.assertions
    claims = assertion["claims"]
    assert assertion["header"]["alg"] == "RS256"
    assert assertion["header"]["kid"] == PRIVATE_KEY_ID
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert claims["aud"] == f"{ROOT}/token"
    assert claims["exp"] - claims["iat"] == 3600
    issued = next(iter(fake.tokens))
    assert api_call.headers["authorization"] == f"Bearer {issued}"


async def test_access_token_is_reused_and_fetched_once_under_concurrency(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    fake.delay = 0.01  # every exchange suspends, so the five calls really overlap
    await asyncio.gather(*(provider.generate(job(), IMAGEN) for _ in range(5)))
    await provider.generate(job(), IMAGEN)

    assert len(fake.assertions) == 1
    assert len(fake.api_requests("predict")) == 6


async def test_refused_token_is_refreshed_once_and_the_call_retried(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    await provider.generate(job(), IMAGEN)
    fake.revoke_tokens()

    result = await provider.generate(job(), IMAGEN)

    assert result.artifacts
    assert len(fake.assertions) == 2
    assert [r.path.rsplit(":", 1)[-1] for r in fake.api_requests()] == ["predict"] * 3


async def test_token_is_refreshed_shortly_before_it_expires(fake: FakeVertex) -> None:
    now = [1_000_000.0]
    async with fake.client(ROOT) as client:
        account = parse_service_account(DEFAULT_CREDENTIAL, provider="vertex")
        tokens = AccessTokens(
            client, account, f"{ROOT}/token", provider="vertex", clock=lambda: now[0]
        )
        first = await tokens.get()
        now[0] += 3599 - 301  # more than the 5-minute margin left
        assert await tokens.get() == first
        now[0] += 2
        second = await tokens.get()

    assert second != first
    assert len(fake.assertions) == 2


async def test_token_url_defaults_to_the_keys_token_uri(fake: FakeVertex, make: Factory) -> None:
    credential = encode_key(service_account(token_uri=f"{ROOT}/token"))
    provider = make(credential=credential, token_url="")

    await provider.generate(job(), IMAGEN)

    assert fake.assertions[0]["claims"]["aud"] == f"{ROOT}/token"


@pytest.mark.parametrize(
    "credential",
    ["sk-definitely-not-the-right-key", base64.b64encode(b"{not json").decode(), "%%%"],
)
async def test_key_that_is_not_base64_json_is_misconfiguration(
    fake: FakeVertex, make: Factory, credential: str
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await make(credential=credential).generate(job(), IMAGEN)

    assert caught.value.message == INVALID_KEY_MESSAGE
    assert not fake.requests


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        (service_account(private_key=None), "no client_email or private_key"),
        (service_account(client_email=""), "no client_email or private_key"),
        (service_account(private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n"), "RSA PEM"),
        (["a", "list"], "Must be base64 encoded JSON"),
    ],
)
async def test_key_without_a_usable_signer_is_misconfiguration(
    make: Factory, info: Any, fragment: str
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await make(credential=encode_key(info)).generate(job(), IMAGEN)

    assert fragment in caught.value.message
    assert "BEGIN PRIVATE KEY" not in str(caught.value.record())


async def test_key_google_does_not_know_is_misconfiguration(
    fake: FakeVertex, make: Factory
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await make(credential=foreign_credential()).generate(job(), IMAGEN)

    assert caught.value.message.endswith("invalid_grant: Invalid JWT Signature.")
    assert caught.value.retry_elsewhere is True
    assert not fake.api_requests()


@pytest.mark.parametrize(
    ("status", "expected"),
    [(503, UpstreamUnavailableError), (429, UpstreamRateLimitedError)],
)
async def test_token_endpoint_outage_is_not_misconfiguration(
    fake: FakeVertex, provider: VertexProvider, status: int, expected: type[UpstreamError]
) -> None:
    fake.fail_token_next(status)

    with pytest.raises(expected):
        await provider.generate(job(), IMAGEN)


async def test_missing_key_or_project_is_misconfiguration(make: Factory) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match="GOOGLE_SERVICE_ACCOUNT_KEY"):
        await make(credential=None).generate(job(), IMAGEN)
    with pytest.raises(UpstreamMisconfiguredError, match="GOOGLE_CLOUD_PROJECT_ID"):
        await make(project_id="").generate(job(), IMAGEN)


async def test_wrong_project_is_misconfiguration(make: Factory) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match="Permission 'aiplatform"):
        await make(project_id="someone-elses").generate(job(), IMAGEN)


# ------------------------------------------------------------------ hosts


def test_host_follows_location_and_override(http: httpx.AsyncClient) -> None:
    def url(base_url: str | None, **extra: str) -> str:
        provider = VertexProvider(http, base_url=base_url, extra={"project_id": "p", **extra})
        return provider._model_url("m", "predict")

    assert url(None) == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1"
        "/publishers/google/models/m:predict"
    )
    assert url(None, location="europe-west4").startswith(
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/"
    )
    assert url(None, location="global").startswith(
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/"
    )
    assert url("https://proxy.example/{location}/").startswith(
        "https://proxy.example/us-central1/v1/projects/p/"
    )


# ------------------------------------------------------------------ Imagen


async def test_imagen_text_to_image_request(fake: FakeVertex, provider: VertexProvider) -> None:
    result = await provider.generate(job(), IMAGEN)

    call = fake.last
    assert call.path == f"{MODEL_PATH}/imagen-4.0-generate-001:predict"
    assert call.json == {
        "instances": [{"prompt": "a fox"}],
        "parameters": {
            "sampleCount": 1,
            "safetySetting": "block_only_high",
            "includeRaiReason": True,
        },
    }
    (artifact,) = result.artifacts
    assert artifact.data == png_bytes()
    assert artifact.content_type == "image/png"
    assert "[removed - base64 data]" in json.dumps(result.raw)


@pytest.mark.parametrize(
    ("size", "output_format", "expected"),
    [
        ("1408x768", None, {"aspectRatio": "16:9"}),
        ("896x1280", "jpeg", {"aspectRatio": "3:4", "outputOptions": {"mimeType": "image/jpeg"}}),
        (
            "2816x1536",
            "png",
            {"aspectRatio": "16:9", "sampleImageSize": "2K"}
            | {"outputOptions": {"mimeType": "image/png"}},
        ),
        ("2048x2048", "webp", {"aspectRatio": "1:1", "sampleImageSize": "2K"}),
    ],
)
async def test_imagen_size_and_format_mapping(
    fake: FakeVertex,
    provider: VertexProvider,
    size: str,
    output_format: str | None,
    expected: dict[str, Any],
) -> None:
    result = await provider.generate(job(size=size, output_format=output_format), IMAGEN)

    parameters = fake.last.json["parameters"]
    assert {k: v for k, v in parameters.items() if k in expected} == expected
    assert set(parameters) - set(expected) == {"sampleCount", "safetySetting", "includeRaiReason"}
    assert result.artifacts[0].content_type == expected.get("outputOptions", {}).get(
        "mimeType", "image/png"
    )


async def test_imagen_prompt_refusal_is_rejected(provider: VertexProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt=f"a {REFUSAL_TRIGGER}"), IMAGEN)

    assert caught.value.message == SENSITIVE_WORDS_MESSAGE
    assert caught.value.status == 400


async def test_imagen_filtered_output_is_rejected(provider: VertexProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt=f"a {FILTERED_TRIGGER}"), IMAGEN)

    assert caught.value.message == IMAGEN_FILTERED_MESSAGE


async def test_imagen_refuses_images_and_masks_before_calling(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    image = upload("png", (1, 2, 3))
    with pytest.raises(UpstreamRejectedError, match="does not support image inputs"):
        await provider.generate(job(images=(image,)), IMAGEN)
    with pytest.raises(UpstreamRejectedError, match="Mask editing is not supported"):
        await provider.generate(job(images=(image,), mask=image), GEMINI)
    assert not fake.requests


async def test_unknown_model_is_misconfiguration(provider: VertexProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match=r"Publisher Model .* not found"):
        await provider.generate(job(), Target("imagen-9.9-imaginary"))


# ------------------------------------------------------------------ Gemini


async def test_gemini_with_several_images_request(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    first, second = upload("png", (255, 0, 0)), upload("jpeg", (0, 0, 255))

    result = await provider.generate(
        job(model="google/gemini-2.5-flash", size="1344x768", images=(first, second)), GEMINI
    )

    call = fake.last
    assert call.path == f"{MODEL_PATH}/gemini-2.5-flash-image:generateContent"
    parts = call.json["contents"][0]["parts"]
    assert call.json["contents"][0]["role"] == "user"
    assert parts == [
        {"inlineData": {"mimeType": "image/png", "data": first.b64()}},
        {"inlineData": {"mimeType": "image/jpeg", "data": second.b64()}},
        {"text": "a fox"},
    ]
    assert call.json["generationConfig"] == {
        "responseModalities": ["IMAGE"],
        "imageConfig": {"aspectRatio": "16:9"},
    }
    assert call.json["safetySettings"][-1] == {
        "category": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "threshold": "OFF",
    }
    assert result.artifacts[0].data == png_bytes()
    assert result.artifacts[0].content_type == "image/png"


async def test_gemini_auto_size_sends_no_image_config(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    await provider.generate(job(), GEMINI)

    assert fake.last.json["generationConfig"] == {"responseModalities": ["IMAGE"]}
    assert fake.last.json["contents"][0]["parts"] == [{"text": "a fox"}]


@pytest.mark.parametrize(
    ("size", "ratio", "tier"),
    [("1024x1024", "1:1", "1K"), ("2528x1696", "3:2", "2K"), ("3072x5504", "9:16", "4K")],
)
async def test_gemini_3_gets_an_image_size_tier(
    fake: FakeVertex, provider: VertexProvider, size: str, ratio: str, tier: str
) -> None:
    await provider.generate(job(size=size), Target("gemini-3-pro-image-preview"))

    assert fake.last.json["generationConfig"]["imageConfig"] == {
        "aspectRatio": ratio,
        "imageSize": tier,
    }


@pytest.mark.parametrize(
    ("trigger", "expected", "fragment"),
    [
        (REFUSAL_TRIGGER, UpstreamRejectedError, "Gemini refused the prompt"),
        (FILTERED_TRIGGER, UpstreamRejectedError, "(IMAGE_SAFETY)"),
        (TEXT_TRIGGER, UpstreamUnavailableError, "No image generated by Gemini. Text response"),
    ],
)
async def test_gemini_without_an_image_raises(
    provider: VertexProvider, trigger: str, expected: type[UpstreamError], fragment: str
) -> None:
    with pytest.raises(expected) as caught:
        await provider.generate(job(prompt=f"a {trigger}"), GEMINI)

    assert fragment in caught.value.message
    assert type(caught.value) is expected


# ------------------------------------------------------------------ Veo


async def test_veo_text_to_video_life_cycle(fake: FakeVertex, provider: VertexProvider) -> None:
    result = await provider.generate(video_job(size="720x1280", seconds=6), VEO)

    submit = fake.api_requests("predictLongRunning")[0]
    assert submit.json == {
        "instances": [{"prompt": "a fox running through snow"}],
        "parameters": {
            "aspectRatio": "9:16",
            "personGeneration": "allow_all",
            "sampleCount": 1,
            "resolution": "720p",
            "durationSeconds": 6,
            "generateAudio": True,
        },
    }
    polls = fake.api_requests("fetchPredictOperation")
    assert len(polls) == fake.video_polls + 1
    (name,) = fake.operations
    assert {p.path for p in polls} == {f"{MODEL_PATH}/{VEO.upstream}:fetchPredictOperation"}
    assert all(p.json == {"operationName": name} for p in polls)
    (artifact,) = result.artifacts
    assert artifact.data == video_bytes()
    assert artifact.content_type == "video/mp4"
    assert provider._in_flight.urls == {}


async def test_veo_image_to_video_sends_the_first_image(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    first, second = upload("jpeg", (9, 9, 9)), upload("png", (1, 1, 1))

    await provider.generate(video_job(size="1920x1080", images=(first, second)), VEO)

    body = fake.api_requests("predictLongRunning")[0].json
    assert body["instances"][0]["image"] == {
        "bytesBase64Encoded": first.b64(),
        "mimeType": "image/jpeg",
    }
    assert body["parameters"]["personGeneration"] == "allow_adult"
    assert body["parameters"]["resolution"] == "1080p"
    assert body["parameters"]["aspectRatio"] == "16:9"


async def test_veo_2_gets_no_audio_flag(fake: FakeVertex, provider: VertexProvider) -> None:
    await provider.generate(video_job(seconds=5), Target("veo-2.0-generate-001"))

    parameters = fake.api_requests("predictLongRunning")[0].json["parameters"]
    assert "generateAudio" not in parameters
    assert parameters["aspectRatio"] == "16:9"
    assert parameters["resolution"] == "720p"


async def test_veo_size_that_is_not_16_9_is_rejected(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    with pytest.raises(UpstreamRejectedError, match="Unsupported size '1024x1024'"):
        await provider.generate(video_job(size="1024x1024"), VEO)
    assert not fake.requests


async def test_veo_moderation_is_rejected(provider: VertexProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(video_job(prompt=f"a {REFUSAL_TRIGGER}"), VEO)

    assert caught.value.message == (
        f"Generated video rejected by Vertex content moderation: {VEO_FILTERED_MESSAGE}"
    )


async def test_veo_failed_operation_is_unavailable(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(video_job(prompt=f"a {FAILED_JOB_TRIGGER}"), VEO)

    assert len(fake.api_requests("fetchPredictOperation")) == fake.video_polls + 1

    assert caught.value.message == (
        "Vertex AI video generation failed: Internal error encountered."
    )
    assert caught.value.code == "INTERNAL"


async def test_veo_survives_a_few_failed_polls(fake: FakeVertex, provider: VertexProvider) -> None:
    fake.hang_next(0.0)  # consumed by the submit, which then succeeds
    fake.fail_next(503, times=3)

    result = await provider.generate(video_job(), VEO)

    assert result.artifacts[0].data == video_bytes()
    assert len(fake.api_requests("fetchPredictOperation")) == 3 + fake.video_polls + 1


async def test_veo_gives_up_after_repeated_poll_failures(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    fake.fail_polls(500, times=DEFAULT_RETRY.max_failures)

    with pytest.raises(UpstreamUnavailableError, match="Internal error encountered") as caught:
        await provider.generate(video_job(), VEO)
    polls = fake.api_requests("fetchPredictOperation")
    assert len(polls) == DEFAULT_RETRY.max_failures
    # Given up, the operation is cancelled: it would otherwise render (and bill) for nobody.
    (operation,) = fake.operations.values()
    assert operation.cancelled
    assert caught.value.vendor_job_cancelled


async def test_abandoned_veo_job_is_cancelled_at_the_vendor(
    fake: FakeVertex, make: Factory
) -> None:
    fake.video_polls = 10_000
    provider = make()
    task = asyncio.create_task(provider.generate(video_job(job_id="job-1"), VEO))
    await until(lambda: len(fake.api_requests("fetchPredictOperation")) >= 2)
    operation_name = next(iter(fake.operations))
    assert provider._in_flight.urls == {"job-1": f"{ROOT}/v1/{operation_name}:cancel"}

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (cancel,) = fake.api_requests("cancel")
    (operation,) = fake.operations.values()
    assert cancel.path == f"/v1/{operation.name}:cancel"
    assert operation.cancelled
    assert provider._in_flight.urls == {}


async def test_cancel_stops_the_running_operation_of_a_job(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    running = video_job(job_id="job-2")
    fake.video_polls = 10_000
    task = asyncio.create_task(provider.generate(running, VEO))
    await until(lambda: bool(fake.api_requests("fetchPredictOperation")))

    await provider.cancel(running, VEO)
    with pytest.raises(UpstreamCancelledError) as caught:
        await task

    assert caught.value.retry_elsewhere is False
    (operation,) = fake.operations.values()
    assert operation.cancelled
    assert fake.requests[-1].path.endswith(":cancel"), "polling went on after the cancel"
    assert len(fake.api_requests("cancel")) == 1
    await provider.cancel(running, VEO)  # nothing left to cancel: no second call
    assert len(fake.api_requests("cancel")) == 1


# ------------------------------------------------------------------ error translation


BILLING = "This API method requires billing to be enabled. Please enable billing on project"
UNKNOWN_FIELD = "Invalid JSON payload received. Unknown name \"x\" at 'parameters'"


@pytest.mark.parametrize(
    ("status", "google_status", "message", "expected"),
    [
        (429, "RESOURCE_EXHAUSTED", "Quota exceeded for x", UpstreamRateLimitedError),
        (
            400,
            "INVALID_ARGUMENT",
            "online_prediction_requests_per_base_model",
            UpstreamRateLimitedError,
        ),
        (403, "PERMISSION_DENIED", BILLING, UpstreamMisconfiguredError),
        (400, "FAILED_PRECONDITION", "Project is not allowlisted", UpstreamMisconfiguredError),
        (400, "INVALID_ARGUMENT", UNKNOWN_FIELD, UpstreamMisconfiguredError),
        (404, "NOT_FOUND", "Publisher Model x not found.", UpstreamMisconfiguredError),
        (400, "INVALID_ARGUMENT", SENSITIVE_WORDS_MESSAGE, UpstreamRejectedError),
        (500, "INTERNAL", "Internal error encountered.", UpstreamUnavailableError),
        (
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
            UpstreamUnavailableError,
        ),
        (
            504,
            "DEADLINE_EXCEEDED",
            "Deadline expired before operation could complete.",
            UpstreamTimeoutError,
        ),
        (499, "CANCELLED", "The operation was cancelled.", UpstreamUnavailableError),
    ],
)
def test_google_errors_map_onto_the_upstream_tree(
    status: int, google_status: str, message: str, expected: type[UpstreamError]
) -> None:
    body = {"error": {"code": status, "message": message, "status": google_status}}

    translated = error_from_response(status, body, provider="vertex")

    assert type(translated) is expected
    assert translated.message == message
    assert translated.code == google_status
    assert translated.status == status


def test_error_bodies_google_wraps_in_a_list_or_not_at_all() -> None:
    listed = [{"error": {"code": 429, "message": "Too many requests", "status": "X"}}]
    assert isinstance(error_from_response(429, listed, provider="vertex"), UpstreamRateLimitedError)
    html = error_from_response(502, "<html>Bad Gateway</html>", provider="vertex")
    assert isinstance(html, UpstreamUnavailableError)
    assert html.message == "Google answered HTTP 502"


async def test_errors_never_carry_the_access_token(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    fake.fail_next(500)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(job(), IMAGEN)

    (token,) = fake.tokens
    assert token not in str(caught.value.record())


# ------------------------------------------------------------------ pure mapping


def test_requests_pick_the_api_by_model_family() -> None:
    assert to_request(job(), IMAGEN).method == "predict"
    assert to_request(job(), GEMINI).method == "generateContent"
    assert to_request(video_job(), VEO).method == "predictLongRunning"
    with_images = job(images=(upload("png", (0, 0, 0)),))
    routed = to_request(with_images, Target("x", {"image_upstream": "gemini-3-pro-image-preview"}))
    assert routed.model == "gemini-3-pro-image-preview"
    assert to_request(job(), Target("x", {"image_upstream": "y"})).model == "x"


@pytest.mark.parametrize(
    ("dims", "expected"),
    [((864, 1184), "3:4"), ((896, 1152), "4:5"), ((1536, 672), "21:9"), ((1152, 928), "5:4")],
)
def test_nearest_ratio_picks_the_closest_supported_shape(
    dims: tuple[int, int], expected: str
) -> None:
    ratios = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
    assert nearest_ratio(dims, ratios) == expected


@pytest.mark.parametrize(
    ("parse", "body", "fragment"),
    [
        (from_imagen, {}, "without any image"),
        (from_imagen, {"predictions": [{"bytesBase64Encoded": "***"}]}, "not valid base64"),
        (from_gemini, {"candidates": []}, "without any candidate"),
        (from_gemini, ["not", "an", "object"], "not an object"),
        (from_operation, {"done": True}, "without the operation's response"),
        (from_operation, {"done": True, "response": {"videos": []}}, "No video samples"),
        (
            from_operation,
            {"done": True, "response": {"videos": [{"gcsUri": "gs://b/v.mp4"}]}},
            "without its bytes",
        ),
    ],
)
def test_unexpected_answers_are_protocol_errors(
    parse: Callable[[Any], Any], body: Any, fragment: str
) -> None:
    with pytest.raises(UpstreamProtocolError, match=fragment):
        parse(body)


def test_gemini_skips_thought_images_and_running_operations_are_none() -> None:
    thought = {"inlineData": {"mimeType": "image/png", "data": "dGhvdWdodA=="}, "thought": True}
    final = {"inlineData": {"mimeType": "image/webp", "data": base64.b64encode(b"final").decode()}}
    body = {"candidates": [{"content": {"parts": [thought, final]}}]}

    (artifact,) = from_gemini(body).artifacts

    assert artifact.data == b"final"
    assert artifact.content_type == "image/webp"
    assert from_operation({"name": "op"}) is None


def test_service_account_accepts_url_safe_base64_without_padding() -> None:
    credential = DEFAULT_CREDENTIAL.rstrip("=").replace("+", "-").replace("/", "_")
    account = parse_service_account(f" {credential}\n", provider="vertex")
    assert account.client_email == CLIENT_EMAIL
    assert "PRIVATE" not in repr(account)
    with pytest.raises(UpstreamMisconfiguredError):
        parse_service_account(base64.b64encode(b'"a string"').decode(), provider="vertex")


def test_assertion_verifies_with_the_service_accounts_public_key() -> None:
    account = parse_service_account(DEFAULT_CREDENTIAL, provider="vertex")
    audience = "https://oauth2.googleapis.com/token"

    token = sign_assertion(account, audience, 1_700_000_000, provider="vertex")

    options = {"verify_exp": False}
    claims = jwt.decode(token, PUBLIC_KEY, ["RS256"], audience=audience, options=options)
    assert claims == {
        "iss": CLIENT_EMAIL,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "aud": audience,
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
