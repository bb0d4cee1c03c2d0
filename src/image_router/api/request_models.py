"""The request bodies of the account, key and privacy APIs, as pydantic models.

Each validator refuses with `invalid(message, param)`, the wording the API has always
answered (`bodies.read_model` turns it into the 400); key settings are parsed by
`managed_keys`, the parser the CLI shares, so both say the same thing about a bad limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    RootModel,
    ValidationInfo,
    field_validator,
    model_validator,
)

from image_router.account import managed_keys
from image_router.api.bodies import invalid
from image_router.errors import Forbidden
from image_router.kit.clock import utcnow
from image_router.privacy import preferences

# ------------------------------------------------------------------------------ API keys


class KeyChanges(BaseModel):
    """`PATCH /v1/api-keys/{id}` and `/v1/account/api-keys/{id}`: the fields present."""

    model_config = ConfigDict(extra="forbid")
    accepted: ClassVar[tuple[str, ...]] = managed_keys.PATCH_FIELDS

    name: str | None = None
    spend_limit: int | None = None  # credits
    spend_limit_period: str | None = None
    expires_at: datetime | None = None
    is_active: bool | None = None  # the body's `disabled`, inverted

    @model_validator(mode="before")
    @classmethod
    def _parsed(cls, body: dict[str, Any]) -> dict[str, Any]:
        return _key_settings(body, cls.accepted)

    def values(self) -> dict[str, Any]:
        """The column values to change: only the fields the body named."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class NewKey(BaseModel):
    """`POST /v1/api-keys`: a normal key."""

    model_config = ConfigDict(extra="forbid")
    accepted: ClassVar[tuple[str, ...]] = managed_keys.FIELDS

    name: str
    spend_limit: int | None = None
    spend_limit_period: str | None = None
    expires_at: datetime | None = None
    management: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parsed(cls, body: dict[str, Any]) -> dict[str, Any]:
        rest = dict(body)
        management = rest.pop("management", False) if "management" in cls.accepted else False
        if not isinstance(management, bool):
            invalid("management must be true or false", "management")
        values = _key_settings(rest, tuple(f for f in cls.accepted if f != "management"))
        if "name" not in values:
            invalid("name is required (1 to 200 characters)", "name")
        return {**values, "management": management}


class NewOwnKey(NewKey):
    """`POST /v1/account/api-keys`: the signed-in owner may also ask for a management key."""

    accepted: ClassVar[tuple[str, ...]] = (*managed_keys.FIELDS, "management")


def _key_settings(body: dict[str, Any], accepted: tuple[str, ...]) -> dict[str, Any]:
    try:
        return managed_keys.parse_settings(body, utcnow(), allowed=accepted)
    except managed_keys.KeySettingError as exc:
        invalid(str(exc), exc.param)


# ------------------------------------------------------------------------------- account

RECTIFIABLE = ("name", "email")
LIFT_REFUSED = (
    "Only an operator can lift a restriction of processing, after telling you first "
    "(GDPR Art. 18(3)). Write to the privacy contact to ask for it."
)


class AccountChanges(BaseModel):
    """`PATCH /v1/account`: correct the name and/or the e-mail (null clears the name)."""

    name: str | None = None
    email: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - set(RECTIFIABLE))
        if unknown:
            invalid(
                f"Unknown field '{unknown[0]}': only {' and '.join(RECTIFIABLE)} can be changed",
                unknown[0],
            )
        if not body:
            invalid("Give the fields to change: name and/or email")
        return body

    @field_validator("name", "email", mode="before")
    @classmethod
    def _text(cls, value: object, info: ValidationInfo) -> object:
        name = str(info.field_name)
        if value is not None and not isinstance(value, str):
            invalid(f"'{name}' must be a string", name)
        return value

    def changes(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in RECTIFIABLE if name in self.model_fields_set}


class PreferenceChanges(RootModel[dict[str, bool]]):
    """`PATCH /v1/account/preferences`: {preference: true|false}, at least one."""

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: dict[str, Any]) -> dict[str, bool]:
        if not body:
            invalid(f"Give the preferences to change: {', '.join(preferences.PURPOSES)}")
        try:
            return preferences.check_changes(body)
        except preferences.PreferenceError as exc:
            invalid(str(exc), exc.param)


class RestrictionRequest(BaseModel):
    """`POST /v1/account/restriction`: `{"restricted": true, "reason"?: text}`."""

    restricted: bool
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - {"restricted", "reason"})
        if unknown:
            invalid(f"Unknown field '{unknown[0]}'", unknown[0])
        wanted = body.get("restricted")
        if wanted is False:
            # Not a malformed body but an act the person may not do: 403, before anything
            # else in it is looked at. Pydantic lets any non-ValueError through as is.
            raise Forbidden(LIFT_REFUSED, code="operator_only")
        if wanted is not True:
            invalid("'restricted' must be true", "restricted")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            invalid("'reason' must be a string", "reason")
        if reason is not None and len(reason) > 2000:
            invalid("'reason' is at most 2000 characters", "reason")
        return body


class AccountDeletion(BaseModel):
    """`DELETE /v1/account`: the typed confirmation (anything else is checked against it)."""

    confirm: object = None


# ------------------------------------------------------------------------------ webhooks


class NewWebhook(BaseModel):
    """`POST /v1/webhooks`: the endpoint's URL (its address is checked by the webhooks use
    case) and an optional description."""

    model_config = ConfigDict(extra="forbid")

    url: str
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, body: dict[str, Any]) -> dict[str, Any]:
        if "url" not in body:
            invalid("url is required", "url")
        for name in ("url", "description"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                invalid(f"{name} must be a string", name)
        return body
