"""What every vendor adapter test needs: its fake behind an in-process client, jobs, pictures.

A vendor's test module names its fake and how its provider is built, once:

    fake, provider = vendor_fixtures(
        FakeOpenAI, lambda http: OpenAIProvider(http, credential=KEY, base_url=f"{ROOT}/v1")
    )
    job = jobs(model="openai/gpt-image-1")

and the `http` fixture below connects the two. The cases every vendor must pass (happy
path, 5xx, 429, a stalled vendor, our key refused, a garbage body, a content refusal,
status checks that fail on the way) are checked once for all in `test_provider_contract.py`;
a vendor's own module asserts what is its own: the exact requests, its mappings, its errors.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image

from image_router.providers.contract import InputFile, Job, Provider
from tests.fakes import FakeVendor

#: Where each fake answers (the in-process transport never resolves it).
ROOT = "http://fake.test"

F = TypeVar("F", bound=FakeVendor)
P = TypeVar("P", bound=Provider)


@pytest.fixture
async def http(fake: FakeVendor) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose every request reaches the module's `fake`, in process."""
    async with fake.client(ROOT) as client:
        yield client


def vendor_fixtures(
    make_fake: Callable[[], F], build: Callable[[httpx.AsyncClient], P]
) -> tuple[Any, Any]:
    """The `fake` and `provider` fixtures of one vendor's test module."""

    @pytest.fixture(name="fake")
    def fake() -> F:
        return make_fake()

    @pytest.fixture(name="provider")
    def provider(http: httpx.AsyncClient) -> P:
        return build(http)

    return fake, provider


def jobs(**defaults: Any) -> Callable[..., Job]:
    """A module's `job(**overrides)`: an image job for "a lighthouse at dusk" on model "m",
    unless `defaults` (and then `overrides`) say otherwise."""
    base: dict[str, Any] = {"modality": "image", "model": "m", "prompt": "a lighthouse at dusk"}
    base.update(defaults)

    def job(**overrides: Any) -> Job:
        return Job(**{**base, **overrides})

    return job


def picture(
    fmt: str = "png",
    colour: tuple[int, int, int] = (10, 20, 30),
    size: tuple[int, int] = (16, 16),
    mode: str = "RGB",
) -> bytes:
    """A small, real image file in `fmt` (png, jpeg, webp...)."""
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def upload(
    fmt: str = "png", colour: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (16, 16)
) -> InputFile:
    """`picture` as the client uploaded it ("in.<fmt>", `image/<fmt>`)."""
    return InputFile(picture(fmt, colour, size), f"image/{fmt}", f"in.{fmt}")


def data_uri(file: InputFile) -> str:
    """How a vendor taking data URIs expects `file` (built here, not by the code under test)."""
    return f"data:{file.content_type};base64," + base64.b64encode(file.data).decode()
