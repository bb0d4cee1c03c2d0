"""Price rules: a closed set of small, exact formulas in USD.

Every route of the catalog names one rule (the TOML `price` table, discriminated by
`rule`). `quote` is what the gateway holds before the upstream call (the most the job
can cost), `settle` what is owed once the vendor answered; the gateway charges
`min(settle, quote)`. Arithmetic is `Decimal` throughout: the reference's float
artefacts (e.g. veo-3 for 6 s costing 2.4001) are deliberately not reproduced.
Converting USD to credits happens elsewhere, in `kit.money.usd_to_credits`.

A formula that fits no rule here earns a new rule class and tests, never a lambda.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeVar

from image_router.kit.sizes import parse_size

WILDCARD = "*"
"""Key of the fallback entry in a rule's lookup tables (any other size / quality)."""

_MILLION = Decimal(1_000_000)
_T = TypeVar("_T")


class PricingError(ValueError):
    """The job cannot be priced (the reference refuses it before charging)."""


@dataclass(frozen=True)
class PriceFacts:
    """What is known before the upstream call."""

    size: str
    quality: str
    image_count: int
    prompt_chars: int  # UTF-16 code units, like JavaScript's `.length`
    seconds: float | None  # resolved video seconds; None for images
    outputs: int = 1  # images asked for (`n`); the vendor makes them in one call


@dataclass(frozen=True)
class PriceOutcome:
    """What the vendor reported after a successful call."""

    output_count: int
    usage: Mapping[str, Any] | None = None
    reported_cost: Decimal | None = None
    predict_seconds: Decimal | None = None


@dataclass(frozen=True)
class PriceRange:
    """The published min / average / max of a route (`/v1/models`, `/v2/models`)."""

    min: Decimal
    average: Decimal
    max: Decimal


# ------------------------------------------------------------------------ the rules


@dataclass(frozen=True, kw_only=True)
class Fixed:
    rule: Literal["fixed"] = "fixed"
    usd: Decimal


@dataclass(frozen=True, kw_only=True)
class PerOutput:
    """A price per produced image (reference =GEM25); quoted for the `n` outputs asked."""

    rule: Literal["per_output"] = "per_output"
    usd: Decimal


@dataclass(frozen=True, kw_only=True)
class Published:
    """What the reference publishes for a route whose price varies: a range or a value.

    Rules whose price is only known afterwards quote the published maximum (or value).
    """

    range: PriceRange | None = None
    value: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class UpstreamCost(Published):
    """Vendor-reported cost (reference =PS)."""

    rule: Literal["upstream_cost"] = "upstream_cost"


@dataclass(frozen=True, kw_only=True)
class UpstreamCostMarkup(Published):
    """Vendor-reported cost times a factor (reference =PN10 ×1.1, =PN5 ×1.05)."""

    rule: Literal["upstream_cost_markup"] = "upstream_cost_markup"
    factor: Decimal


@dataclass(frozen=True, kw_only=True)
class Gemini3(Published):
    """Gemini 3 Pro Image: input images + prompt characters + outputs (=GEM3)."""

    rule: Literal["gemini3"] = "gemini3"
    image_usd: Decimal
    million_chars_usd: Decimal
    output_usd: Mapping[str, Decimal]  # by size; WILDCARD for other sizes and "auto"


TokenTable = Literal["gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"]

# USD per token: (input text, input image, output), OpenAI's published rates.
TOKEN_RATES: Mapping[str, tuple[Decimal, Decimal, Decimal]] = {
    "gpt-image-1": (Decimal("0.000005"), Decimal("0.00001"), Decimal("0.00004")),
    "gpt-image-1-mini": (
        Decimal("0.000002"),
        Decimal("0.0000025"),
        Decimal("0.000008"),
    ),
    "gpt-image-1.5": (Decimal("0.000005"), Decimal("0.000008"), Decimal("0.000032")),
}


