"""Google Cloud Vertex AI: Imagen `:predict`, Gemini `:generateContent`, Veo long-running.

Every call goes to `{host}/v1/projects/{project}/locations/{location}/publishers/google/
models/{model}:{method}` with a service-account access token (`vertex_auth`). Veo jobs
(`vertex_veo`) are submitted with `:predictLongRunning` and polled with
`:fetchPredictOperation`; they are resumable (`providers.resume`, `vertex_veo.veo_ref`).
The mapping functions are pure; `VertexProvider` only moves them over HTTP. See spec §9.15.

Deliberate differences from the reference: input images precede the prompt in upload
order (the reference reversed them); Imagen gets an aspect ratio, 2K size and output
format from the job (the reference ignored size); a filtered or empty answer raises an
error instead of returning an empty, billed success.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from image_router.providers.contract import Artifact, Job, Provider, Result, Target
from image_router.providers.errors import (
    UpstreamMisconfiguredError,
    UpstreamUnavailableError,
    redact,
    response_json,
    translate_errors,
)
from image_router.providers.inflight import InFlight
from image_router.providers.resume import submit_or_resume
from image_router.providers.upstream_text import error_body, expect_object
from image_router.providers.vertex_auth import (
    DEFAULT_TOKEN_URL,
    AccessTokens,
    error_from_response,
    parse_service_account,
)
from image_router.providers.vertex_veo import (
    PROVIDER_ID,
    VeoJob,
    decode_media,
    from_operation,
    operation_name,
    protocol_error,
    rejected,
    required_field,
    veo_body,
    veo_from_ref,
    veo_ref,
    wait_for_operation,
)

DEFAULT_LOCATION = "us-central1"

IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGEN_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
SAFETY_SETTINGS = (
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"},
    {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "OFF"},
)
# Gemini stopped because of what was asked or drawn: another route would refuse it too.
REFUSAL_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


@dataclass(frozen=True)
class VertexRequest:
    """One call: the publisher `model`, the `method` after the colon and the JSON body."""

    model: str
    method: str
    body: dict[str, Any]


# ---------------------------------------------------------------------------- requests


def to_request(job: Job, target: Target) -> VertexRequest:
    """Pick the API by model family and map the job onto it."""
    model = target.upstream
    upstream = target.options.get("image_upstream")
    if job.images and isinstance(upstream, str) and upstream:
        model = upstream
    if job.mask is not None:
        raise rejected("Mask editing is not supported for this model", "mask_unsupported")
    if job.modality == "video":
        return VertexRequest(model, "predictLongRunning", veo_body(job, model))
    if "gemini" in model:
        return VertexRequest(model, "generateContent", gemini_body(job, model))
    if job.images:
        raise rejected("This model does not support image inputs", "image_unsupported")
    return VertexRequest(model, "predict", imagen_body(job, model))


def imagen_body(job: Job, model: str) -> dict[str, Any]:
    # includeRaiReason makes a filtered image come back as a reason, not as nothing.
    parameters: dict[str, Any] = {
        "sampleCount": 1,
        "safetySetting": "block_only_high",
        "includeRaiReason": True,
    }
    dims = job.dimensions
    if dims is not None:
        parameters["aspectRatio"] = nearest_ratio(dims, IMAGEN_RATIOS)
        if max(dims) > 1600:
            parameters["sampleImageSize"] = "2K"
    mime_type = IMAGEN_FORMATS.get(job.output_format or "")
    if mime_type is not None:
        parameters["outputOptions"] = {"mimeType": mime_type}
    return {"instances": [{"prompt": job.prompt}], "parameters": parameters}


def gemini_body(job: Job, model: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"inlineData": {"mimeType": image.content_type, "data": image.b64()}}
        for image in job.images
    ]
    parts.append({"text": job.prompt})
    config: dict[str, Any] = {"responseModalities": ["IMAGE"]}
    dims = job.dimensions
    if dims is not None:
        image_config = {"aspectRatio": nearest_ratio(dims, GEMINI_RATIOS)}
        if model.startswith("gemini-3"):
            image_config["imageSize"] = gemini_image_size(dims)
        config["imageConfig"] = image_config
    return {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": config,
        "safetySettings": [dict(setting) for setting in SAFETY_SETTINGS],
    }


def nearest_ratio(dims: tuple[int, int], ratios: tuple[str, ...]) -> str:
    """The supported aspect ratio closest to width:height (compared on a log scale)."""
    target = math.log(dims[0] / dims[1])

    def distance(ratio: str) -> float:
        width, height = ratio.split(":")
        return abs(math.log(float(width) / float(height)) - target)

    return min(ratios, key=distance)


def gemini_image_size(dims: tuple[int, int]) -> str:
    """Gemini 3's output tier: 1K sides stay under ~1600 px, 2K under ~3200 px."""
    longest = max(dims)
    return "1K" if longest <= 1600 else "2K" if longest <= 3200 else "4K"


