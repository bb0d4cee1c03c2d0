"""S3Store against moto's S3 server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from image_router.storage.base import StorageError, Store
from image_router.storage.s3 import S3Store
from tests.fakes.s3 import admin_client, s3_server

BUCKET = "outputs"
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server(BUCKET) as url:
        yield url


@pytest.fixture
async def store(endpoint: str) -> AsyncIterator[S3Store]:
    s3 = S3Store(BUCKET, endpoint_url=endpoint, region="us-east-1", **CREDENTIALS)
    yield s3
    await s3.close()


async def test_put_get_delete_round_trip(store: S3Store, endpoint: str) -> None:
    url = await store.put("gen-1.png", PNG, "image/png")

    assert url == f"{endpoint}/{BUCKET}/gen-1.png"
    assert await store.get("gen-1.png") == (PNG, "image/png")

    await store.delete("gen-1.png")
    assert await store.get("gen-1.png") is None


async def test_uploaded_object_is_served_over_plain_http(store: S3Store) -> None:
    url = await store.put("gen-2.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"RIFF\x00\x00\x00\x00WEBPVP8 "
    assert response.headers["content-type"] == "image/webp"


async def test_satisfies_the_store_protocol(store: S3Store) -> None:
    generic: Store = store
    await generic.put("proto.mp4", b"\x00\x00\x00\x20ftypisom", "video/mp4")
    assert await generic.get("proto.mp4") == (b"\x00\x00\x00\x20ftypisom", "video/mp4")


async def test_missing_key_is_none(store: S3Store) -> None:
    assert await store.get("never-written.png") is None


async def test_delete_missing_is_not_an_error(store: S3Store) -> None:
    await store.delete("never-written.png")


async def test_put_replaces_content_and_type(store: S3Store) -> None:
    await store.put("gen-3", b"first", "image/png")
    await store.put("gen-3", b"second", "image/jpeg")
    assert await store.get("gen-3") == (b"second", "image/jpeg")


async def test_no_checksum_is_sent_unless_required(store: S3Store, endpoint: str) -> None:
    # Backblaze B2 rejects the CRC32 headers botocore adds by default; moto keeps what
    # it was sent, so a stored checksum means the client sent one.
    await store.put("gen-4.png", PNG, "image/png")
    head = admin_client(endpoint).head_object(
        Bucket=BUCKET, Key="gen-4.png", ChecksumMode="ENABLED"
    )
    assert not [k for k in head if k.startswith("Checksum")]


async def test_key_prefix_from_url(endpoint: str) -> None:
    s3 = S3Store.from_url(
        f"s3://{BUCKET}/runs/r1/",
        endpoint_url=endpoint,
        region="us-east-1",
        **CREDENTIALS,
    )
    try:
        url = await s3.put("a.png", PNG, "image/png")
        assert url == f"{endpoint}/{BUCKET}/runs/r1/a.png"
        listed = admin_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix="runs/")
        assert [o["Key"] for o in listed["Contents"]] == ["runs/r1/a.png"]
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).content == PNG
        assert await s3.get("a.png") == (PNG, "image/png")
    finally:
        await s3.close()


async def test_concurrent_puts(store: S3Store) -> None:
    names = [f"many-{i}.jpg" for i in range(20)]
    await asyncio.gather(*(store.put(n, n.encode(), "image/jpeg") for n in names))
    got = await asyncio.gather(*(store.get(n) for n in names))
    assert got == [(n.encode(), "image/jpeg") for n in names]


async def test_missing_bucket_is_a_storage_error(endpoint: str) -> None:
    s3 = S3Store("no-such-bucket", endpoint_url=endpoint, region="us-east-1", **CREDENTIALS)
    try:
        with pytest.raises(StorageError, match=r"upload of s3://no-such-bucket/a\.png"):
            await s3.put("a.png", PNG, "image/png")
        # Not "missing object": a broken bucket must not look like an absent file.
        with pytest.raises(StorageError, match="NoSuchBucket"):
            await s3.get("a.png")
        with pytest.raises(StorageError, match="NoSuchBucket"):
            await s3.delete("a.png")
    finally:
        await s3.close()


async def test_unreachable_endpoint_is_a_storage_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    s3 = S3Store(
        BUCKET,
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        region="us-east-1",
        **CREDENTIALS,
    )
    try:
        with pytest.raises(StorageError, match="Could not connect"):
            await s3.put("a.png", PNG, "image/png")
    finally:
        await s3.close()


@pytest.mark.parametrize("name", ["../x", "a/b", ""])
async def test_invalid_names_are_rejected(store: S3Store, name: str) -> None:
    with pytest.raises(StorageError, match="Invalid storage object name"):
        await store.put(name, PNG, "image/png")


@pytest.mark.parametrize(
    ("kwargs", "url"),
    [
        (
            {
                "public_base_url": "https://storage.example.io/",
                "endpoint_url": "http://s3",
            },
            "https://storage.example.io/abc.webp",
        ),
        (
            {"endpoint_url": "https://s3.us-west-004.backblazeb2.com/"},
            "https://s3.us-west-004.backblazeb2.com/outputs/abc.webp",
        ),
        (
            {"region": "eu-west-1"},
            "https://outputs.s3.eu-west-1.amazonaws.com/abc.webp",
        ),
        ({"region": None}, "https://outputs.s3.amazonaws.com/abc.webp"),
        (
            {"public_base_url": "https://cdn.example", "key_prefix": "/p q/"},
            "https://cdn.example/p%20q/abc.webp",
        ),
    ],
)
def test_url_for(kwargs: dict[str, Any], url: str) -> None:
    s3 = S3Store(BUCKET, **{"region": "us-east-1", **CREDENTIALS, **kwargs})
    assert s3.url_for("abc.webp") == url


@pytest.mark.parametrize(
    "storage_url", ["http://bucket/x", "s3://", "s3:///prefix", "s3://b/p?x=1"]
)
def test_from_url_rejects_malformed_urls(storage_url: str) -> None:
    with pytest.raises(ValueError, match="torage URL"):
        S3Store.from_url(storage_url, **CREDENTIALS)


def test_empty_bucket_name_is_rejected() -> None:
    with pytest.raises(StorageError, match="bucket name is empty"):
        S3Store("", **CREDENTIALS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"access_key_id": "only-half"}, "Partial credentials"),
        ({"endpoint_url": "not a url", **CREDENTIALS}, "Invalid endpoint"),
    ],
)
def test_bad_settings_are_a_storage_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(StorageError, match=message):
        S3Store(BUCKET, **kwargs)
