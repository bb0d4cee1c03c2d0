"""The ASGI application: routers, error rendering, headers, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import yaml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from image_router import __version__
from image_router.api.account import router as account_router
from image_router.api.clerk import clerk_routes
from image_router.api.erasure import router as erasure_router
from image_router.api.error_statuses import document_errors
from image_router.api.export import router as export_router
from image_router.api.files import router as files_router
from image_router.api.generation import ROUTES as GENERATION_ROUTES
from image_router.api.jobs import router as jobs_router
from image_router.api.keys import router as api_keys_router
from image_router.api.models import router as discovery_router
from image_router.api.openapi import document_generation_routes
from image_router.api.payments import router as payment_router
from image_router.api.privacy import router as privacy_account_router
from image_router.api.quotes import router as quotes_router
from image_router.api.readiness import router as readiness_router
from image_router.api.responses import json_response
from image_router.api.webhooks import router as webhooks_router
from image_router.config import Settings
from image_router.db.migrate import upgrade
from image_router.db.outage import OUTAGE_ERRORS, is_outage
from image_router.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
)
from image_router.generation.failures import database_unavailable
from image_router.generation.recovery import run_periodically
from image_router.kit.drain import Drain, on_sigterm
from image_router.limits.asgi import RateLimitMiddleware
from image_router.observability import metrics
from image_router.observability.logging import ensure_logging
from image_router.observability.middleware import RequestObservability
from image_router.privacy.erasure import queue_erasure
from image_router.resources import Resources, build_resources
from image_router.web.admin import router as web_admin_router
from image_router.web.admin_status import router as web_admin_status_router
from image_router.web.billing import router as web_billing_router
from image_router.web.catalog import router as web_catalog_router
from image_router.web.common import PageAnswer
from image_router.web.docs import ASSETS as DOCS_ASSETS
from image_router.web.docs import ASSETS_PATH as DOCS_ASSETS_PATH
from image_router.web.docs import router as web_docs_router
from image_router.web.guides.pages import router as web_guides_router
from image_router.web.keys import router as web_keys_router
from image_router.web.legal import router as web_legal_router
from image_router.web.legal_site import LEGAL_UI, build_legal_site, queue_privacy_notice
from image_router.web.pages import router as web_pages_router
from image_router.web.password import router as web_password_router
from image_router.web.playground import router as web_playground_router
from image_router.web.refusals import rate_limited_page
from image_router.web.settings import router as web_settings_router
from image_router.web.signin_link import router as web_signin_link_router
from image_router.web.state import STATIC_DIR, build_web_state
from image_router.web.tokens import router as web_token_router
from image_router.web.usage import router as web_usage_router
from image_router.web.webhooks import router as web_webhooks_router

log = logging.getLogger(__name__)

# How long the shutdown waits for cut-off generations to give their holds back.
_RELEASE_WAIT_S = 10.0

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Helmet's most useful defaults, as a pure ASGI middleware (no per-request task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Gateway(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outermost, outside even ServerErrorMiddleware: an unexpected 500 gets its
        # X-Request-ID, and the traceback logged by `_render_unexpected` its request id.
        return RequestObservability(super().build_middleware_stack())


def create_app(
    settings: Settings | None = None,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    resources: Resources | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app. Tests pass `http_transport` to send every vendor call to fakes.
    `freeze_heap` (the served process, not an app built in a test) freezes what start-up
    built and collects the young generation less often (`_tune_collector`)."""
    settings = settings or Settings()
    # Here rather than in the lifespan: a uvicorn worker logs "Started server process"
    # between building the app and starting it.
    ensure_logging(settings.observability.log_level, settings.observability.log_format)
    # The policy documents, rendered once: a malformed one stops the start, naming the file.
    legal = build_legal_site(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res = resources or build_resources(settings, http_transport=http_transport)
        if settings.storage.auto_migrate:
            await upgrade(res.settings.storage.resolved_database_url())
        app.state.resources = res
        # The blind-index key (BLIND_INDEX_KEY) also keys the throttle's hashes.
        app.state.web = build_web_state(res.settings, res.vault.index_key)
        await queue_privacy_notice(res, legal)  # LEG-2: once per material version
        stop = asyncio.Event()
        reconciler = asyncio.create_task(
            run_periodically(
                res.engine,
                settings.generation.hold_reconcile_interval_s,
                settings.generation.hold_grace_s,
                stop,
            )
        )
        purger = asyncio.create_task(  # RET-1: the retention purge
            res.retention.run_periodically(settings.retention.purge_interval_s, stop)
        )
        # Erasures and exports; every worker runs the loop, the claim keeps each job to one.
        job_runner = asyncio.create_task(
            res.jobs.run_periodically(settings.privacy.jobs_interval_s, stop)
        )
        # Outgoing webhooks (WEBHOOK_WORKER); every worker runs one, claims keep each to one.
        webhook_senders = (
            [
                asyncio.create_task(
                    res.webhooks.runner.run_periodically(
                        settings.webhooks.webhook_interval_s,
                        stop,
                        lambda: res.webhooks.runner,
                        # The events' outbox: events a crash or an outage kept from being
                        # recorded, and those of holds the reconciler released.
                        sweep=lambda: res.webhooks.events.sweep(),
                    )
                )
            ]
            if settings.webhooks.webhook_worker
            else []
        )
        # Other machines' key changes clear this worker's key cache (Redis; no-op without).
        key_listener = asyncio.create_task(res.key_changes.listen(stop))
        # Durable jobs: renew this worker's leases, resume jobs whose worker died (jobs/).
        jobs = res.job_resumer
        resumer = [asyncio.create_task(jobs.run_periodically(stop))] if jobs else []
        # SIGTERM: /ready turns 503, `res.drain.on_drain` hooks run, generations still
        # running after SHUTDOWN_DRAIN_S are cut off (holds released, answered 503).
        undo_sigterm = on_sigterm(res.drain, settings.serving.shutdown_drain_s)
        if freeze_heap:
            _tune_collector()
        try:
            yield
        finally:
            await _finish_drain(res.drain)
            undo_sigterm()
            stop.set()
            for task in (
                reconciler,
                purger,
                job_runner,
                key_listener,
                *webhook_senders,
                *resumer,
            ):
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=30)
                except TimeoutError:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if jobs is not None:
                # Vendor jobs on record are left running for another worker, never
                # cancelled; the rest are released (docs/jobs.md).
                await jobs.stop()
            await app.state.web.close()
            await res.close()
            metrics.worker_stopped()

    app = _Gateway(
        title="Image Router API",
        version=__version__,
        description="OpenAI-compatible image and video generation with prepaid credits.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry bridge: we export Prometheus metrics and JSON logs, not
        # OTel, and its "is a provider configured?" check costs every request a few lookups.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # web/docs.py serves /docs, with no CDN
        redoc_url=None,
    )
    app.state.legal = legal
    if settings.limits.rate_limits_enabled:
        # Inside CORS, so a browser can read the 429 (spec §2.1: cors, then the limiter).
        app.add_middleware(
            RateLimitMiddleware,
            limits_of=lambda: app.state.resources.limits,
            html_page=lambda wait: rate_limited_page(app.state.web.templates, wait),
        )
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]
    )
    app.add_middleware(SecurityHeaders)
    app.router.routes.extend(GENERATION_ROUTES)  # plain Starlette endpoints, first
    app.include_router(quotes_router)  # before /v1/models/{id}, which takes any path
    app.include_router(discovery_router)
    app.include_router(readiness_router)
    app.include_router(account_router)
    app.include_router(api_keys_router)
    app.include_router(webhooks_router)
    app.include_router(jobs_router)
    app.include_router(privacy_account_router)
    app.include_router(erasure_router)
    app.include_router(export_router)
    app.include_router(files_router)
    app.include_router(payment_router)
    app.include_router(web_token_router)
    app.include_router(clerk_routes(settings, queue_erasure))  # before the pages (redirects)
    # LEGAL_UI: the policy banners and the analytics script (after consent) on every page.
    app.include_router(web_pages_router, dependencies=[LEGAL_UI])
    app.include_router(web_catalog_router, dependencies=[LEGAL_UI])
    app.include_router(web_keys_router, dependencies=[LEGAL_UI])
    app.include_router(web_webhooks_router, dependencies=[LEGAL_UI])
    app.include_router(web_billing_router, dependencies=[LEGAL_UI])
    app.include_router(web_settings_router, dependencies=[LEGAL_UI])
    app.include_router(web_usage_router, dependencies=[LEGAL_UI])
    app.include_router(web_password_router, dependencies=[LEGAL_UI])
    app.include_router(web_legal_router)
    app.include_router(web_docs_router, dependencies=[LEGAL_UI])
    app.include_router(web_guides_router, dependencies=[LEGAL_UI])
    app.include_router(web_playground_router, dependencies=[LEGAL_UI])
    app.include_router(web_admin_router, dependencies=[LEGAL_UI])
    app.include_router(web_admin_status_router, dependencies=[LEGAL_UI])
    app.include_router(web_signin_link_router, dependencies=[LEGAL_UI])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(DOCS_ASSETS_PATH, DOCS_ASSETS, name="docs-assets")
    document_generation_routes(app)
    document_errors(app)

    @app.get("/.well-known/openapi.yaml", include_in_schema=False)
    async def openapi_yaml() -> Response:
        return Response(
            yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True),
            media_type="text/yaml; charset=utf-8",
        )

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        # A plain `def`: FastAPI runs it in a thread, and merging the files of several
        # workers is blocking I/O.
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_exception_handler(GatewayError, _render_gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(PageAnswer, _page_answer)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _render_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _render_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, _client_gone)  # type: ignore[arg-type]
    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, _database_outage)
    app.add_exception_handler(Exception, _render_unexpected)
    return app


