"""The provider registry: one line per vendor adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from image_router.providers.base import Provider
from image_router.providers.openai import OpenAIProvider
from image_router.providers.test import TestProvider

PROVIDERS: Final[Mapping[str, type[Provider]]] = {
    cls.id: cls
    for cls in (
        TestProvider,
        OpenAIProvider,
    )
}
