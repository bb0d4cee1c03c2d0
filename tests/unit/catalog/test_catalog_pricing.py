"""Price rules against the reference's formulas, worked out by hand as exact decimals."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from image_router.catalog.loader import load_catalog
from image_router.catalog.pricing import (
    ByQuality,
    BySizeAndQuality,
    Fixed,
    GrokVideo,
    OpenAITokens,
    PriceFacts,
    PriceOutcome,
    PricingError,
    UpstreamCost,
    json_number,
    price_range,
    pricing_type,
    public_pricing,
    quote,
    settle,
)
from image_router.catalog.spec import Catalog

CATALOG: Catalog = load_catalog()


def facts(
    size: str = "auto",
    quality: str = "auto",
    images: int = 0,
    chars: int = 5,
    seconds: float | None = None,
) -> PriceFacts:
    return PriceFacts(
        size=size, quality=quality, image_count=images, prompt_chars=chars, seconds=seconds
    )


def usage(text: int, image: int, output: int) -> dict[str, Any]:
    return {
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
    }


ONE = PriceOutcome(output_count=1)

# (model, route number, facts, outcome, expected quote, expected settle)
CASES: list[tuple[str, int, PriceFacts, PriceOutcome, D, D]] = [
    # OAI1: 0.000005·text + 0.00001·image + 0.00004·output; hold the published max
    (
        "openai/gpt-image-1", 2, facts(), PriceOutcome(1, usage=usage(50, 0, 4160)),
        D("0.3"), D("0.000005") * 50 + D("0.00004") * 4160,
    ),
    (
        "openai/gpt-image-1", 2, facts(images=1), PriceOutcome(1, usage=usage(12, 388, 1056)),
        D("0.3"), D("0.000005") * 12 + D("0.00001") * 388 + D("0.00004") * 1056,
    ),
    # OAI1M and OAI15 rate tables
    (
        "openai/gpt-image-1-mini", 2, facts(), PriceOutcome(1, usage=usage(20, 100, 1000)),
        D("0.0569"), D("0.000002") * 20 + D("0.0000025") * 100 + D("0.000008") * 1000,
    ),
    (
        "openai/gpt-image-1.5", 2, facts(), PriceOutcome(1, usage=usage(10, 500, 2000)),
        D("0.2"), D("0.000005") * 10 + D("0.000008") * 500 + D("0.000032") * 2000,
    ),
    # no usage reported: the quote stands
    ("openai/gpt-image-1", 2, facts(), ONE, D("0.3"), D("0.3")),
    # PN10: nanogpt cost × 1.1; PN5: × 1.05
    (
        "openai/gpt-image-1", 3, facts(), PriceOutcome(1, reported_cost=D("0.04")),
        D("0.3"), D("0.044"),
    ),
    (
        "leonardoai/lucid-origin", 2, facts(), PriceOutcome(1, reported_cost=D("0.03")),
        D("0.03"), D("0.0315"),
    ),
    (
        "tencent/hunyuan-image-3", 1, facts(), PriceOutcome(1, reported_cost=D("0.05")),
        D("0.05"), D("0.055"),
    ),
    # PS: the vendor's cost; the published max (or value) is held
    (
        "black-forest-labs/FLUX-1-schnell", 1, facts(), PriceOutcome(1, reported_cost=D("0.0013")),
        D("0.007"), D("0.0013"),
    ),
    ("black-forest-labs/FLUX-1-schnell", 1, facts(), ONE, D("0.007"), D("0.007")),
    (
        "black-forest-labs/FLUX-1.1-pro", 2, facts(), PriceOutcome(1, reported_cost=D("0.04")),
        D("0.04"), D("0.04"),
    ),
    # REPH100: predict_time × 0.001525
    (
        "Tongyi-MAI/Z-Image-Turbo", 2, facts(), PriceOutcome(1, predict_seconds=D("7.5")),
        D("0.0667"), D("7.5") * D("0.001525"),
    ),
    ("Tongyi-MAI/Z-Image-Turbo", 2, facts(), ONE, D("0.0667"), D("0.0667")),
    # DALLE2 / DALLE3
    ("openai/dall-e-2", 1, facts("1536x1024"), ONE, D("0.02"), D("0.02")),
    ("openai/dall-e-2", 1, facts("1024x1536"), ONE, D("0.018"), D("0.018")),
    ("openai/dall-e-2", 1, facts("auto"), ONE, D("0.016"), D("0.016")),
    ("openai/dall-e-3", 1, facts("1792x1024", "high"), ONE, D("0.12"), D("0.12")),
    ("openai/dall-e-3", 1, facts("auto", "high"), ONE, D("0.08"), D("0.08")),
    ("openai/dall-e-3", 1, facts("1024x1792", "medium"), ONE, D("0.08"), D("0.08")),
    ("openai/dall-e-3", 1, facts("1024x1024", "low"), ONE, D("0.04"), D("0.04")),
    # FALF2T: ((image ? 1 : 0) + w·h/1e6) × 0.008, auto = 1024×1024
    ("fal/flux-2-dev-turbo", 1, facts(), ONE, D("0.008388608"), D("0.008388608")),
    (
        "fal/flux-2-dev-turbo", 1, facts("1536x1024", images=2), ONE,
        (1 + D(1536 * 1024) / 1_000_000) * D("0.008"),
        (1 + D(1536 * 1024) / 1_000_000) * D("0.008"),
    ),
    # GEM3: 0.0011·images + chars/1e6·2 + outputs·(4K ? 0.24 : 0.138)
    (
        "google/gemini-3-pro", 1, facts("4096x4096", images=2, chars=100), ONE,
        D("0.0011") * 2 + D(100) / 1_000_000 * 2 + D("0.24"),
        D("0.0011") * 2 + D(100) / 1_000_000 * 2 + D("0.24"),
    ),
    (
        "google/gemini-3-pro", 1, facts("2048x2048", chars=10), PriceOutcome(2),
        D("0.24"), D(10) / 1_000_000 * 2 + 2 * D("0.138"),
    ),
    # GEM25: 0.035 per produced image
    ("google/gemini-2.5-flash", 1, facts(), PriceOutcome(2), D("0.035"), D("0.07")),
    ("google/gemini-2.5-flash", 3, facts(), PriceOutcome(2), D("0.035"), D("0.035")),
    # IDEO2A, IDEO3
    ("ideogram-ai/ideogram-v2a", 1, facts(quality="low"), ONE, D("0.025"), D("0.025")),
    ("ideogram-ai/ideogram-v2a", 1, facts(quality="auto"), ONE, D("0.04"), D("0.04")),
    ("ideogram-ai/ideogram-v3", 1, facts(quality="low"), ONE, D("0.03"), D("0.03")),
    ("ideogram-ai/ideogram-v3", 1, facts(quality="high"), ONE, D("0.09"), D("0.09")),
    ("ideogram-ai/ideogram-v3", 1, facts(quality="auto"), ONE, D("0.06"), D("0.06")),
    # REVE: create / edit (low → fast) / remix
    ("reve/reve-1", 1, facts(), ONE, D("0.025"), D("0.025")),
    ("reve/reve-1", 1, facts(quality="low", images=1), ONE, D("0.01"), D("0.01")),
    ("reve/reve-1", 1, facts(quality="high", images=1), ONE, D("0.04"), D("0.04")),
    ("reve/reve-1", 1, facts(quality="low", images=3), ONE, D("0.04"), D("0.04")),
    # GROKIMG as intended: 0.02 + 0.002 per input image (the reference always said 0.02)
    ("xAI/grok-imagine-image", 2, facts(), ONE, D("0.02"), D("0.02")),
    ("xAI/grok-imagine-image", 2, facts(images=1), ONE, D("0.022"), D("0.022")),
    # VID(r): rate × resolved seconds — exact, not the reference's 2.4000000000000004
    ("google/veo-3", 1, facts(seconds=6), ONE, D("2.4"), D("2.4")),
    ("google/veo-3-fast", 1, facts(seconds=8), ONE, D("1.2"), D("1.2")),
    ("kling/kling-2.1-master", 2, facts(seconds=5), ONE, D("1.4"), D("1.4")),
    ("kling/kling-1.6-standard", 2, facts(seconds=10), ONE, D("0.5"), D("0.5")),
    # HUNYUAN: 0.02/s at 480p sizes, 0.04/s at 720p sizes
    ("tencent/hunyuan-video-1.5", 1, facts("832x480", seconds=8), ONE, D("0.16"), D("0.16")),
    ("tencent/hunyuan-video-1.5", 1, facts("720x1280", seconds=5), ONE, D("0.2"), D("0.2")),
    # GROKVID: (image ? 0.002 : 0) + (480p ? 0.05 : 0.07) × seconds
    ("xAI/grok-imagine-video", 2, facts("480x848", seconds=5), ONE, D("0.25"), D("0.25")),
    (
        "xAI/grok-imagine-video", 2, facts("1280x720", images=1, seconds=10), ONE,
        D("0.702"), D("0.702"),
    ),
    ("xAI/grok-imagine-video", 2, facts("auto", seconds=5), ONE, D("0.35"), D("0.35")),
    # fixed
    ("test/test", 1, facts(quality="high", images=2), ONE, D(0), D(0)),
    ("recraft-ai/recraft-v3", 1, facts(), ONE, D("0.04"), D("0.04")),
    ("ir/test-video", 1, facts(seconds=5), ONE, D(0), D(0)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "route", "job", "outcome", "held", "owed"),
    CASES,
    ids=[f"{c[0]}#{c[1]}-{i}" for i, c in enumerate(CASES)],
)
def test_quote_and_settle_follow_the_reference_formula(
    model: str, route: int, job: PriceFacts, outcome: PriceOutcome, held: D, owed: D
) -> None:
    rule = CATALOG.models[model].routes[route - 1].price
    assert quote(rule, job) == held
    assert settle(rule, job, outcome) == owed


def test_the_cases_cover_every_rule_of_the_catalog() -> None:
    used = {r.price.rule for m in CATALOG.models.values() for r in m.routes}
    covered = {CATALOG.models[c[0]].routes[c[1] - 1].price.rule for c in CASES}
    assert used == covered
    assert len(CASES) >= 30


def test_hunyuan_refuses_other_sizes() -> None:
    rule = CATALOG.models["tencent/hunyuan-video-1.5"].routes[0].price
    for size in ("auto", "1920x1080"):
        with pytest.raises(
            PricingError, match=r"^Invalid size for Hunyuan Video 1\.5 - price calculation failed$"
        ):
            quote(rule, facts(size, seconds=5))


def test_per_second_rules_need_seconds() -> None:
    rule = CATALOG.models["google/veo-3"].routes[0].price
    with pytest.raises(PricingError):
        quote(rule, facts())


@pytest.mark.parametrize(
    "bad_usage",
    [
        {"output_tokens": 100},
        {"input_tokens_details": {"text_tokens": 5}, "output_tokens": 100},
        {"input_tokens_details": {"text_tokens": 5, "image_tokens": "9"}, "output_tokens": 1},
        {"input_tokens_details": {"text_tokens": 5, "image_tokens": 0}, "output_tokens": -1},
        {"input_tokens_details": None, "output_tokens": 1},
    ],
)
def test_incomplete_token_usage_settles_at_the_quote(bad_usage: dict[str, Any]) -> None:
    rule = OpenAITokens(
        table="gpt-image-1", value=D("0.25")
    )  # a value-only published price is also a valid hold
    assert settle(rule, facts(), PriceOutcome(1, usage=bad_usage)) == D("0.25")


def test_pricing_types_and_numbers() -> None:
    assert pricing_type(Fixed(usd=D("0.04"))) == "fixed"
    assert pricing_type(UpstreamCost(value=D("0.04"))) == "post_generation"
    grok = GrokVideo(usd_per_second={"480p": D("0.05"), "720p": D("0.07")}, image_usd=D("0.002"))
    assert pricing_type(grok) == "calculated"
    with pytest.raises(PricingError):
        price_range(grok)  # neither published nor derivable from a table
    assert public_pricing(UpstreamCost(value=D("0.0006"))) == {
        "type": "post_generation",
        "value": 0.0006,
    }
    assert [json_number(x) for x in (D("0"), D("0.00"), D("5"), D("0.011"), 1.5)] == [
        0,
        0,
        5,
        0.011,
        1.5,
    ]
    assert isinstance(json_number(D("2.0")), int)


def test_range_derived_from_a_lookup_table() -> None:
    unpublished = BySizeAndQuality(
        usd={
            "high": {"1024x1024": D("0.08"), "*": D("0.12")},
            "*": {"1024x1024": D("0.04"), "*": D("0.06")},
        }
    )
    assert price_range(unpublished) == (D("0.04"), D("0.06"), D("0.12"))
    assert public_pricing(ByQuality(usd={"low": D("0.01"), "*": D("0.02")}))["range"] == {
        "min": 0.01,
        "average": 0.02,
        "max": 0.02,
    }
    # The reference's FLUX-2-klein-9b-base publishes min above average; kept as published.
    klein = CATALOG.models["black-forest-labs/FLUX-2-klein-9b-base"].routes[0].price
    assert price_range(klein) == (D("0.0084"), D("0.0042"), D("0.026"))


# (model, route number, size, n, outputs delivered, expected quote, expected settle)
N_CASES: list[tuple[str, int, str, int, int, D, D]] = [
    # by_size: n × the size's price held; a vendor that made fewer is paid for those only
    ("openai/dall-e-2", 1, "1024x1024", 3, 3, D("0.048"), D("0.048")),
    ("openai/dall-e-2", 1, "1024x1024", 3, 2, D("0.048"), D("0.032")),
    # after the fact: the published max for each output; the vendor's report is owed
    ("openai/gpt-image-1", 2, "auto", 2, 2, D("0.6"), D("0.6")),
    # per_output: held for n, settled per output actually made
    ("google/gemini-2.5-flash", 1, "auto", 2, 1, D("0.07"), D("0.035")),
]


@pytest.mark.parametrize(("model", "route", "size", "n", "made", "held", "owed"), N_CASES)
def test_n_outputs_multiply_the_hold(
    model: str, route: int, size: str, n: int, made: int, held: D, owed: D
) -> None:
    rule = CATALOG.models[model].routes[route - 1].price
    job = PriceFacts(size=size, quality="auto", image_count=0, prompt_chars=5, seconds=None)
    many = PriceFacts(**{**job.__dict__, "outputs": n})
    assert quote(rule, many) == held
    assert quote(rule, job) * n == held
    assert settle(rule, many, PriceOutcome(output_count=made)) == owed
