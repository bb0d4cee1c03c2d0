"""The base of every settings group: a pydantic model whose fields are read from the
environment variable named like the field, upper-cased (`host` from HOST)."""

from __future__ import annotations

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict
from pydantic.fields import FieldInfo


class Group(BaseModel):
    """One concern's settings. Code and tests may pass field names (`host=`) as well as
    the environment names (`HOST=`)."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=str.upper),
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )


def env_names(name: str, info: FieldInfo) -> tuple[str, ...]:
    """The environment variables a field is read from, the current name first."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice).upper() for choice in alias.choices)
    if isinstance(alias, str):
        return (alias.upper(),)
    return (name.upper(),)
