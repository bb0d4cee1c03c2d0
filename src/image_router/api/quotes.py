"""`GET /v1/models/{id}/quote`: what a request would cost, from the code that charges it.

Included before the model listings in app.py: `/v1/models/{id}` takes every path below
`/v1/models/`, ids containing `/` themselves.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from image_router.api.deps import ResourcesDep
from image_router.generation.quotes import MAX_QUOTED_IMAGES, Quote, quote_request
from image_router.kit.money import format_usd, usd_number

router = APIRouter()


class QuoteAnswer(BaseModel):
    model: str = Field(description="The model id (an alias resolved).")
    cost: float = Field(
        description="USD, as the generation's `cost` reports it: what is charged when "
        "`exact`, else the most that can be charged."
    )
    usd: str = Field(description="The same amount as a 4-decimal USD string.")
    credits: int = Field(description="The same amount in credits (units of $0.0001).")
    exact: bool = Field(
        description="true: the generation charges exactly this; false: the vendor reports "
        "the cost afterwards and this is the most that is held and charged."
    )
    pricing_type: Literal["fixed", "calculated", "post_generation"]
    provider: str = Field(description="The vendor a generation would try first.")
    size: str
    quality: str
    seconds: float | None = Field(description="Video seconds, snapped to the model's list.")
    images: int
    n: int
    available: bool = Field(
        description="false: no vendor of this model is configured on this server (the "
        "price is the catalog's)."
    )


def answer(q: Quote) -> dict[str, Any]:
    return {
        "model": q.model,
        "cost": usd_number(q.credits),
        "usd": format_usd(q.credits),
        "credits": q.credits,
        "exact": q.exact,
        "pricing_type": q.pricing_type,
        "provider": q.provider,
        "size": q.size,
        "quality": q.quality,
        "seconds": q.seconds,
        "images": q.images,
        "n": q.n,
        "available": q.available,
    }


@router.get(
    "/v1/models/{model_id:path}/quote",
    response_model=QuoteAnswer,
    summary="Price of a request",
    description="What a generation with these parameters costs, computed by the pricing "
    "code that charges it (no key needed). A parameter the generation would refuse is "
    "refused here with the same 400 message.",
)
async def quote_model(
    model_id: str,
    res: ResourcesDep,
    size: Annotated[str, Query(max_length=32, description="`auto` or WIDTHxHEIGHT")] = "auto",
    quality: Annotated[str, Query(max_length=16, description="auto, low, medium, high")] = "auto",
    seconds: Annotated[str | None, Query(max_length=16, description="video seconds")] = None,
    images: Annotated[int, Query(ge=0, le=MAX_QUOTED_IMAGES, description="input images sent")] = 0,
    n: Annotated[int, Query(ge=1, le=100, description="images asked for")] = 1,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"size": size, "quality": quality, "n": n}
    if seconds is not None:
        fields["seconds"] = seconds
    return answer(quote_request(res.catalog, res.enabled, model_id, fields, images=images))
