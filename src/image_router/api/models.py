"""Model listings and service health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from image_router.api.deps import ResourcesDep
from image_router.api.responses import json_response
from image_router.discovery import service
from image_router.errors import ModelNotFound

router = APIRouter()


@router.get("/v1/models")
async def list_models_v1(request: Request, res: ResourcesDep) -> Response:
    models = service.listed_models(
        res.catalog, res.enabled, list_all=res.settings.generation.list_all_models
    )
    return json_response(service.v1_listing(service.filter_and_sort(models, request.query_params)))


@router.get("/v2/models")
async def list_models_v2(request: Request, res: ResourcesDep) -> Response:
    models = service.listed_models(
        res.catalog, res.enabled, list_all=res.settings.generation.list_all_models
    )
    return json_response(service.v2_listing(service.filter_and_sort(models, request.query_params)))


@router.get("/v1/openai/images/models")
async def list_image_models_deprecated(res: ResourcesDep) -> Response:
    models = service.listed_models(
        res.catalog, res.enabled, list_all=res.settings.generation.list_all_models
    )
    return json_response(
        {
            spec.id: service.model_object(spec, routes)
            for spec, routes in models
            if spec.modality == "image"
        }
    )


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, res: ResourcesDep) -> Response:
    listed = {
        spec.id: (spec, routes)
        for spec, routes in service.listed_models(
            res.catalog, res.enabled, list_all=res.settings.generation.list_all_models
        )
    }
    if model_id not in listed:
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return json_response(service.model_object(*listed[model_id]))


@router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/v1/providers/status")
async def providers_status(res: ResourcesDep) -> Response:
    """Which vendors are configured, and the learned health of every route used so far."""
    snapshot = await res.health.snapshot()
    return json_response(
        {
            "providers": {pid: {"enabled": True, "reason": None} for pid in sorted(res.providers)}
            | {pid: {"enabled": False, "reason": why} for pid, why in sorted(res.disabled.items())},
            "routes": {key: health.as_dict() for key, health in sorted(snapshot.items())},
            "policy": {
                "failure_threshold": res.health.policy.failure_threshold,
                "cooldown_s": res.health.policy.cooldown_s,
                "shared": res.settings.storage.redis_url is not None,
            },
        }
    )
