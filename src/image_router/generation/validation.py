"""Request validation with ImageRouter's messages, word for word (spec §2.4, §2.5).

The reference validates with zod and reports only the first issue, checking fields in
schema order; the functions here check in the same order and raise the first problem.
Multipart values arrive as strings, JSON values with their JSON types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from image_router.catalog.spec import Catalog, ModelSpec
from image_router.errors import InvalidRequest
from image_router.generation.steering import parse_preferences
from image_router.kit.sizes import is_size, normalise_size, parse_size
from image_router.providers import PROVIDERS
from image_router.providers.contract import InputFile
from image_router.routing.preferences import NO_PREFERENCES, Preferences

RESPONSE_FORMATS = ("url", "b64_json", "b64_ephemeral")
QUALITIES = ("auto", "low", "medium", "high")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
MAX_PROMPT = 10_000

PROMPT_TOO_LONG = (
    "'prompt' must be 10,000 characters or less. "
    "Please contact ImageRouter support if you need a higher limit."
)
SIZE_FORMAT = "'size' must be 'auto' or in the format 'WIDTHxHEIGHT' (e.g. '1024x768')"
OUTPUT_FORMAT = "'output_format' must be one of: 'png', 'jpeg' (or 'jpg'), 'webp'"
N_NOT_INTEGER = "'n' must be an integer"
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,18}")
N_TOO_SMALL = "'n' must be at least 1"
MAX_WEBHOOK_URL = 2000
WEBHOOK_URL = re.compile(r"https?://[^\s/?#@]+(?:[/?#]\S*)?", re.IGNORECASE)
WEBHOOK_URL_INVALID = (
    f"'webhook_url' must be an http:// or https:// URL of at most {MAX_WEBHOOK_URL} characters"
)
FREE_SIZE_CAP = (
    "Free models support maximum size of 1024x1024. Please use the paid models for higher quality."
)


@dataclass(frozen=True)
class GenerationRequest:
    modality: Literal["image", "video"]
    model: str
    requested_model: str
    prompt: str | None
    response_format: str
    quality: str
    size: str
    output_format: str | None
    seconds: float | None
    images: tuple[InputFile, ...]
    mask: InputFile | None
    preferences: Preferences = NO_PREFERENCES  # the client's `provider` object
    n: int = 1  # images asked for, within the model's `max_n`
    webhook_url: str | None = None  # where this generation's events also go (webhooks)

    @property
    def input_types(self) -> list[str]:
        return (["PROMPT"] if self.prompt else []) + (["IMAGE"] if self.images else [])


def validate_image(
    fields: Mapping[str, Any],
    catalog: Catalog,
    *,
    images: tuple[InputFile, ...] = (),
    mask: InputFile | None = None,
    enabled: frozenset[str],
) -> GenerationRequest:
    prompt = _prompt(fields)
    model = _model(fields, video=False)
    response_format = _enum(fields, "response_format", RESPONSE_FORMATS)
    quality = _enum(fields, "quality", QUALITIES)
    size = _size(fields)
    output_format = _output_format(fields)
    n = _n(fields)

    resolved = catalog.resolve(model)
    if resolved in catalog.retired:
        raise InvalidRequest(catalog.retired[resolved], param="model")
    spec = catalog.get(resolved)
    if spec is None or spec.modality != "image":
        if spec is not None:
            raise InvalidRequest(
                f"'{resolved}' is a video model. Please use the video generation endpoint.",
                param="model",
            )
        raise InvalidRequest(f"model '{resolved}' is not available", param="model")
    _require_enabled(spec, enabled)
    if spec.free:
        dims = parse_size(size)
        if dims is not None and (dims[0] > 1024 or dims[1] > 1024):
            raise InvalidRequest(FREE_SIZE_CAP, param="size")
    _check_size_and_n(spec, size, n)
    return GenerationRequest(
        modality="image",
        model=resolved,
        requested_model=model,
        prompt=prompt,
        response_format=response_format,
        quality=quality,
        size=size,
        output_format=output_format,
        seconds=None,
        images=images,
        mask=mask,
        preferences=parse_preferences(fields, frozenset(PROVIDERS)),
        n=n,
        webhook_url=_webhook_url(fields),
    )


def validate_video(
    fields: Mapping[str, Any],
    catalog: Catalog,
    *,
    images: tuple[InputFile, ...] = (),
    enabled: frozenset[str],
) -> GenerationRequest:
    prompt = _prompt(fields)
    model = _model(fields, video=True)
    response_format = _enum(fields, "response_format", RESPONSE_FORMATS)
    quality = _enum(fields, "quality", QUALITIES)
    size = _size(fields)
    seconds = _seconds(fields)
    n = _n(fields)

    resolved = catalog.resolve(model)
    spec = catalog.get(resolved)
    if spec is None or spec.modality != "video":
        if spec is not None:
            raise InvalidRequest(
                f"'{resolved}' is an image model. Please use the image generation endpoint.",
                param="model",
            )
        raise InvalidRequest(f"model '{resolved}' is not available", param="model")
    _require_enabled(spec, enabled)
    _check_size_and_n(spec, size, n)
    return GenerationRequest(
        modality="video",
        model=resolved,
        requested_model=model,
        prompt=prompt,
        response_format=response_format,
        quality=quality,
        size=size,
        output_format=None,
        seconds=spec.resolve_seconds(seconds),
        # The reference uses only the first uploaded image for videos.
        images=images[:1],
        mask=None,
        preferences=parse_preferences(fields, frozenset(PROVIDERS)),
        n=n,
        webhook_url=_webhook_url(fields),
    )


def _webhook_url(fields: Mapping[str, Any]) -> str | None:
    """Our own field (not the reference's): an http(s) URL; its address is checked by the
    generation before anything is held (`GenerationEvents.check_url`)."""
    value = fields.get("webhook_url")
    if value is None or value == "":
        return None
    if (
        not isinstance(value, str)
        or len(value) > MAX_WEBHOOK_URL
        or not WEBHOOK_URL.fullmatch(value.strip())
    ):
        raise InvalidRequest(WEBHOOK_URL_INVALID, param="webhook_url")
    return value.strip()


def _require_enabled(spec: ModelSpec, enabled: frozenset[str]) -> None:
    if not any(route.provider in enabled for route in spec.routes):
        raise InvalidRequest(
            f"model provider for '{spec.id}' is not available",
            param="model",
            code="model_provider_unavailable",
        )


def _prompt(fields: Mapping[str, Any]) -> str | None:
    if "prompt" not in fields:
        return None
    value = fields["prompt"]
    if not isinstance(value, str):
        raise InvalidRequest("'prompt' must be a string", param="prompt")
    # JavaScript's .length counts UTF-16 code units; so does the reference's limit.
    if len(value.encode("utf-16-le")) // 2 > MAX_PROMPT:
        raise InvalidRequest(PROMPT_TOO_LONG, param="prompt")
    return value


def _model(fields: Mapping[str, Any], *, video: bool) -> str:
    value = fields.get("model")
    if value is None:
        raise InvalidRequest(
            "Required" if video else "'model' is a required parameter", param="model"
        )
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Expected string, received {_js_type(value)}" if video else "'model' must be a string",
            param="model",
        )
    if value == "":
        raise InvalidRequest("'model' is a required parameter", param="model")
    return value


def _enum(fields: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    if name not in fields:
        return allowed[0]
    value = fields[name]
    expected = " | ".join(f"'{a}'" for a in allowed)
    if isinstance(value, str):
        if value in allowed:
            return value
        raise InvalidRequest(
            f"Invalid enum value. Expected {expected}, received '{value}'", param=name
        )
    raise InvalidRequest(f"Expected {expected}, received {_js_type(value)}", param=name)


def _size(fields: Mapping[str, Any]) -> str:
    if "size" not in fields:
        return "auto"
    value = fields["size"]
    if not isinstance(value, str):
        raise InvalidRequest(f"Expected string, received {_js_type(value)}", param="size")
    if not is_size(value):
        raise InvalidRequest(SIZE_FORMAT, param="size")
    return normalise_size(value)


def _n(fields: Mapping[str, Any]) -> int:
    """`n` as a whole number ≥ 1 (its ceiling depends on the model, checked later).

    The reference strips `n` and always makes one image; here it is honoured or refused,
    never silently ignored. Multipart sends it as a string of ASCII digits.
    """
    value = fields.get("n")
    if value is None:
        return 1
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(N_NOT_INTEGER, param="n")
    if value < 1:
        raise InvalidRequest(N_TOO_SMALL, param="n")
    return value


def _check_size_and_n(spec: ModelSpec, size: str, n: int) -> None:
    """Refuse, before anything is held or sent, what the model's vendors cannot make."""
    refusal = spec.size_refusal(size)
    if refusal is not None:
        raise InvalidRequest(refusal, param="size", code="unsupported_size")
    if n > spec.max_n:
        message = (
            f"'{spec.id}' supports only n=1"
            if spec.max_n == 1
            else f"'n' must be {spec.max_n} or less for '{spec.id}'"
        )
        raise InvalidRequest(message, param="n", code="unsupported_n")


def _output_format(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("output_format")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(OUTPUT_FORMAT, param="output_format")
    value = value.lower()
    value = "jpeg" if value == "jpg" else value
    if value not in OUTPUT_FORMATS:
        raise InvalidRequest(OUTPUT_FORMAT, param="output_format")
    return value


def _seconds(fields: Mapping[str, Any]) -> float | None:
    if "seconds" not in fields or fields["seconds"] == "auto":
        return None
    number = _js_number(fields["seconds"])
    if math.isnan(number):
        raise InvalidRequest("Invalid input", param="seconds")
    if number < 1:
        raise InvalidRequest("'seconds' must be at least 1", param="seconds")
    if number > 60:
        raise InvalidRequest("'seconds' must be 60 or less", param="seconds")
    return number


def _js_number(value: Any) -> float:
    """JavaScript's Number(value), which zod's coerce.number applies."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        if text.lower() in (
            "nan",
            "inf",
            "-inf",
            "+inf",
            "infinity",
            "-infinity",
            "+infinity",
        ):
            return {
                "Infinity": math.inf,
                "-Infinity": -math.inf,
                "+Infinity": math.inf,
            }.get(text, math.nan)
        try:
            return float(text)
        except ValueError:
            return math.nan
    return math.nan


def _js_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"
