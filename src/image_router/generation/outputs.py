"""Turn a provider's artifacts into response items, storing them as spec §11.4 says.

Storage is always on: `url` and `b64_json` outputs are saved under the generation id and
listed in the usage log; `b64_ephemeral` outputs are returned and never written anywhere.
`output_format` is honoured for still images by converting when the vendor did not.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

import httpx

from image_router.providers.base import Artifact, Result, UpstreamProtocolError
from image_router.storage import images
from image_router.storage.base import Store

MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
_CONVERT_IN_THREAD_ABOVE = 64 * 1024


@dataclass(frozen=True)
class StoredOutput:
    item: dict[str, Any]
    url: str | None
    name: str | None = None  # the storage name, so retention and erasure can delete it


async def store_outputs(
    store: Store,
    http: httpx.AsyncClient,
    result: Result,
    *,
    generation_id: str,
    response_format: str,
    output_format: str | None,
    modality: str,
) -> list[StoredOutput]:
    many = len(result.artifacts) > 1
    outputs = []
    for index, artifact in enumerate(result.artifacts):
        data, content_type = await _materialise(http, artifact, modality)
        if output_format is not None and content_type.startswith("image/"):
            if len(data) > _CONVERT_IN_THREAD_ABOVE:
                data, content_type = await asyncio.to_thread(
                    images.convert_image, data, content_type, output_format
                )
            else:
                data, content_type = images.convert_image(data, content_type, output_format)
        item: dict[str, Any] = {}
        url = name = None
        if response_format != "b64_ephemeral":
            name = (
                f"{generation_id}{f'-{index}' if many else ''}{images.extension_for(content_type)}"
            )
            url = await store.put(name, data, content_type)
        if response_format == "url":
            item["url"] = url
        else:
            item["b64_json"] = base64.b64encode(data).decode("ascii")
        item["revised_prompt"] = artifact.revised_prompt
        outputs.append(StoredOutput(item=item, url=url, name=name))
    return outputs


async def _materialise(
    http: httpx.AsyncClient, artifact: Artifact, modality: str
) -> tuple[bytes, str]:
    default = "video/mp4" if modality == "video" else "image/png"
    if artifact.data is not None:
        data = artifact.data
        content_type = images.sniff_content_type(data) or artifact.content_type or default
        return data, content_type
    if artifact.url is None:
        raise UpstreamProtocolError("an output had neither bytes nor a URL", provider="gateway")
    if artifact.url.startswith("data:"):
        data, declared = images.decode_base64(artifact.url)
        return data, images.sniff_content_type(data) or declared or default
    data = await _download(http, artifact.url)
    content_type = (
        images.sniff_content_type(data)
        or artifact.content_type
        or images.content_type_from_url(artifact.url, default)
    )
    return data, content_type


async def _download(http: httpx.AsyncClient, url: str) -> bytes:
    try:
        async with http.stream("GET", url) as response:
            if response.status_code != 200:
                raise UpstreamProtocolError(
                    f"could not download the output ({response.status_code})",
                    provider="gateway",
                    status=response.status_code,
                )
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise UpstreamProtocolError("the output is too large", provider="gateway")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise UpstreamProtocolError(
            f"could not download the output: {type(exc).__name__}", provider="gateway"
        ) from exc
