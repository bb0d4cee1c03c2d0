"""The error reference of the errors guide, generated from the error classes.

Each row names the class a client's error comes from; its HTTP status and `type` are read
from that class, so the guide cannot drift from what the server answers. Only the `code`
(where a call site sets one), when it happens and what to do are written here. A test
checks the other direction: every code raised in `src/` has a row.
"""

from __future__ import annotations

from dataclasses import dataclass

from image_router.account.spend_limits import KeySpendLimitExceeded
from image_router.account.web_tokens import GuestIpMismatch
from image_router.api.clerk import AuthUnavailable
from image_router.api.export import ExportExpired, ExportNotReady
from image_router.errors import (
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    GatewayError,
    GenerationFailed,
    GenerationRejected,
    GenerationTimeout,
    GenerationUnavailable,
    InsufficientCredits,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ShuttingDown,
    StorageUnavailable,
    Unauthenticated,
    UploadError,
)
from image_router.generation.durability import JobCancelled, JobContinues
from image_router.idempotency.keys import InvalidIdempotencyKey
from image_router.idempotency.store import (
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotentAnswerLost,
)
from image_router.jobs.service import JobFinished
from image_router.limits.free_tier import DepositRequired
from image_router.limits.human_check import HumanCheckFailed, HumanCheckRequired
from image_router.payment.topups import PaymentProviderError, PaymentsDisabled
from image_router.payment.webhooks import InvalidEvent, RetryLater
from image_router.privacy.policy import TERMS_REQUIRED_CODE, StaleDocumentVersion
from image_router.web.tokens import WebTokensUnavailable


@dataclass(frozen=True)
class ErrorRow:
    error: type[GatewayError]
    when: str
    todo: str
    code: str | None = None  # None: the class's own code

    @property
    def status(self) -> int:
        return self.error.status

    @property
    def error_type(self) -> str:
        return self.error.error_type

    @property
    def error_code(self) -> str:
        return self.code or self.error.code or ""


NOT_CHARGED = "Nothing was charged."
RETRY = "Retry later; nothing was charged."

