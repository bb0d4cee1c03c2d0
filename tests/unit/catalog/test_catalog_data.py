"""The shipped catalog: the reference's 145 models, aliases and retired ids, word for word."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from image_router.catalog.loader import load_catalog
from image_router.catalog.pricing import (
    PriceFacts,
    PricingError,
    price_range,
    public_pricing,
    quote,
)
from image_router.catalog.spec import Catalog, ModelSpec


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_counts_and_registry_order(catalog: Catalog) -> None:
    ids = list(catalog.models)
    images = [m.id for m in catalog.models.values() if m.modality == "image"]
    videos = [m.id for m in catalog.models.values() if m.modality == "video"]
    assert (len(images), len(videos)) == (115, 30)
    assert ids == images + videos
    assert ids[:4] == [
        "black-forest-labs/FLUX-1.1-pro",
        "black-forest-labs/FLUX-1-schnell",
        "black-forest-labs/FLUX-1-schnell:free",
        "black-forest-labs/FLUX-1-dev",
    ]
    assert images[-3:] == ["philz1337x/clarity-2x", "tencent/hunyuan-image-3", "zai/glm-image"]
    assert videos[:2] == ["google/veo-2", "google/veo-3"]
    assert videos[-2:] == ["xAI/grok-imagine-video", "ir/test-video"]


def test_free_models(catalog: Catalog) -> None:
    assert [m.id for m in catalog.models.values() if m.free] == [
        "black-forest-labs/FLUX-1-schnell:free",
        "black-forest-labs/FLUX-2-klein-4b:free",
        "stabilityai/sdxl-turbo:free",
        "openai/gpt-image-1.5:free",
        "Tongyi-MAI/Z-Image-Turbo:free",
        "HiDream-ai/HiDream-I1-Full:free",
        "lodestones/Chroma:free",
        "qwen/qwen-image:free",
    ]
    for model in catalog.models.values():
        if model.free:
            assert all(price_range(r.price) == (0, 0, 0) for r in model.routes), model.id


def test_aliases(catalog: Catalog) -> None:
    assert dict(catalog.aliases) == {
        "briaai/RMBG-2.0": "bria/remove-background",
        "briaai/RMBG-2.0:free": "bria/remove-background:free",
        "google/gemini-2.5-flash-image": "google/gemini-2.5-flash",
        "gemini-2.5-flash-image": "google/gemini-2.5-flash",
        "google/gemini-3-pro-image": "google/gemini-3-pro",
        "gemini-3-pro-image": "google/gemini-3-pro",
        "kwaivgi/kling-2.5-turbo-standard": "kling/kling-2.5-turbo-standard",
        "kwaivgi/kling-2.5-turbo-pro": "kling/kling-2.5-turbo-pro",
        "kwaivgi/kling-2.1-standard": "kling/kling-2.1-standard",
        "kwaivgi/kling-2.1-pro": "kling/kling-2.1-pro",
        "kwaivgi/kling-2.1-master": "kling/kling-2.1-master",
        "kwaivgi/kling-1.6-standard": "kling/kling-1.6-standard",
        "kwaivgi/wan-2.2": "wan/wan-2.2",
        "kwaivgi/wan-2.5": "wan/wan-2.5",
        "kwaivgi/wan-2.6": "wan/wan-2.6",
    }
    assert catalog.resolve("gemini-3-pro-image") == "google/gemini-3-pro"
    assert catalog.resolve("openai/gpt-image-1") == "openai/gpt-image-1"
    # The one dangling alias: it resolves, and the resolved id is not a model.
    assert catalog.get(catalog.resolve("briaai/RMBG-2.0:free")) is None


def test_retired_messages(catalog: Catalog) -> None:
    paid = "This free model is no longer available. Please switch to the paid alternative: "
    assert dict(catalog.retired) == {
        "google/gemini-2.0-flash-exp:free": "Gemini 2.0 Flash is no longer available. Please "
        "switch to 'google/gemini-2.5-flash' (paid) or use other models instead.",
        "google/gemini-2.5-flash:free": "The free trial is over for this model. Please switch "
        "to 'google/gemini-2.5-flash' (paid) or use other models instead.",
        "stabilityai/sd3.5-medium": "SD3.5 medium is no longer available. Available "
        "alternative: 'stabilityai/sd3.5'",
        "ByteDance/InfiniteYou:free": "InfiniteYou is no longer available.",
        "ByteDance/InfiniteYou": "InfiniteYou is no longer available.",
        "bria/blur-background:free": paid + "'bria/blur-background'.",
        "bria/bria-3.2:free": paid + "'bria/bria-3.2'.",
        "bria/bria-3.2-vector:free": paid + "'bria/bria-3.2-vector'.",
        "bria/enhance:free": paid + "'bria/enhance'.",
        "bria/erase-foreground:free": paid + "'bria/erase-foreground'.",
    }


def _default_facts(model: ModelSpec, size: str) -> PriceFacts:
    return PriceFacts(
        size=size,
        quality="auto",
        image_count=0,
        prompt_chars=len("a cat"),
        seconds=model.resolve_seconds("auto"),
    )


def test_every_route_quotes_its_default_job(catalog: Catalog) -> None:
    for model in catalog.models.values():
        for route in model.routes:
            facts = _default_facts(model, "auto")
            if route.price.rule == "hunyuan_video":
                with pytest.raises(PricingError, match=r"^Invalid size for Hunyuan Video 1\.5"):
                    quote(route.price, facts)
            else:
                assert quote(route.price, facts) >= 0, model.id
            if model.sizes:
                assert quote(route.price, _default_facts(model, model.sizes[0])) >= 0, model.id


def test_public_pricing_matches_the_reference_json(catalog: Catalog) -> None:
    gpt = catalog.models["openai/gpt-image-1"]
    assert [(r.provider, r.upstream, public_pricing(r.price)) for r in gpt.routes] == [
        (p["id"], p["model_name"], p["pricing"])
        for p in json.loads(
            '[{"id":"runware","model_name":"openai:1@1","pricing":{"type":"post_generation",'
            '"range":{"min":0.011,"average":0.167,"max":0.3}}},{"id":"openai","model_name":'
            '"gpt-image-1","pricing":{"type":"post_generation","range":{"min":0.011,'
            '"average":0.167,"max":0.3}}},{"id":"nanogpt","model_name":"gpt-image-1",'
            '"pricing":{"type":"post_generation","range":{"min":0.011,"average":0.167,'
            '"max":0.3}}}]'
        )
    ]
    dalle3 = catalog.models["openai/dall-e-3"].routes[0].price
    assert public_pricing(dalle3) == {
        "type": "calculated",
        "range": {"min": 0.04, "average": 0.04, "max": 0.12},
    }
    test = public_pricing(catalog.models["test/test"].routes[0].price)
    assert json.dumps(test) == '{"type": "fixed", "value": 0}'
    hunyuan = catalog.models["tencent/hunyuan-video-1.5"].routes[0].price
    assert public_pricing(hunyuan) == {"type": "calculated", "value": 0.2}
    gemini = catalog.models["google/gemini-2.5-flash"].routes[0].price
    assert public_pricing(gemini) == {"type": "post_generation", "value": 0.035}


def test_inputs_flags_come_from_the_first_route(catalog: Catalog) -> None:
    # The reference reports mask:false for gpt-image-1: its first route (runware) has none.
    assert catalog.models["openai/gpt-image-1"].inputs() == {
        "image": True,
        "mask": False,
        "quality": True,
        "size": ["auto", "1024x1024", "1536x1024", "1024x1536"],
    }
    assert catalog.models["test/test"].inputs() == {
        "image": True,
        "mask": True,
        "quality": True,
        "size": ["custom"],
    }
    veo = catalog.models["google/veo-3"]
    assert veo.inputs()["seconds"] == [4, 6, 8]
    assert (veo.inputs()["image"], veo.inputs()["quality"]) == (True, False)


def test_quality_mappings(catalog: Catalog) -> None:
    schnell = catalog.models["black-forest-labs/FLUX-1-schnell"].routes[0]
    assert [schnell.resolve(q)["steps"] for q in ("auto", "low", "medium", "high")] == [4, 1, 4, 8]
    assert schnell.resolve("low")["strength"] == 0.8

    runware_gpt, openai_gpt, _ = catalog.models["openai/gpt-image-1"].routes
    assert runware_gpt.resolve("auto") == {"openai_quality": None}
    assert runware_gpt.resolve("high") == {"openai_quality": "high"}
    assert openai_gpt.resolve("auto") == {"quality": "auto"}

    dalle2 = catalog.models["openai/dall-e-2"].routes[0]
    assert dalle2.resolve("high") == {"quality": None}
    dalle3 = catalog.models["openai/dall-e-3"].routes[0]
    assert [dalle3.resolve(q)["quality"] for q in ("auto", "medium", "high")] == [
        "standard",
        "standard",
        "hd",
    ]

    ideogram = catalog.models["ideogram-ai/ideogram-v3"].routes[0]
    assert ideogram.resolve("low")["upstream"] == "ideogram-ai/ideogram-v3-turbo"
    assert ideogram.resolve("auto")["upstream"] == "ideogram-ai/ideogram-v3-balanced"
    assert "model" not in ideogram.resolve("low")


def test_free_model_refusals(catalog: Catalog) -> None:
    free_gpt = catalog.models["openai/gpt-image-1.5:free"]
    message = (
        "High and medium quality are available in the paid model. "
        "For this free model, please use 'low' quality."
    )
    for route in free_gpt.routes:
        assert route.refusal("high") == message
        assert route.refusal("medium") == message
        assert route.refusal("auto") is None
        assert route.refusal("low") is None
    assert free_gpt.routes[1].resolve("auto") == {"quality": "low"}

    schnell = catalog.models["black-forest-labs/FLUX-1-schnell:free"].routes[0]
    assert schnell.refusal("medium") == (
        "Free model only supports 'low' quality. Please use the paid model "
        "'black-forest-labs/FLUX-1-schnell' for higher quality."
    )
    assert schnell.resolve("auto") == {"num_inference_steps": 1}

    klein = catalog.models["black-forest-labs/FLUX-2-klein-4b:free"].routes[0]
    assert klein.refusal("high") is not None
    assert klein.refusal("medium") is None
    assert (klein.max_images, klein.resolve("auto")["steps"]) == (1, 4)
    assert klein.options["max_images_message"].startswith("Free model only supports one input")


def test_image_inputs_and_switches(catalog: Catalog) -> None:
    seedream = catalog.models["bytedance/seedream-3"].routes
    assert [(r.provider, r.image_input, r.max_images) for r in seedream] == [
        ("runware", "reference_images", 16),
        ("nanogpt", "nanogpt_data_urls", 16),
        ("fal", "fal_image_url", 1),
    ]
    assert seedream[0].options["image_upstream"] == "bytedance:4@1"
    sd35 = catalog.models["stabilityai/sd3.5"].routes[0]
    assert (sd35.image_input, sd35.max_images, sd35.mask) == (None, 0, False)
    for model in catalog.models.values():
        if model.modality == "video":
            assert all(r.max_images <= 1 for r in model.routes), model.id


def test_video_seconds(catalog: Catalog) -> None:
    veo = catalog.models["google/veo-3"]
    assert (veo.seconds, veo.default_seconds) == ((4, 6, 8), 4)
    assert veo.resolve_seconds("auto") == 4
    assert veo.resolve_seconds(None) == 4
    assert veo.resolve_seconds(6) == 6
    assert veo.resolve_seconds("8") == 8
    assert veo.resolve_seconds(7) == 4  # valid but unlisted: silently the default
    ltx = catalog.models["lightricks/ltx-2"]
    assert ltx.resolve_seconds(1.2) == 1.2
    assert catalog.models["openai/gpt-image-1"].resolve_seconds("auto") is None
    test_video = catalog.models["ir/test-video"]
    assert (test_video.seconds, test_video.routes[0].image_input) == ((5,), "passthrough")
    assert quote(test_video.routes[0].price, _default_facts(test_video, "auto")) == Decimal(0)