@dataclass(frozen=True, kw_only=True)
class OpenAITokens(Published):
    """OpenAI token usage priced with a named rate table (=OAI1/OAI1M/OAI15)."""

    rule: Literal["openai_tokens"] = "openai_tokens"
    table: TokenTable


@dataclass(frozen=True, kw_only=True)
class ReplicatePredictTime(Published):
    """Replicate `predict_time` seconds × a per-second rate (reference =REPH100)."""

    rule: Literal["replicate_predict_time"] = "replicate_predict_time"
    usd_per_second: Decimal


@dataclass(frozen=True, kw_only=True)
class BySize(Published):
    """Price looked up by size (reference =DALLE2)."""

    rule: Literal["by_size"] = "by_size"
    usd: Mapping[str, Decimal]


@dataclass(frozen=True, kw_only=True)
class BySizeAndQuality(Published):
    """Price looked up by quality, then size (reference =DALLE3)."""

    rule: Literal["by_size_and_quality"] = "by_size_and_quality"
    usd: Mapping[str, Mapping[str, Decimal]]


@dataclass(frozen=True, kw_only=True)
class ByQuality(Published):
    """Price looked up by quality (reference =IDEO2A, =IDEO3)."""

    rule: Literal["by_quality"] = "by_quality"
    usd: Mapping[str, Decimal]


@dataclass(frozen=True, kw_only=True)
class Reve(Published):
    """Reve: create (no image), edit (one image; `low` → edit-fast), remix (several)."""

    rule: Literal["reve"] = "reve"
    create_usd: Decimal
    edit_usd: Decimal
    edit_low_usd: Decimal
    remix_usd: Decimal


@dataclass(frozen=True, kw_only=True)
class FalMegapixels(Published):
    """(1 MP if an image is uploaded + output megapixels) × rate (reference =FALF2T)."""

    rule: Literal["fal_megapixels"] = "fal_megapixels"
    usd_per_megapixel: Decimal
    auto_size: str


@dataclass(frozen=True, kw_only=True)
class GrokImage(Published):
    """Base price + a surcharge per input image (=GROKIMG, surcharge fixed)."""

    rule: Literal["grok_image"] = "grok_image"
    usd: Decimal
    image_usd: Decimal


@dataclass(frozen=True, kw_only=True)
class PerSecond(Published):
    """Rate × resolved video seconds (reference =VID(r))."""

    rule: Literal["per_second"] = "per_second"
    usd: Decimal


@dataclass(frozen=True, kw_only=True)
class HunyuanVideo(Published):
    """Per-second rate by size; any other size cannot be priced (reference =HUNYUAN)."""

    rule: Literal["hunyuan_video"] = "hunyuan_video"
    usd_per_second: Mapping[str, Decimal]


@dataclass(frozen=True, kw_only=True)
class GrokVideo(Published):
    """Per-second rate by resolution + input image surcharge (=GROKVID, fixed)."""

    rule: Literal["grok_video"] = "grok_video"
    usd_per_second: Mapping[str, Decimal]  # "480p" / "720p"
    image_usd: Decimal


PriceRule = (
    Fixed
    | PerOutput
    | UpstreamCost
    | UpstreamCostMarkup
    | Gemini3
    | OpenAITokens
    | ReplicatePredictTime
    | BySize
    | BySizeAndQuality
    | ByQuality
    | Reve
    | FalMegapixels
    | GrokImage
    | PerSecond
    | HunyuanVideo
    | GrokVideo
)

RULE_CLASSES: Mapping[str, type[PriceRule]] = {
    cls.rule: cls
    for cls in (
        Fixed,
        PerOutput,
        UpstreamCost,
        UpstreamCostMarkup,
        Gemini3,
        OpenAITokens,
        ReplicatePredictTime,
        BySize,
        BySizeAndQuality,
        ByQuality,
        Reve,
        FalMegapixels,
        GrokImage,
        PerSecond,
        HunyuanVideo,
        GrokVideo,
    )
}