async def _finish_drain(drain: Drain) -> None:
    """The server has stopped serving: whatever generation still runs (the drain's timer
    did not fire, or one started late) is cut off, and each gives its hold back before the
    resources close under it."""
    if drain.in_flight:
        drain.cut_off()
    if not await drain.wait_for_cut(_RELEASE_WAIT_S):
        log.error(
            "drain: some cut-off generations did not finish releasing their holds in %.0f s; "
            "the hold reconciler releases what they left",
            _RELEASE_WAIT_S,
        )
    if drain.draining:
        log.info(drain.summary())


def _error_response(error: GatewayError) -> Response:
    return json_response(error.body(), error.status, error.headers)


async def _render_gateway_error(request: Request, exc: GatewayError) -> Response:
    if exc.status >= 500:
        log.error("%s %s -> %s: %s", request.method, request.url.path, exc.status, exc.message)
    return _error_response(exc)


async def _render_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 405:
        # Honest, unlike the reference's Express: the path exists, the method does not
        # (TRACE included, which nothing here serves).
        allowed = (exc.headers or {}).get("Allow", "")
        return _error_response(
            MethodNotAllowed(
                f"Cannot {request.method} {request.url.path}", headers={"Allow": allowed}
            )
        )
    if exc.status_code == 404:
        return _error_response(NotFound(f"Cannot {request.method} {request.url.path}"))
    return json_response(InvalidRequest(str(exc.detail)).body(), exc.status_code)


