"""The provider registry: one line per vendor adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from image_router.providers.chutes import ChutesProvider
from image_router.providers.contract import Provider
from image_router.providers.deepinfra import DeepInfraProvider
from image_router.providers.fal import FalProvider
from image_router.providers.gemini import GeminiProvider
from image_router.providers.gemini_imagen import GeminiImagenProvider
from image_router.providers.grok import GrokProvider
from image_router.providers.nanogpt import NanoGPTProvider
from image_router.providers.openai import OpenAIProvider
from image_router.providers.openrouter import OpenRouterProvider
from image_router.providers.replicate import ReplicateProvider
from image_router.providers.runware import RunwareProvider
from image_router.providers.test import TestProvider
from image_router.providers.together import TogetherProvider
from image_router.providers.vertex import VertexProvider
from image_router.providers.wavespeed import WavespeedProvider
from image_router.providers.zai import ZaiProvider

PROVIDERS: Final[Mapping[str, type[Provider]]] = {
    cls.id: cls
    for cls in (
        TestProvider,
        OpenAIProvider,
        DeepInfraProvider,
        TogetherProvider,
        ChutesProvider,
        VertexProvider,
        NanoGPTProvider,
        OpenRouterProvider,
        FalProvider,
        ZaiProvider,
        GrokProvider,
        ReplicateProvider,
        WavespeedProvider,
        GeminiProvider,
        GeminiImagenProvider,
        RunwareProvider,
    )
}
