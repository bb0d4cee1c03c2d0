"""Outputs kept in an S3-compatible bucket (AWS, Backblaze B2, MinIO, R2, …)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from image_router.storage.base import StorageError
from image_router.storage.local import check_name

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_DEFAULT_TYPE = "application/octet-stream"


class S3Store:
    """A `Store` on one bucket, every object under `key_prefix`.

    boto3 is synchronous; its client is thread-safe, so each call runs in a worker
    thread, and the connection pool matches the default executor's 32-thread ceiling so
    threads never queue for a connection.
    Public URLs use the object key (prefix included), so `public_base_url` is the URL of
    the bucket root.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        public_base_url: str | None = None,
        key_prefix: str = "",
    ) -> None:
        if not bucket:
            raise StorageError("S3 bucket name is empty")
        self.bucket = bucket
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.region = region or None
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        stripped = key_prefix.strip("/")
        self.key_prefix = f"{stripped}/" if stripped else ""
        config = Config(
            # Custom endpoints (MinIO, B2, moto) rarely resolve bucket subdomains.
            s3={"addressing_style": "path"} if endpoint_url else {},
            # Backblaze B2 rejects the CRC checksums botocore adds by default (§11.1).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
        )
        # A private session: boto3's default one is module state, not thread-safe.
        session = boto3.session.Session()
        # The readiness probe's own client: short timeouts and no retries.
        probe = config.merge(Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 1}))
        try:
            self._client: S3Client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=config,
            )
            self._probe: S3Client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=probe,
            )
        except (BotoCoreError, ValueError) as exc:
            raise StorageError(f"Invalid S3 settings for bucket {bucket}: {exc}") from exc

    @classmethod
    def from_url(cls, storage_url: str, **kw: Any) -> S3Store:
        """A store for `s3://bucket[/prefix]`; `kw` are the other constructor args."""
        parts = urlsplit(storage_url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"Expected a storage URL like s3://bucket/prefix, got {storage_url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"Storage URL must not have a query or fragment: {storage_url!r}")
        return cls(parts.netloc, key_prefix=parts.path, **kw)

    def _key(self, name: str) -> str:
        return self.key_prefix + check_name(name)

    def url_for(self, name: str) -> str:
        key = quote(self._key(name), safe="/")
        if self.public_base_url:
            return f"{self.public_base_url}/{key}"
        if self.endpoint_url:
            return f"{self.endpoint_url}/{self.bucket}/{key}"
        if self.region:
            return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{key}"
        return f"https://{self.bucket}.s3.amazonaws.com/{key}"

    def _failure(self, action: str, key: str, exc: Exception) -> StorageError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            detail = f"{error.get('Code', 'unknown')}: {error.get('Message', str(exc))}"
        else:
            detail = str(exc)
        return StorageError(f"S3 {action} of s3://{self.bucket}/{key} failed: {detail}")

    async def put(self, name: str, data: bytes, content_type: str) -> str:
        key = self._key(name)
        try:
            await asyncio.to_thread(
                self._client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._failure("upload", key, exc) from exc
        return self.url_for(name)

    async def get(self, name: str) -> tuple[bytes, str] | None:
        key = self._key(name)
        try:
            return await asyncio.to_thread(self._read, key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                return None
            raise self._failure("download", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failure("download", key, exc) from exc

    def _read(self, key: str) -> tuple[bytes, str]:
        response = self._client.get_object(Bucket=self.bucket, Key=key)
        # The body is a socket stream: read it in this worker thread, not on the loop.
        with response["Body"] as body:
            data = body.read()
        return data, response.get("ContentType") or _DEFAULT_TYPE

    async def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            # S3 answers 204 for a missing key, so "already gone" needs no special case.
            await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure("delete", key, exc) from exc

    async def check(self) -> None:
        # HEAD on the bucket: one request, proves the endpoint answers and the credentials
        # reach the bucket. No retries: a probe must answer fast and say what it saw.
        try:
            await asyncio.to_thread(self._probe.head_bucket, Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure("check", "", exc) from exc

    async def close(self) -> None:
        self._client.close()
        self._probe.close()
