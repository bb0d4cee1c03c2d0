"""Reading request bodies: raw bytes within a limit, and JSON objects into request models.

A request model is a pydantic model whose validators raise `invalid(message, param)`; the
first failure is answered as our usual 400 `{"error": {...}}` with that message and param,
word for word what the endpoint documents, never pydantic's own wording.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from image_router.errors import InvalidRequest, PayloadTooLarge

NOT_AN_OBJECT = "The request body must be a JSON object"
Model = TypeVar("Model", bound=BaseModel)


def invalid(message: str, param: str | None = None) -> NoReturn:
    """Refuse a field (or the body, `param=None`) from inside a request model's validator."""
    # The message goes in as a context value: a template would read its braces as fields.
    raise PydanticCustomError("invalid_request", "{message}", {"message": message, "param": param})


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it grows past `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes")
    return bytes(body)


async def read_model(
    request: Request,
    model: type[Model],
    *,
    max_bytes: int | None = None,
    empty_is_object: bool = False,
    not_an_object: str = NOT_AN_OBJECT,
) -> Model:
    """The body as `model`: a JSON object (an empty body is `{}` when `empty_is_object`).

    Numbers with a fraction are `Decimal`s, so a USD amount of 0.1 stays exactly 0.1.
    """
    raw = await request.body()
    if max_bytes is not None and len(raw) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    if empty_is_object and not raw.strip():
        raw = b"{}"
    try:
        body = json.loads(raw or b"null", parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest(not_an_object)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _as_invalid_request(exc) from None


def _not_json(constant: str) -> Any:
    # NaN and Infinity are JavaScript, not JSON (RFC 8259): such a body is not an object.
    raise ValueError(f"{constant} is not JSON")


def _as_invalid_request(exc: ValidationError) -> InvalidRequest:
    first = exc.errors(include_url=False)[0]
    context = first.get("ctx") or {}
    if first["type"] == "invalid_request":
        return InvalidRequest(str(context["message"]), param=context.get("param") or _loc(first))
    # A model's own type checks: its validators should have said it better, but say what.
    where = _loc(first)
    return InvalidRequest(f"{where or 'body'}: {first['msg']}", param=where)


def _loc(error: Any) -> str | None:
    loc = error.get("loc") or ()
    return str(loc[0]) if loc else None