async def _render_validation_error(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {"msg": "Invalid request"}
    return _error_response(InvalidRequest(str(first.get("msg", "Invalid request"))))


async def _page_answer(request: Request, exc: PageAnswer) -> Response:
    return exc.response


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    # Nobody is left to read an answer; nothing was charged (the body was never complete).
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


async def _database_outage(request: Request, exc: Exception) -> Response:
    """A database error: 503 `database_unavailable` when the database is away (nothing
    was charged; a hold left behind is released by the reconciler), else a bug (500)."""
    if is_outage(exc):
        return _error_response(database_unavailable(exc))
    return await _render_unexpected(request, exc)


async def _render_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_response(InternalError("Internal server error"))


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker serving."""
    return create_app(Settings(), freeze_heap=True)


#: Container allocations (net of frees) between two young collections; Python's is 700.
YOUNG_COLLECTION_THRESHOLD = 50_000


def _tune_collector() -> None:
    """Hide everything start-up built from the garbage collector (`gc.freeze`), and
    collect the young generation less often.

    The catalog, the models, SQLAlchemy's and pydantic's structures live as long as the
    process, yet every full collection walked them again: about 180 ms with the loop
    stopped, a few times a minute under load, which was most of the p99 latency (issue
    #12's bench: p99 159 ms → 57 ms, and full collections of 4–7 ms). Garbage made from
    here on is collected as before.

    At Python's default threshold (700) a busy worker ran a young collection every few
    milliseconds, each walking the state of every request in flight again: measured with
    `gc.callbacks` under the overhead scenario, 3,400 collections and about 0.9 s of a
    15 s run (6 % of the CPU). At 50,000 the same run makes 8, each ~10 ms, for 0.2 s in
    all, and 8–10 % less CPU per request (alternated twice: 0.89/0.97 → 0.81/0.88 ms).
    The older generations keep their default ratios, so cyclic garbage that survives
    still meets a full collection every few minutes under load.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
