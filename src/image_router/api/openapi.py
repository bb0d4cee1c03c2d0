"""OpenAPI documentation of the generation routes.

The handlers are plain Starlette endpoints that read their bodies themselves (JSON or
multipart, with the reference's exact messages), so FastAPI neither sees nor infers them;
these models describe them for `/openapi.json`, `/.well-known/openapi.yaml` and the
interactive docs, as the operations FastAPI would have listed first (same summary and
operationId).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route

from image_router.providers import PROVIDERS

_REF = "#/components/schemas/{model}"


# Vendor names are the provider ids of the registry; any other name is refused (400).
_VENDORS: dict[str, Any] = {
    "json_schema_extra": {"items": {"type": "string", "enum": sorted(PROVIDERS)}}
}


class ProviderPreferences(BaseModel):
    """How the client steers routing (docs/routing.md). Vendor names are provider ids."""

    model_config = ConfigDict(extra="forbid")

    order: list[str] = Field(
        default_factory=list, description="Vendors to try first, in order.", **_VENDORS
    )
    only: list[str] | None = Field(None, description="Use only these vendors.", **_VENDORS)
    ignore: list[str] = Field(
        default_factory=list, description="Never use these vendors.", **_VENDORS
    )
    sort: Literal["price", "latency"] | None = Field(
        None, description="Order the routes by quoted price or by learned latency."
    )
    allow_fallbacks: bool = Field(
        True, description="false: only the first route after ordering is tried."
    )
    max_price: float | str | None = Field(
        None, description="USD; routes quoted above it are skipped (400 when none is left)."
    )


_PROVIDER_FIELD = Field(
    None,
    description=(
        "Routing preferences: an object in JSON bodies, a JSON string in multipart forms."
    ),
)

_WEBHOOK_URL_FIELD: Any = Field(
    None,
    max_length=2000,
    description="Also send this generation's event (`generation.completed`/`.failed`, "
    "`video.completed`/`.failed`) to this http(s) URL, signed with the account's request "
    "secret (Standard Webhooks; docs/webhooks.md). A private or loopback address is refused.",
)

# What the size parser takes (kit/sizes.py): "auto", or digits, x/X/×/*, digits (≤ 32 chars).
_SIZE_PATTERN = r"^(auto|[0-9]+[xX×*][0-9]+)$"


class ImageGenerationRequest(BaseModel):
    model: str = Field(
        min_length=1, description="Model id, e.g. 'openai/gpt-image-1' or 'test/test'."
    )
    prompt: str | None = Field(None, max_length=10_000)
    quality: Literal["auto", "low", "medium", "high"] = "auto"
    size: str = Field(
        "auto",
        max_length=32,
        pattern=_SIZE_PATTERN,
        description="'auto' or 'WIDTHxHEIGHT' (ASCII digits): a size the model lists, or "
        "within its side bounds (docs/catalog.md).",
    )
    n: int = Field(1, ge=1, le=10, description="Images to make: 1 up to the model's `max_n`.")
    response_format: Literal["url", "b64_json", "b64_ephemeral"] = "url"
    output_format: Literal["png", "jpeg", "jpg", "webp"] | None = None
    provider: ProviderPreferences | None = _PROVIDER_FIELD
    webhook_url: str | None = _WEBHOOK_URL_FIELD


class ImageEditMultipart(ImageGenerationRequest):
    image: list[bytes] = Field(
        default_factory=list,
        description="Up to 16 files as `image`, `image[]` or `image[0]`… (25 MB each).",
        json_schema_extra={"items": {"type": "string", "format": "binary"}},
    )
    mask: bytes | None = Field(
        None,
        description="One mask file (`mask` or `mask[]`).",
        json_schema_extra={"format": "binary"},
    )


class VideoGenerationRequest(BaseModel):
    model: str = Field(min_length=1, description="Model id, e.g. 'ir/test-video'.")
    prompt: str | None = Field(None, max_length=10_000)
    quality: Literal["auto", "low", "medium", "high"] = "auto"
    size: str = Field("auto", max_length=32, pattern=_SIZE_PATTERN)
    response_format: Literal["url", "b64_json", "b64_ephemeral"] = "url"
    seconds: Annotated[float, Field(ge=1, le=60)] | Literal["auto"] = Field(
        "auto", description="1-60, snapped to the model's list."
    )
    provider: ProviderPreferences | None = _PROVIDER_FIELD
    webhook_url: str | None = _WEBHOOK_URL_FIELD


class GeneratedItem(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class GenerationResponse(BaseModel):
    created: int = Field(description="Unix time in seconds.")
    data: list[GeneratedItem]
    latency: int = Field(description="Milliseconds spent in the upstream call.")
    cost: float = Field(description="USD charged.")


class JobError(BaseModel):
    message: str
    type: str
    code: str | None = None


class JobObject(BaseModel):
    """A generation run as a job (docs/jobs.md): `Prefer: respond-async`, or any
    generation read by its id (`X-Generation-Id`)."""

    id: str = Field(description="The generation's id (also its usage row).")
    object: Literal["job"] = "job"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    modality: Literal["image", "video"]
    created: int = Field(description="Unix time in seconds.")
    finished: int | None = Field(description="Unix time in seconds, once it has finished.")
    progress: float | None = Field(
        description="0 to 1 while running, when the vendor reports it; else null."
    )
    data: list[GeneratedItem] | None = Field(
        description="Once succeeded: exactly the synchronous answer's `data`; null once the "
        "outputs expired (`error.code` says `job_outputs_expired`)."
    )
    latency: int | None = Field(description="Milliseconds spent in the upstream call.")
    cost: float | None = Field(description="USD charged, once succeeded.")
    error: JobError | None = Field(
        description="Why it failed or was cancelled (or why succeeded data is gone)."
    )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject] = Field(description="Newest first.")
    first_id: str | None
    last_id: str | None = Field(description="Pass as `after` for the next page.")
    has_more: bool


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_MODELS: tuple[type[BaseModel], ...] = (
    ProviderPreferences,
    ImageGenerationRequest,
    ImageEditMultipart,
    VideoGenerationRequest,
    GeneratedItem,
    GenerationResponse,
    JobError,
    JobObject,
    JobList,
    ErrorDetail,
    ErrorResponse,
)


PREFER_PARAMETER: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`respond-async` (RFC 7240): answer 202 with a job once the credit is "
    "held, and run the generation in the background (docs/jobs.md).",
    "schema": {"type": "string"},
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation(json_model: type[BaseModel], multipart_model: type[BaseModel]) -> dict[str, Any]:
    errors = {
        str(status): {
            "description": text,
            "content": {"application/json": {"schema": _ref(ErrorResponse)}},
        }
        for status, text in (
            (400, "Invalid request, upload error, or the vendor refused the input"),
            (401, "Missing or invalid API key"),
            (402, "Insufficient credits"),
            (404, "Unknown route"),
            (429, "Rate limited"),
            (502, "Every upstream route failed (not charged)"),
            (503, "No upstream route available"),
            (504, "Deadline passed (not charged)"),
        )
    }
    return {
        "parameters": [PREFER_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref(json_model)},
                "multipart/form-data": {"schema": _ref(multipart_model)},
            },
        },
        "responses": {
            "200": {
                "description": (
                    "Generated outputs. After HEARTBEAT_AFTER_S, spaces precede the JSON."
                ),
                "content": {"application/json": {"schema": _ref(GenerationResponse)}},
            },
            "202": {
                "description": "`Prefer: respond-async`: the job (queued), with `Location: "
                "/v1/jobs/{id}` and `Preference-Applied: respond-async`; its credit is held.",
                "content": {"application/json": {"schema": _ref(JobObject)}},
            },
            **errors,
        },
        "security": [{"bearer": []}],
    }


def _plain_operation(
    route: Route, json_model: type[BaseModel], multipart_model: type[BaseModel]
) -> dict[str, Any]:
    """The operation of a plain route, named as FastAPI names its own operations."""
    method = sorted(route.methods or {"POST"})[0].lower()
    unique = re.sub(r"[^a-zA-Z0-9_]", "_", route.name + route.path_format)
    operation: dict[str, Any] = {
        "summary": route.name.replace("_", " ").title(),
        "operationId": f"{unique}_{method}",
    }
    described = _operation(json_model, multipart_model)
    # FastAPI's key order: summary, operationId, responses, then what this module adds.
    operation["responses"] = described.pop("responses")
    return {method: operation | described}


def document_generation_routes(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in _MODELS:
            model_schema = model.model_json_schema(ref_template=_REF)
            model_schema.pop("$defs", None)  # each nested model is a component of its own
            schemas[model.__name__] = model_schema
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        documented: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
            "/v1/openai/images/generations": (
                ImageGenerationRequest,
                ImageEditMultipart,
            ),
            "/v1/openai/images/edits": (ImageGenerationRequest, ImageEditMultipart),
            "/v1/openai/videos/generations": (
                VideoGenerationRequest,
                VideoGenerationRequest,
            ),
        }
        plain: dict[str, Any] = {}
        for route in app.routes:
            if not isinstance(route, Route) or isinstance(route, APIRoute):
                continue  # FastAPI's routes document themselves
            if route.path in documented:
                path_item = plain.setdefault(route.path, {})
                path_item.update(_plain_operation(route, *documented[route.path]))
        for path, (json_model, multipart_model) in documented.items():
            post = schema.get("paths", {}).get(path, {}).get("post")
            if post is not None:  # a FastAPI route
                post.update(_operation(json_model, multipart_model))
        # The plain routes come first, as they are registered first.
        schema["paths"] = plain | schema.get("paths", {})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