# Rules whose price is only known after the call: the reference's "post_generation".
_AFTER_THE_FACT = (
    UpstreamCost,
    UpstreamCostMarkup,
    PerOutput,
    Gemini3,
    OpenAITokens,
    ReplicatePredictTime,
)

# xAI's video resolution by requested size (`wrongGrokVideoSizeToAspectRatio` of the
# reference); any other size, and "auto", is 720p.
GROK_VIDEO_480P_SIZES = frozenset(
    {"848x480", "640x480", "720x480", "480x480", "480x720", "480x640", "480x848"}
)


def grok_video_resolution(size: str) -> str:
    return "480p" if size in GROK_VIDEO_480P_SIZES else "720p"


# ------------------------------------------------------------------- quote / settle


def quote(rule: PriceRule, facts: PriceFacts) -> Decimal:
    """USD held before the upstream call: the most this job can cost (all `n` outputs)."""
    return _quote_one(rule, facts) * facts.outputs


def _quote_one(rule: PriceRule, facts: PriceFacts) -> Decimal:
    """The most one output of this job can cost."""
    match rule:
        case Fixed(usd=usd) | PerOutput(usd=usd):
            return usd
        case UpstreamCost() | UpstreamCostMarkup() | OpenAITokens() | ReplicatePredictTime():
            return _published_max(rule)
        case Gemini3():
            # Hold at least the published max, like the reference; more only when the
            # inputs alone push a single output past it.
            return max(_published_max(rule), _gemini3(rule, facts, outputs=1))
        case BySize(usd=table):
            return _lookup(table, facts.size)
        case BySizeAndQuality(usd=tables):
            return _lookup(_lookup(tables, facts.quality), facts.size)
        case ByQuality(usd=table):
            return _lookup(table, facts.quality)
        case Reve():
            return _reve(rule, facts)
        case FalMegapixels():
            return _fal_megapixels(rule, facts)
        case GrokImage(usd=usd, image_usd=image_usd):
            return usd + image_usd * facts.image_count
        case PerSecond(usd=usd):
            return usd * _seconds(facts)
        case HunyuanVideo(usd_per_second=table):
            if facts.size not in table:
                raise PricingError("Invalid size for Hunyuan Video 1.5 - price calculation failed")
            return table[facts.size] * _seconds(facts)
        case GrokVideo(usd_per_second=table, image_usd=image_usd):
            surcharge = image_usd if facts.image_count > 0 else Decimal(0)
            return surcharge + table[grok_video_resolution(facts.size)] * _seconds(facts)
    raise AssertionError(f"unknown price rule {rule!r}")


def settle(rule: PriceRule, facts: PriceFacts, outcome: PriceOutcome) -> Decimal:
    """USD owed after a successful call; when the vendor reported nothing, the quote."""
    match rule:
        case UpstreamCost():
            cost = outcome.reported_cost
            return quote(rule, facts) if cost is None else cost
        case UpstreamCostMarkup(factor=factor):
            cost = outcome.reported_cost
            return quote(rule, facts) if cost is None else cost * factor
        case PerOutput(usd=usd):
            return usd * outcome.output_count
        case Gemini3():
            return _gemini3(rule, facts, outputs=outcome.output_count)
        case OpenAITokens(table=table):
            tokens = _token_counts(outcome.usage)
            if tokens is None:
                return quote(rule, facts)
            rates = TOKEN_RATES[table]
            return sum((r * n for r, n in zip(rates, tokens, strict=True)), Decimal(0))
        case ReplicatePredictTime(usd_per_second=rate):
            elapsed = outcome.predict_seconds
            return quote(rule, facts) if elapsed is None else elapsed * rate
    # Priced per output: a vendor that made fewer than `n` is paid for what it made.
    delivered = min(max(outcome.output_count, 1), facts.outputs)
    return _quote_one(rule, facts) * delivered


def _published_max(rule: PriceRule) -> Decimal:
    return price_range(rule)[2]


