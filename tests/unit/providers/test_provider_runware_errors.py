"""How Runware's error answers become upstream errors (spec §7.2, §9.1).

Switch-type failures (our account, our key, our catalog's model) may be retried on another
route; transient ones too; the user's own input or a moderation refusal is not retried.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from image_router.providers.contract import Job, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.runware import RunwareProvider
from image_router.providers.runware_errors import error_from_response
from tests.fakes.runware import (
    DEFAULT_API_KEY,
    INSUFFICIENT_CREDIT_MESSAGE,
    INVALID_MODEL_MESSAGE,
    READ_RESULTS_MESSAGE,
    REFUSAL_MESSAGE,
    TASK_TIMEOUT_MESSAGE,
    FakeRunware,
    runware_error,
)
from tests.unit.providers.conftest import ROOT, vendor_fixtures

TASK = "9a6e7ed8-406a-4623-8f26-bf048ed0943d"
JOB = Job(modality="image", model="m", prompt="a red kite", job_id=TASK)


def errors(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"data": [], "errors": list(entries)}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # Switch provider (§7.2 PROVIDER_SWITCH_ERRORS): our account or configuration.
        (
            400,
            errors(runware_error("insufficientCredits", INSUFFICIENT_CREDIT_MESSAGE)),
            UpstreamRateLimitedError,
        ),
        # Observed: Runware says so in a plain 400, without a telling code.
        (400, {"errors": [{"message": INSUFFICIENT_CREDIT_MESSAGE}]}, UpstreamRateLimitedError),
        (402, {"errors": [{"message": "Payment required"}]}, UpstreamRateLimitedError),
        (
            400,
            errors(runware_error("invalidModel", INVALID_MODEL_MESSAGE, parameter="model")),
            UpstreamMisconfiguredError,
        ),
        (
            400,
            errors(runware_error("modelNotFound", "No such model", parameter="model")),
            UpstreamMisconfiguredError,
        ),
        (
            401,
            {"errors": [runware_error("invalidApiKey", "Invalid API key.")]},
            UpstreamMisconfiguredError,
        ),
        (
            403,
            {"errors": [runware_error("forbidden", "Not allowed for this key.")]},
            UpstreamMisconfiguredError,
        ),
        (429, {"errors": [runware_error("x", "slow down")]}, UpstreamRateLimitedError),
        (400, {"error": "OpenAI rate limit exceeded."}, UpstreamRateLimitedError),
        (
            400,
            {"error": "We're experiencing high demand for this model. Please try again later."},
            UpstreamRateLimitedError,
        ),
        # Retry (§7.2 RETRYABLE_ERRORS): Runware's transient failures.
        (400, errors(runware_error("unknown", READ_RESULTS_MESSAGE)), UpstreamUnavailableError),
        (
            500,
            errors(
                runware_error(
                    "unknown", "Unknown error while reading results. Please try again later."
                )
            ),
            UpstreamUnavailableError,
        ),
        (400, errors(runware_error("timeoutProvider", "Provider timed out")), UpstreamTimeoutError),
        (400, {"errors": [{"message": TASK_TIMEOUT_MESSAGE}]}, UpstreamTimeoutError),
        (
            400,
            {"error": {"message": "The model is overloaded. Please try again later."}},
            UpstreamUnavailableError,
        ),
        (
            400,
            errors(
                runware_error(
                    "providerError",
                    "Inference error occurred while processing the request. Please try again or "
                    "contact support if the issue persists.",
                )
            ),
            UpstreamUnavailableError,
        ),
        (502, "<html>502 Bad Gateway</html>", UpstreamUnavailableError),
        (504, {"errors": [{"message": "upstream"}]}, UpstreamTimeoutError),
        # The user's content or input: refused, not retried.
        (
            400,
            errors(runware_error("invalidProviderContent", REFUSAL_MESSAGE)),
            UpstreamRejectedError,
        ),
        (
            400,
            errors(
                runware_error(
                    "invalidWidth",
                    "Invalid value for 'width' parameter. Image width must be an integer value "
                    "between 256 and 16383, in multiples of '1'.",
                    parameter="width",
                )
            ),
            UpstreamRejectedError,
        ),
        # A failed task inside a 2xx answer is the job's own failure.
        (200, errors(runware_error("weird", "Something about this input")), UpstreamRejectedError),
    ],
)
def test_classification(status: int, body: Any, expected: type[UpstreamError]) -> None:
    error = error_from_response(status, body, TASK)

    assert type(error) is expected
    assert error.provider == "runware"
    assert error.status == status
    assert error.retry_elsewhere is (expected is not UpstreamRejectedError)


def test_message_and_code_come_from_our_task_entry() -> None:
    body = errors(
        runware_error("other", "not ours", task={"taskUUID": "x", "taskType": "imageInference"}),
        runware_error(
            "invalidHeight",
            "Height is wrong",
            task={"taskUUID": TASK, "taskType": "imageInference"},
        ),
    )
    error = error_from_response(400, body, TASK)

    assert error.message == "Height is wrong"
    assert error.code == "invalidHeight"
    assert error.body == body


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"message": "Missing required parameter 'referenceImages'."},
            "Image input is missing for image-to-image generation.",
        ),
        (
            {"message": "Missing required parameter '[inputs][referenceImages]'."},
            "Image input is missing for image-to-image generation.",
        ),
        (
            {
                "message": "Invalid value for 'positivePrompt' parameter. Positive prompt must "
                "be a string between 2 and 3000 characters."
            },
            "Invalid value for 'prompt' parameter. Prompt must be a string between 2 and "
            "3000 characters.",
        ),
        ({"message": "Invalid seedImage: too large"}, "Invalid image: too large"),
        ({"message": "maskImage does not match seedImage"}, "mask does not match image"),
        (
            {
                "code": "providerError",
                "message": "ByteDance responded with an error. Additional information below.",
                "responseContent": "The request failed because the input text may violate rules.",
            },
            "The request failed because the input text may violate rules.",
        ),
        (
            {
                "code": "invalidProviderContent",
                "message": "Provider refused",
                "responseContent": {"data": {"task_status_msg": "Face detected in the image"}},
            },
            "Face detected in the image",
        ),
        ({}, "Runware generation failed"),
    ],
)
def test_messages_are_rewritten_like_the_reference(entry: dict[str, Any], message: str) -> None:
    assert error_from_response(400, {"errors": [entry]}).message == message


# ---------------------------------------------------------------------------- through the fake


fake, provider = vendor_fixtures(
    FakeRunware,
    lambda http: RunwareProvider(http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1"),
)


async def test_insufficient_credit_switches_provider(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    fake.fail_next(400, errors(runware_error("insufficientCredits", INSUFFICIENT_CREDIT_MESSAGE)))

    with pytest.raises(UpstreamRateLimitedError) as caught:
        await provider.generate(JOB, Target("bfl:2@1"))
    assert caught.value.retry_elsewhere is True
    assert caught.value.message == INSUFFICIENT_CREDIT_MESSAGE


async def test_a_model_runware_no_longer_serves_is_our_misconfiguration(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    fake.unknown_models.add("civitai:4384@128713")

    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(JOB, Target("civitai:4384@128713"))
    assert caught.value.message == INVALID_MODEL_MESSAGE
    assert caught.value.retry_elsewhere is True


async def test_a_prompt_runware_refuses_is_the_users_problem_in_their_words(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(replace(JOB, prompt="x"), Target("runware:101@1"))
    assert caught.value.message.startswith("Invalid value for 'prompt' parameter. Prompt must")
    assert caught.value.code == "invalidPositivePrompt"


async def test_moderation_refusal_is_rejected(provider: RunwareProvider) -> None:
    with pytest.raises(UpstreamRejectedError, match="content moderation"):
        await provider.generate(replace(JOB, prompt="forbidden-content"), Target("bfl:2@1"))


async def test_200_without_data_is_a_protocol_error(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    fake.fail_next(200, {"result": "ok"})

    with pytest.raises(UpstreamProtocolError, match="without a data array"):
        await provider.generate(JOB, Target("runware:101@1"))


async def test_200_with_only_errors_is_classified(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    fake.fail_next(200, {"errors": [runware_error("x", READ_RESULTS_MESSAGE)]})

    with pytest.raises(UpstreamUnavailableError):
        await provider.generate(JOB, Target("runware:101@1"))
