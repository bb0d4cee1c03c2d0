"""The one body reader and the request models of the account, key and privacy APIs.

The models must refuse with the API's own words and `param`, in the order the endpoints
always checked (the first problem is the one reported).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastapi import Request
from pydantic import BaseModel

from image_router.api.bodies import NOT_AN_OBJECT, invalid, read_limited, read_model
from image_router.api.request_models import (
    LIFT_REFUSED,
    AccountChanges,
    AccountDeletion,
    KeyChanges,
    NewKey,
    NewOwnKey,
    PreferenceChanges,
    RestrictionRequest,
)
from image_router.api.responses import json_response
from image_router.errors import Forbidden, InvalidRequest, PayloadTooLarge


def request_with(body: bytes, chunk: int = 1 << 20) -> Request:
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


def json_request(body: object) -> Request:
    return request_with(orjson.dumps(body))


async def refusal(model: type[BaseModel], body: object, **rules: Any) -> InvalidRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InvalidRequest) as caught:
        await read_model(request_with(raw), model, **rules)
    return caught.value


# ------------------------------------------------------------------------------ reader


class Limit(BaseModel):
    amount: object = None


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b"null", b'"text"', b'{"amount": NaN}'])
async def test_anything_but_a_json_object_is_refused_with_the_endpoints_words(raw: bytes) -> None:
    assert (await refusal(Limit, raw)).message == NOT_AN_OBJECT
    custom = await refusal(Limit, raw, not_an_object="Request body must be a JSON object")
    assert custom.message == "Request body must be a JSON object"
    assert custom.status == 400


async def test_an_empty_body_may_stand_for_an_empty_object() -> None:
    read = await read_model(request_with(b"  "), Limit, empty_is_object=True)
    assert read.amount is None


async def test_fractions_are_exact_decimals() -> None:
    read = await read_model(json_request({"amount": 0.1}), Limit)
    assert read.amount == Decimal("0.1")


async def test_a_body_past_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        await read_model(request_with(b'{"amount": "' + b"x" * 100 + b'"}'), Limit, max_bytes=50)
    assert caught.value.status == 413
    assert caught.value.message == "Request body is larger than 50 bytes"


async def test_read_limited_stops_at_the_limit_while_streaming() -> None:
    assert await read_limited(request_with(b"abcdef", chunk=2), 6) == b"abcdef"
    with pytest.raises(PayloadTooLarge, match="larger than 5 bytes"):
        await read_limited(request_with(b"abcdef", chunk=2), 5)


class Named(BaseModel):
    name: str
    count: int = 0

    def model_post_init(self, context: Any) -> None:
        if self.name.startswith("bad"):
            invalid(f"name {{{self.name}}} is bad", "name")


async def test_invalid_gives_its_message_and_param_word_for_word() -> None:
    error = await refusal(Named, {"name": "bad one"})
    assert (error.message, error.param) == ("name {bad one} is bad", "name")


async def test_a_models_own_type_error_still_names_the_field() -> None:
    error = await refusal(Named, {"name": "a", "count": "many"})
    assert error.param == "count"
    assert error.message.startswith("count: ")


def test_json_response_is_orjson_with_status_and_headers() -> None:
    response = json_response({"a": 1}, status=202, headers={"Cache-Control": "no-store"})
    assert response.status_code == 202
    assert response.body == b'{"a":1}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------ keys


async def test_a_new_keys_settings_are_parsed_into_credits_and_utc() -> None:
    new = await read_model(
        json_request({"name": " laptop ", "spend_limit": 0.5, "spend_limit_period": "week"}),
        NewKey,
    )
    assert (new.name, new.spend_limit, new.spend_limit_period) == ("laptop", 5000, "week")
    assert new.management is False and new.expires_at is None


async def test_a_bad_setting_is_reported_before_a_missing_name() -> None:
    error = await refusal(NewKey, {"spend_limit": -1})
    assert (error.param, error.message) == ("spend_limit", "spend_limit must not be negative")
    missing = await refusal(NewKey, {})
    assert (missing.param, missing.message) == ("name", "name is required (1 to 200 characters)")


async def test_management_is_an_unknown_field_for_a_management_key() -> None:
    error = await refusal(NewKey, {"name": "a", "management": True})
    assert error.param == "management"
    assert "unknown field 'management'" in error.message


async def test_the_owner_may_ask_for_a_management_key_checked_first() -> None:
    own = await read_model(json_request({"name": "ops", "management": True}), NewOwnKey)
    assert own.management is True
    error = await refusal(NewOwnKey, {"name": 5, "management": "yes"})
    assert (error.param, error.message) == ("management", "management must be true or false")


async def test_key_changes_are_only_the_fields_named() -> None:
    changes = await read_model(json_request({"disabled": True, "spend_limit": None}), KeyChanges)
    assert changes.values() == {"is_active": False, "spend_limit": None}
    error = await refusal(KeyChanges, {"disabled": "yes"})
    assert (error.param, error.message) == ("disabled", "disabled must be true or false")


# ------------------------------------------------------------------------------ account


async def test_account_changes_refuse_unknown_then_empty_then_wrong_types() -> None:
    unknown = await refusal(AccountChanges, {"display_name": "x", "name": 5})
    assert (unknown.param, unknown.message) == (
        "display_name",
        "Unknown field 'display_name': only name and email can be changed",
    )
    empty = await refusal(AccountChanges, {})
    assert (empty.param, empty.message) == (None, "Give the fields to change: name and/or email")
    typed = await refusal(AccountChanges, {"name": "x", "email": 5})
    assert (typed.param, typed.message) == ("email", "'email' must be a string")


async def test_account_changes_keep_a_null_name() -> None:
    read = await read_model(json_request({"name": None}), AccountChanges)
    assert read.changes() == {"name": None}


async def test_preferences_are_booleans_of_known_purposes() -> None:
    read = await read_model(json_request({"store_prompts": False}), PreferenceChanges)
    assert read.root == {"store_prompts": False}
    unknown = await refusal(PreferenceChanges, {"store_prompts": False, "sell_my_data": True})
    assert unknown.param == "sell_my_data"
    typed = await refusal(PreferenceChanges, {"marketing_emails": 1})
    assert (typed.param, typed.message) == (
        "marketing_emails",
        "'marketing_emails' must be true or false",
    )
    empty = await refusal(PreferenceChanges, {})
    assert empty.param is None and empty.message.startswith("Give the preferences to change")


async def test_asking_to_lift_a_restriction_is_403_before_any_other_check() -> None:
    with pytest.raises(Forbidden) as caught:
        await read_model(json_request({"restricted": False, "reason": 3}), RestrictionRequest)
    assert (caught.value.code, caught.value.message) == ("operator_only", LIFT_REFUSED)


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"why": 1}, "why", "Unknown field 'why'"),
        ({}, "restricted", "'restricted' must be true"),
        ({"restricted": "yes"}, "restricted", "'restricted' must be true"),
        ({"restricted": True, "reason": 3}, "reason", "'reason' must be a string"),
        (
            {"restricted": True, "reason": "x" * 2001},
            "reason",
            "'reason' is at most 2000 characters",
        ),
    ],
)
async def test_a_restriction_request_needs_restricted_true(
    body: dict[str, Any], param: str, message: str
) -> None:
    error = await refusal(RestrictionRequest, body)
    assert (error.param, error.message) == (param, message)


async def test_the_deletion_confirmation_may_be_anything_or_absent() -> None:
    absent = await read_model(request_with(b""), AccountDeletion, empty_is_object=True)
    assert absent.confirm is None
    typed = await read_model(json_request({"confirm": True, "other": 1}), AccountDeletion)
    assert typed.confirm is True