def _seconds(facts: PriceFacts) -> Decimal:
    if facts.seconds is None:
        raise PricingError("video seconds are required to price this model")
    # str() keeps 1.2 as Decimal("1.2") rather than its binary expansion.
    return Decimal(str(facts.seconds))


def _lookup(table: Mapping[str, _T], key: str) -> _T:
    return table[key] if key in table else table[WILDCARD]


def _gemini3(rule: Gemini3, facts: PriceFacts, *, outputs: int) -> Decimal:
    inputs = rule.image_usd * facts.image_count
    inputs += Decimal(facts.prompt_chars) * rule.million_chars_usd / _MILLION
    return inputs + _lookup(rule.output_usd, facts.size) * outputs


def _reve(rule: Reve, facts: PriceFacts) -> Decimal:
    if facts.image_count == 0:
        return rule.create_usd
    if facts.image_count == 1:
        return rule.edit_low_usd if facts.quality == "low" else rule.edit_usd
    return rule.remix_usd


def _fal_megapixels(rule: FalMegapixels, facts: PriceFacts) -> Decimal:
    dims = parse_size(facts.size) or parse_size(rule.auto_size)
    assert dims is not None  # auto_size is validated as a concrete size at load time
    megapixels = Decimal(dims[0] * dims[1]) / _MILLION
    if facts.image_count > 0:
        megapixels += 1
    return megapixels * rule.usd_per_megapixel


def _token_counts(usage: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """(text in, image in, out) tokens, or None when the usage block is incomplete."""
    if usage is None:
        return None
    try:
        details = usage["input_tokens_details"]
        counts = (details["text_tokens"], details["image_tokens"], usage["output_tokens"])
    except (KeyError, TypeError):
        return None
    if all(type(n) is int and n >= 0 for n in counts):
        return counts
    return None


# ------------------------------------------------------------------------ publishing


def price_range(rule: PriceRule) -> tuple[Decimal, Decimal, Decimal]:
    """(min, average, max) USD as published for the route."""
    if isinstance(rule, Fixed | PerOutput):
        return rule.usd, rule.usd, rule.usd
    if rule.range is not None:
        return rule.range.min, rule.range.average, rule.range.max
    if rule.value is not None:
        return rule.value, rule.value, rule.value
    computed = computed_range(rule)
    if computed is None:
        raise PricingError(f"price rule '{rule.rule}' needs a published range or value")
    return computed


def computed_range(rule: PriceRule) -> tuple[Decimal, Decimal, Decimal] | None:
    """The range implied by a lookup-table rule (its fallback entry is the average)."""
    match rule:
        case BySize(usd=table) | ByQuality(usd=table):
            prices = list(table.values())
            return min(prices), table[WILDCARD], max(prices)
        case BySizeAndQuality(usd=tables):
            prices = [p for table in tables.values() for p in table.values()]
            return min(prices), tables[WILDCARD][WILDCARD], max(prices)
    return None


def pricing_type(rule: PriceRule) -> str:
    """The reference's pricing `type`: fixed, calculated or post_generation."""
    if isinstance(rule, Fixed):
        return "fixed"
    if isinstance(rule, _AFTER_THE_FACT):
        return "post_generation"
    return "calculated"


def public_pricing(rule: PriceRule) -> dict[str, Any]:
    """The route's `pricing` object exactly as the reference's `/v1/models` shows it."""
    kind = pricing_type(rule)
    if isinstance(rule, Fixed | PerOutput):
        return {"type": kind, "value": json_number(rule.usd)}
    if rule.range is None and rule.value is not None:
        return {"type": kind, "value": json_number(rule.value)}
    low, average, high = price_range(rule)
    return {
        "type": kind,
        "range": {
            "min": json_number(low),
            "average": json_number(average),
            "max": json_number(high),
        },
    }


def json_number(value: Decimal | float) -> int | float:
    """A number for JSON output: integral values as int (`0`, `5`), others as float."""
    number = Decimal(str(value)) if isinstance(value, float) else value
    if number == number.to_integral_value():
        return int(number)
    return float(number)