# ---------------------------------------------------------------------------- answers


def from_imagen(body: Any) -> Result:
    predictions = required_field(body, "predictions", list, "without any image")
    artifacts, reasons = [], []
    for prediction in predictions:
        if not isinstance(prediction, Mapping):
            raise protocol_error("an Imagen prediction is not an object", body)
        if isinstance(prediction.get("bytesBase64Encoded"), str):
            data = decode_media(prediction["bytesBase64Encoded"], body)
            artifacts.append(Artifact(data=data, content_type=_mime(prediction)))
        elif isinstance(prediction.get("raiFilteredReason"), str):
            reasons.append(prediction["raiFilteredReason"])
    if artifacts:
        return Result(artifacts=tuple(artifacts), raw=redact(body))
    if reasons:
        raise rejected("; ".join(reasons), "content_filtered", body)
    raise protocol_error("Vertex AI answered without any image", body)


def from_gemini(body: Any) -> Result:
    body = expect_object(body, vendor="Vertex AI", provider=PROVIDER_ID)
    feedback = body.get("promptFeedback")
    if isinstance(feedback, Mapping) and feedback.get("blockReason"):
        reason = str(feedback["blockReason"])
        detail = feedback.get("blockReasonMessage") or reason
        raise rejected(f"Gemini refused the prompt: {detail}", reason, body)
    candidates = required_field(body, "candidates", list, "without any candidate")
    artifacts, texts, finish = [], [], []
    for candidate in candidates:
        if not isinstance(candidate, Mapping):
            raise protocol_error("a Gemini candidate is not an object", body)
        finish.append(str(candidate.get("finishReason") or ""))
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, Mapping) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, Mapping):
                raise protocol_error("a Gemini content part is not an object", body)
            inline = part.get("inlineData") or part.get("inline_data")
            # Gemini 3 may show interim "thought" images before the final one.
            if isinstance(inline, Mapping) and inline.get("data") and not part.get("thought"):
                data = decode_media(str(inline["data"]), body)
                artifacts.append(Artifact(data=data, content_type=_mime(inline)))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    if artifacts:
        return Result(artifacts=tuple(artifacts), raw=redact(body))
    refused = next((reason for reason in finish if reason in REFUSAL_FINISH_REASONS), None)
    if refused is not None:
        message = next(
            (str(c["finishMessage"]) for c in candidates if c.get("finishMessage")), refused
        )
        raise rejected(f"Gemini did not return an image ({refused}): {message}", refused, body)
    raise UpstreamUnavailableError(
        "No image generated by Gemini. Text response: " + " ".join(texts)[:500],
        provider=PROVIDER_ID,
        body=body,
        code="no_image",
    )


def _mime(item: Mapping[str, Any]) -> str | None:
    # Without a stated type, None lets storage sniff the bytes.
    mime = item.get("mimeType")
    return mime if isinstance(mime, str) and mime else None


# ---------------------------------------------------------------------------- provider


