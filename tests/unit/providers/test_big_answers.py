"""A vendor answer of megabytes is parsed and decoded off the event loop, with the same
result and the same errors as a small one."""

from __future__ import annotations

import base64
import os

import httpx
import orjson
import pytest

from image_router.providers.contract import PARSE_IN_THREAD_ABOVE, Target
from image_router.providers.errors import UpstreamProtocolError
from image_router.providers.openai import OpenAIProvider
from tests.unit.providers.conftest import jobs

KEY = "sk-big-answers"
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def big_picture() -> bytes:
    # Bytes with a PNG's magic, large enough that their base64 crosses the threshold.
    return PNG_HEADER + os.urandom(PARSE_IN_THREAD_ABOVE)


def vendor(answer: bytes) -> OpenAIProvider:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answer, headers={"content-type": "application/json"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    return OpenAIProvider(http, credential=KEY, base_url="http://fake.test/v1")


async def test_a_big_answer_is_decoded_whole() -> None:
    picture = big_picture()
    answer = orjson.dumps(
        {"created": 1, "data": [{"b64_json": base64.b64encode(picture).decode()}]}
    )
    assert len(answer) > PARSE_IN_THREAD_ABOVE
    result = await vendor(answer).generate(
        jobs(model="openai/dall-e-2")(), Target(upstream="dall-e-2")
    )
    assert [a.data for a in result.artifacts] == [picture]
    assert result.artifacts[0].content_type == "image/png"


async def test_a_big_answer_that_is_not_json_is_a_protocol_error() -> None:
    answer = b"<html>" + b"x" * PARSE_IN_THREAD_ABOVE
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        await vendor(answer).generate(jobs(model="openai/dall-e-2")(), Target(upstream="dall-e-2"))