GROUPS: tuple[tuple[str, tuple[ErrorRow, ...]], ...] = (
    (
        "The request",
        (
            ErrorRow(
                InvalidRequest,
                "A field is invalid; `param` names it and the message is "
                "ImageRouter's, word for word.",
                "Fix the field named by `param`.",
            ),
            ErrorRow(
                InvalidRequest,
                "The body is not valid JSON, or not a JSON object.",
                "Send a JSON object.",
                "invalid_json",
            ),
            ErrorRow(
                UploadError,
                "A file field other than `image`, `image[]`, `image[N]`, "
                "`mask`, `mask[]`; too many files; a file over 25 MB.",
                "Check the multipart field names and sizes.",
            ),
            ErrorRow(
                PayloadTooLarge, "A JSON body over 100 kB.", "Send images as `multipart/form-data`."
            ),
            ErrorRow(
                InvalidRequest,
                "`size` is not one the model takes (the message lists them).",
                "Pick a listed size or `auto`.",
                "unsupported_size",
            ),
            ErrorRow(
                InvalidRequest,
                "`n` is above the model's maximum.",
                "Ask for fewer images, or send several requests.",
                "unsupported_n",
            ),
            ErrorRow(
                InvalidRequest,
                "The model takes no input images.",
                "Leave out `image`, or pick a model that edits.",
                "image_not_supported",
            ),
            ErrorRow(
                InvalidRequest,
                "The model takes no mask.",
                "Leave out `mask`.",
                "mask_not_supported",
            ),
            ErrorRow(
                InvalidRequest,
                "More input images than the model takes.",
                "Send fewer images.",
                "too_many_images",
            ),
            ErrorRow(
                InvalidRequest,
                "The model does not offer this `quality`.",
                "Use another quality or `auto`.",
                "quality_not_supported",
            ),
            ErrorRow(
                InvalidRequest,
                "No price can be worked out for these parameters.",
                "Change the parameters named in the message.",
                "price_unavailable",
            ),
            ErrorRow(
                InvalidRequest,
                "The `provider` object is malformed.",
                "See [Routing preferences](/docs/guides/routing).",
                "invalid_provider_preferences",
            ),
            ErrorRow(
                InvalidRequest,
                "No route of the model is left by your `provider` "
                "preferences (the message says why for each).",
                "Loosen `only`, `ignore` or `max_price`.",
                "no_route_fits_preferences",
            ),
            ErrorRow(
                InvalidRequest,
                "The model exists but none of its vendors is configured on this server.",
                "Pick another model from [the models](/models).",
                "model_provider_unavailable",
            ),
            ErrorRow(
                ModelNotFound,
                "`GET /v1/models/{id}` of a model that does not exist.",
                "Check the id (ids contain `/`).",
            ),
            ErrorRow(
                NotFound, "No such path, or no such object of yours.", "Check the URL and the id."
            ),
            ErrorRow(
                NotFound,
                "`/v1/api-keys/{id}` names no key of this account.",
                "List the keys for their ids.",
                "api_key_not_found",
            ),
            ErrorRow(
                MethodNotAllowed,
                "The path exists but not with this method; `Allow` lists the methods it takes.",
                "Use a method from `Allow`.",
            ),
            ErrorRow(
                Conflict,
                "The request clashes with the current state (a generation "
                "still running, for example).",
                "Retry once it has finished.",
            ),
            ErrorRow(
                Conflict,
                "`PATCH /v1/account` with an e-mail another account uses.",
                "Use another address.",
                "email_taken",
            ),
            ErrorRow(
                Conflict,
                "Changing a profile that the sign-in provider (Clerk) manages.",
                "Change it at the sign-in provider.",
                "managed_by_identity_provider",
            ),
            ErrorRow(
                StaleDocumentVersion,
                "Accepting a version of the terms that is not the current one.",
                "Read [GET /v1/legal](/v1/legal) and accept that one.",
            ),
            ErrorRow(
                InvalidIdempotencyKey,
                "An `Idempotency-Key` that is empty, longer than 255 characters or not "
                "printable ASCII.",
                "Send a UUID (or another short printable key).",
            ),
            ErrorRow(
                IdempotencyKeyReused,
                "An `Idempotency-Key` already used for another request (method, path or "
                "body) within 24 hours.",
                "Use a new key for a new request.",
            ),
            ErrorRow(
                IdempotencyKeyInProgress,
                "The first request with this `Idempotency-Key` is still running after the "
                "wait; `Retry-After` says when to ask again.",
                "Retry with the same key and body: you get its answer, charged once.",
            ),
        ),
    ),
    (
        "Authentication and keys",
        (
            ErrorRow(
                Unauthenticated,
                "No `Authorization: Bearer …` header.",
                "Send your API key.",
                "missing_authorization",
            ),
            ErrorRow(
                Unauthenticated,
                "A token of a length that is neither an API key (64) nor a website token.",
                "Copy the whole key.",
                "invalid_token_length",
            ),
            ErrorRow(
                Unauthenticated,
                "`Invalid API key`: unknown, revoked, disabled or expired.",
                "Create a new key on [your keys page](/account/keys).",
            ),
            ErrorRow(
                Unauthenticated,
                "A website token that is invalid or expired (they "
                "last a minute), or none can be checked here.",
                "Ask `POST /v1/web-token` for a fresh one.",
                "invalid_token",
            ),
            ErrorRow(
                GuestIpMismatch,
                "A website token of an account without credit used "
                "from another address than it was made for.",
                "Ask for a token from the address that uses it.",
            ),
            ErrorRow(
                Unauthenticated,
                "`/v1/api-keys` with a key that is unknown, revoked, "
                "disabled or expired, or with a website token.",
                "Use a management key.",
                "invalid_management_key",
            ),
            ErrorRow(
                Unauthenticated,
                "`/v1/api-keys` with a normal API key.",
                "Use a management key (the operator creates one).",
                "not_management_key",
            ),
            ErrorRow(
                Unauthenticated,
                "An account route without a signed-in session.",
                "Sign in on the website.",
                "sign_in_required",
            ),
            ErrorRow(
                Forbidden,
                "`/v1/account/api-keys` with an API key: these are managed by a signed-in person.",
                "Sign in, or use `/v1/api-keys` with a management key.",
                "sign_in_required",
            ),
            ErrorRow(
                Unauthenticated,
                "A Clerk session token that is invalid or expired.",
                "Sign in again.",
                "invalid_session",
            ),
            ErrorRow(
                Unauthenticated,
                "The account was closed (erased).",
                "Create a new account.",
                "account_closed",
            ),
            ErrorRow(
                Forbidden,
                "A management key tried to generate.",
                "Generate with a normal key.",
                "management_key",
            ),
            ErrorRow(
                Forbidden,
                "A management key tried to change or revoke a management key.",
                "Ask the operator.",
                "management_key_protected",
            ),
            ErrorRow(
                Forbidden,
                "Generation from a banned address or network (`Access "
                "denied`), or a `:free` model with an API key of an account that never "
                "deposited.",
                "For `:free` models: deposit any amount, or use the website.",
            ),
            ErrorRow(
                Forbidden,
                "Processing is restricted for this account at your request.",
                "Contact the operator to lift the restriction.",
                "account_restricted",
            ),
            ErrorRow(
                Forbidden,
                "The terms changed and their grace period is over.",
                "Accept the new [terms](/terms) on the website.",
                TERMS_REQUIRED_CODE,
            ),
            ErrorRow(
                Forbidden,
                "A cookie-authenticated change without the page's "
                "`X-CSRF-Token` (or from another site).",
                'Send the token of `<meta name="csrf-token">`.',
                "csrf_failed",
            ),
            ErrorRow(
                Forbidden,
                "A route that needs a website session was called with a key.",
                "Sign in on the website.",
                "session_required",
            ),
            ErrorRow(
                Forbidden,
                "Export, erasure or a new key need a recent sign-in.",
                "Sign in again, then retry.",
                "reverification_required",
            ),
            ErrorRow(
                Forbidden, "An operator-only field or action.", "Ask the operator.", "operator_only"
            ),
        ),
    ),
    (
        "Credits and limits",
        (
            ErrorRow(
                InsufficientCredits,
                "The balance does not cover the model's price "
                "(the message names the minimum). Nothing is held.",
                "Top up on the [billing page](/billing).",
            ),
            ErrorRow(
                KeySpendLimitExceeded,
                "The request would take the key past its spend "
                "limit (the message names the limit, the spend and when the window "
                "starts afresh).",
                "Wait for the next window or raise the limit.",
            ),
            ErrorRow(
                DepositRequired,
                "Website users without credit used their daily `:free` generations.",
                "Deposit any amount for the larger cap.",
            ),
            ErrorRow(
                RateLimited,
                "A rate limit or the daily `:free` cap of funded accounts; "
                "`Retry-After` says when.",
                "Wait `Retry-After` seconds. See [rate limits](/docs/guides/limits).",
            ),
        ),
    ),
    (
        "The vendors",
        (
            ErrorRow(
                GenerationRejected,
                "The vendor refused your input (content policy, an "
                "unreadable image). `code` is the vendor's reason where it gave one "
                "(for example `content_moderation`). Not retried elsewhere.",
                "Change the prompt or the image. " + NOT_CHARGED,
            ),
            ErrorRow(
                GenerationFailed,
                "Every route failed: the vendor was down or answered 5xx.",
                RETRY,
                "upstream_unavailable",
            ),
            ErrorRow(
                GenerationFailed,
                "The vendor could not be reached at all.",
                RETRY,
                "upstream_unreachable",
            ),
            ErrorRow(
                GenerationFailed,
                "The vendor refused this server's own key or address.",
                "Tell the operator. " + NOT_CHARGED,
                "upstream_misconfigured",
            ),
            ErrorRow(
                GenerationFailed,
                "The vendor limited this server's account (out of quota).",
                RETRY,
                "upstream_rate_limited",
            ),
            ErrorRow(
                GenerationFailed,
                "The vendor answered something unreadable (or not an image).",
                RETRY,
                "upstream_protocol",
            ),
            ErrorRow(GenerationUnavailable, "No route could take the request right now.", RETRY),
            ErrorRow(
                GenerationUnavailable,
                "The vendor is busy; `Retry-After` says when to come back.",
                "Wait `Retry-After` seconds. " + NOT_CHARGED,
                "upstream_busy",
            ),
            ErrorRow(
                GenerationUnavailable,
                "Every route of the model is failing; its "
                "circuit is open. `Retry-After` says when it is tried again.",
                "Wait `Retry-After` seconds, or pick another model. " + NOT_CHARGED,
                "circuit_open",
            ),
            ErrorRow(
                GenerationTimeout,
                "The generation outlived its deadline.",
                "Retry, perhaps with a faster model. " + NOT_CHARGED,
            ),
            ErrorRow(
                InternalError,
                "A bug on our side (the response's `X-Request-ID` finds it in the log).",
                "Retry; report the request id if it persists. " + NOT_CHARGED,
            ),
            ErrorRow(
                IdempotentAnswerLost,
                "A retry with the `Idempotency-Key` of a generation that was charged, but "
                "whose client hung up during the charge, before its answer existed.",
                "Find its outputs in the usage log under the `X-Generation-Id`.",
            ),
        ),
    ),
    (
        "The gateway itself",
        (
            ErrorRow(
                DatabaseUnavailable,
                "The gateway's database could not be reached (restarting, or the "
                "network to it is down). `Retry-After` says when to try again.",
                "Wait `Retry-After` seconds and send the request again. " + NOT_CHARGED,
            ),
            ErrorRow(
                StorageUnavailable,
                "The output was made but could not be stored (the object storage is "
                "unreachable); the hold went back. `Retry-After` says when to try again.",
                "Wait `Retry-After` seconds and send the request again. " + NOT_CHARGED,
            ),
            ErrorRow(
                ShuttingDown,
                "The server was stopped (a deploy) before the generation finished; its hold "
                "went back. Other servers behind the same address take the retry.",
                "Send the request again (an `Idempotency-Key` makes that safe). " + NOT_CHARGED,
            ),
        ),
    ),
    (
        "Website, account and payments",
        (
            ErrorRow(
                WebTokensUnavailable,
                "`POST /v1/web-token` on a server without `JWT_SECRET`.",
                "Use an API key (or ask the operator).",
            ),
            ErrorRow(
                HumanCheckRequired,
                "`POST /v1/web-token` for a guest or an account "
                "without credit, without the solved proof-of-work puzzle.",
                "Let the page solve it (the website does this on its own).",
            ),
            ErrorRow(
                HumanCheckFailed,
                "The puzzle's solution is wrong or expired.",
                "Ask for a new puzzle.",
            ),
            ErrorRow(
                HumanCheckFailed,
                "The puzzle's solution was already used.",
                "Ask for a new puzzle.",
                "human_check_replayed",
            ),
            ErrorRow(
                AuthUnavailable,
                "The sign-in provider (Clerk) could not be reached.",
                "Retry shortly.",
            ),
            ErrorRow(
                InvalidRequest,
                "Account deletion without the typed confirmation.",
                'Send `{"confirm": "DELETE MY ACCOUNT"}`.',
                "confirmation_required",
            ),
            ErrorRow(
                ExportNotReady,
                "The background export is still being built.",
                "Poll its status, then download.",
            ),
            ErrorRow(
                ExportExpired, "The export's download link has expired.", "Ask for a new export."
            ),
            ErrorRow(
                PaymentsDisabled,
                "Top-ups on a server without card payments.",
                "Ask the operator to grant credit.",
            ),
            ErrorRow(PaymentProviderError, "Stripe did not answer the checkout.", "Retry shortly."),
            ErrorRow(
                InvalidRequest,
                "A webhook whose signature does not verify (Stripe, Clerk only).",
                "Check the webhook's signing secret.",
                "invalid_signature",
            ),
            ErrorRow(
                InvalidEvent,
                "A webhook event that cannot be read (Stripe, Clerk only).",
                "Nothing: it is not applied.",
            ),
            ErrorRow(
                RetryLater,
                "A Stripe event that arrived before the one it depends on.",
                "Nothing: Stripe delivers it again.",
            ),
        ),
    ),
    (
        "Your webhooks",
        (
            ErrorRow(
                InvalidRequest,
                "A webhook URL on a loopback, private or link-local address, or not http(s).",
                "Use a public https address.",
                "webhook_url_refused",
            ),
            ErrorRow(
                InvalidRequest,
                "The account already has the most webhook endpoints it may have.",
                "Delete one you no longer use.",
                "too_many_webhook_endpoints",
            ),
            ErrorRow(
                NotFound,
                "No webhook endpoint of yours has that id.",
                "List them with GET /v1/webhooks.",
                "webhook_endpoint_not_found",
            ),
            ErrorRow(
                NotFound,
                "No delivery of yours has that id.",
                "List them with GET /v1/webhooks/deliveries.",
                "webhook_delivery_not_found",
            ),
            ErrorRow(
                Conflict,
                "Resending to an endpoint that was disabled after failing for days.",
                "Fix the receiver, enable the endpoint, then resend.",
                "webhook_endpoint_disabled",
            ),
            ErrorRow(
                NotFound,
                "The account was erased while the request was being served.",
                "Nothing: its data is gone.",
                "account_erased",
            ),
        ),
    ),
    (
        "Jobs",
        (
            ErrorRow(
                NotFound,
                "No generation of your account has that id (`GET`/`cancel`), or the `after` "
                "cursor of `GET /v1/jobs` names none.",
                "Use the `id` of the 202 answer or of `X-Generation-Id`.",
                "job_not_found",
            ),
            ErrorRow(
                JobFinished,
                "Cancelling a job that has already succeeded, failed or been cancelled.",
                "Nothing: read the job; a finished job cannot be undone.",
            ),
            ErrorRow(
                JobCancelled,
                "A synchronous request whose generation was cancelled through "
                "`POST /v1/jobs/{id}/cancel` while it waited.",
                f"Nothing: it was cancelled as asked. {NOT_CHARGED}",
            ),
            ErrorRow(
                JobContinues,
                "The server restarted while a synchronous generation waited on a vendor job "
                "that is on record; another process finishes it.",
                "Fetch it at GET /v1/jobs/{id} (the id is in the message); do not resend it, "
                "that would pay twice. It is charged only if it succeeds.",
            ),
            ErrorRow(
                InvalidRequest,
                "`Prefer: respond-async` or a job route from the website's guest session.",
                "Sign in, or use an API key.",
                "jobs_need_account",
            ),
            ErrorRow(
                InvalidRequest,
                "`Prefer: respond-async` with `response_format: b64_ephemeral`, which is "
                "never stored and so cannot be fetched later.",
                "Use `url` or `b64_json` for async requests.",
                "async_ephemeral_output",
            ),
        ),
    ),
)


def rows() -> list[ErrorRow]:
    return [row for _, group in GROUPS for row in group]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def error_table() -> str:
    """The reference as Markdown: one table per group, with a heading."""
    parts = []
    for title, group in GROUPS:
        lines = [
            f"### {title}",
            "",
            "| Status, type | Code | When | What to do |",
            "|---|---|---|---|",
        ]
        for row in group:
            lines.append(
                f"| {row.status} `{row.error_type}` | `{row.error_code}` "
                f"| {_cell(row.when)} | {_cell(row.todo)} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