class VertexProvider(Provider):
    id = PROVIDER_ID
    key_env = "GOOGLE_SERVICE_ACCOUNT_KEY"
    base_url_env = ("VERTEX_BASE_URL",)
    extra_env: ClassVar[Mapping[str, str]] = {
        "project_id": "GOOGLE_CLOUD_PROJECT_ID",
        "location": "GOOGLE_CLOUD_LOCATION",
        "token_url": "VERTEX_TOKEN_URL",
    }
    env_notes: ClassVar[Mapping[str, str]] = {
        "GOOGLE_SERVICE_ACCOUNT_KEY": "base64 of the JSON key",
        "GOOGLE_CLOUD_PROJECT_ID": "required",
        "GOOGLE_CLOUD_LOCATION": "default `us-central1`",
        "VERTEX_TOKEN_URL": "default: the key's `token_uri`, else "
        "`https://oauth2.googleapis.com/token`",
    }
    default_base_url = "https://{location}-aiplatform.googleapis.com"
    api_prefix = "/v1"
    modalities = frozenset({"image", "video"})
    image_inputs = frozenset({"inline_data", "base64_image"})
    #: Veo videos; images are one synchronous call, with nothing to resume.
    resumable = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tokens: AccessTokens | None = None
        #: The Veo operations running for jobs, by the URL that cancels each.
        self._in_flight = InFlight(self._cancel_operation, vendor="Vertex AI")

    async def generate(self, job: Job, target: Target) -> Result:
        async with translate_errors(self.id):
            request = to_request(job, target)
            url = self._model_url(request.model, request.method)
            if request.method == "predict":
                return from_imagen(await self._post(url, request.body))
            if request.method == "generateContent":
                return from_gemini(await self._post(url, request.body))
            veo = await submit_or_resume(
                job,
                partial(self._submit_veo, url, request),
                vendor="Vertex AI",
                to_ref=veo_ref,
                from_ref=veo_from_ref,
                stop=lambda veo: self._cancel_operation(self._cancel_url(veo)),
            )
            async with self._in_flight.running(job, self._cancel_url(veo)):
                operation = await self._wait(veo.model, veo.name, job)
            # Read outside the wait: a job Google reports as failed needs no cancel.
            result = from_operation(operation)
        if result is None:
            raise AssertionError("unreachable: wait_for_operation returns a done operation")
        return result

    async def cancel(self, job: Job, target: Target) -> bool:
        async with translate_errors(self.id):
            ref = job.vendor_ref
            elsewhere = self._cancel_url(veo_from_ref(ref)) if ref is not None else None
            return await self._in_flight.cancel(job, elsewhere)

    async def _submit_veo(self, url: str, request: VertexRequest) -> VeoJob:
        return VeoJob(request.model, operation_name(await self._post(url, request.body)))

    def _cancel_url(self, veo: VeoJob) -> str:
        return f"{self._host()}/v1/{veo.name}:cancel"

    # ------------------------------------------------------------------ polling

    async def _wait(self, model: str, name: str, job: Job) -> Mapping[str, Any]:
        url = self._model_url(model, "fetchPredictOperation")
        return await wait_for_operation(
            lambda: self._post(url, {"operationName": name}),
            name,
            poll_interval=self.poll_interval,
            cancelled=lambda: self._in_flight.abandoned(job),
        )

    async def _cancel_operation(self, url: str) -> None:
        await self._post(url, {})

    # ------------------------------------------------------------------ HTTP

    async def _post(self, url: str, body: Mapping[str, Any]) -> Any:
        """POST with a bearer token; one retry with a fresh token when it is refused."""
        tokens = self._access_tokens()
        for attempt in range(2):
            token = await tokens.get()
            response = await self.http.post(
                url, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 401 and attempt == 0:
                tokens.invalidate(token)
                continue
            if response.is_error:
                raise error_from_response(
                    response.status_code, error_body(response), provider=self.id
                )
            return response_json(self.id, response)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _access_tokens(self) -> AccessTokens:
        if self._tokens is None:
            if not self.credential:
                raise UpstreamMisconfiguredError(
                    "GOOGLE_SERVICE_ACCOUNT_KEY is required for Vertex AI", provider=self.id
                )
            account = parse_service_account(self.credential, provider=self.id)
            token_url = self.extra.get("token_url") or account.token_uri or DEFAULT_TOKEN_URL
            self._tokens = AccessTokens(self.http, account, token_url, provider=self.id)
        return self._tokens

    def _location(self) -> str:
        return self.extra.get("location") or DEFAULT_LOCATION

    def _host(self) -> str:
        location = self._location()
        if location == "global" and self.base_url == self.default_base_url:
            return "https://aiplatform.googleapis.com"  # the global endpoint has no region
        return self.base_url.replace("{location}", location)

    def _model_url(self, model: str, method: str) -> str:
        project = self.extra.get("project_id")
        if not project:
            raise UpstreamMisconfiguredError(
                "GOOGLE_CLOUD_PROJECT_ID is required for Vertex AI", provider=self.id
            )
        return (
            f"{self._host()}/v1/projects/{project}/locations/{self._location()}"
            f"/publishers/google/models/{model}:{method}"
        )
