"""Settings with a shape: every setting sits in a group, yet keeps its environment
variable (and `.env` line), and flat keyword arguments still configure it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from image_router.config import Settings
from image_router.config.group import env_names
from image_router.config.source import VENDORS, setting_groups
from image_router.config.vendors import declared_variables
from image_router.providers import PROVIDERS

#: Every variable the flat settings read before they were grouped (issue #11).
_FLAT_ERA = """
HOST PORT DATA_DIR DATABASE_URL PUBLIC_URL AUTO_MIGRATE LOG_LEVEL LOG_FORMAT PRICING_URL
STORAGE_URL S3_ENDPOINT S3_REGION S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY S3_CUSTOM_PUBLIC_URL
HEARTBEAT_AFTER_S HEARTBEAT_INTERVAL_S HOLD_RECONCILE_INTERVAL_S HOLD_GRACE_S
ATTEMPT_TIMEOUT_S RETRY_BACKOFF_S CIRCUIT_FAILURE_THRESHOLD CIRCUIT_COOLDOWN_S REDIS_URL
REDIS_NAMESPACE IMAGE_DEADLINE_S VIDEO_DEADLINE_S UPSTREAM_CONNECT_TIMEOUT_S
UPSTREAM_MAX_CONNECTIONS ALLOW_PRIVATE_UPSTREAMS CATALOG_PATHS LIST_ALL_MODELS
ENABLE_TEST_MODELS JWT_SECRET BOOTSTRAP_ADMIN_EMAIL AUTH_PROVIDER CLERK_ISSUER
CLERK_AUTHORIZED_PARTIES CLERK_JWT_KEY CLERK_JWKS_URL CLERK_JWKS_CACHE_S CLERK_SECRET_KEY
CLERK_API_URL CLERK_WEBHOOK_SIGNING_SECRET CLERK_SIGN_IN_URL CLERK_PUBLISHABLE_KEY
REVERIFY_MAX_MINUTES SESSION_TTL_S WEB_TOKEN_TTL_S SIGNIN_THROTTLE SIGNIN_THROTTLE_EMAIL
SIGNIN_THROTTLE_IP SMTP_URL SMTP_FROM PII_KEK PII_KEK_FILE PII_KEK_PREVIOUS BLIND_INDEX_KEY
DATA_KEYS_URL DEFAULT_STORE_PROMPTS RETENTION_PROMPTS_DAYS RETENTION_OUTPUTS_HOURS
RETENTION_USAGE_META_DAYS RETENTION_SECURITY_LOG_DAYS RETENTION_ACCOUNTING_YEARS
RETENTION_WEBHOOK_IDS_DAYS RETENTION_AUDIT_DAYS RETENTION_CONSENT_PROOF_DAYS
PURGE_INTERVAL_S PURGE_BATCH_SIZE JOBS_INTERVAL_S EXPORT_TTL_HOURS EXPORT_SYNC_MAX_MB
PRIVACY_CONTACT_EMAIL SECURITY_CONTACT SECURITY_POLICY_URL LEGAL_DIR LEGAL_GRACE_DAYS
ANALYTICS_SCRIPT_URL CONSENT_REASK_DAYS RATE_LIMITS_ENABLED RATE_LIMIT_GENERAL
RATE_LIMIT_GENERATION_IP RATE_LIMIT_ACCOUNT_IMAGE_STEP_USD RATE_LIMIT_ACCOUNT_IMAGE_MIN
RATE_LIMIT_ACCOUNT_IMAGE_MAX RATE_LIMIT_ACCOUNT_VIDEO_STEP_USD RATE_LIMIT_ACCOUNT_VIDEO_MIN
RATE_LIMIT_ACCOUNT_VIDEO_MAX FREE_DAILY_LIMIT_FUNDED FREE_DAILY_LIMIT_UNFUNDED GENERATE_URL
TRUSTED_PROXY_COUNT CLIENT_IP_HEADER BANNED_NETWORKS BANS_REFRESH_S PAYMENTS_PROVIDER
STRIPE_SECRET_KEY STRIPE_WEBHOOK_SECRET STRIPE_API_BASE BILLING_CURRENCY TOPUP_MIN_CENTS
TOPUP_MAX_CENTS SITE_URL POLL_INTERVAL_S OPENAI_API_KEY OPENAI_BASE_URL RUNWARE_API_KEY
RUNWARE_BASE_URL DEEPINFRA_API_KEY DEEPINFRA_BASE_URL REPLICATE_API_KEY REPLICATE_BASE_URL
FAL_API_KEY FAL_BASE_URL FAL_SYNC_BASE_URL WAVESPEED_API_KEY WAVESPEED_BASE_URL
CHUTES_API_TOKEN CHUTES_BASE_URL NANO_GPT_API_KEY NANO_GPT_BASE_URL NANOGPT_BASE_URL
GOOGLE_GEMINI_API_KEY GEMINI_BASE_URL GOOGLE_CLOUD_PROJECT_ID GOOGLE_CLOUD_LOCATION
GOOGLE_SERVICE_ACCOUNT_KEY VERTEX_BASE_URL VERTEX_TOKEN_URL XAI_API_KEY XAI_BASE_URL
GROK_BASE_URL ZAI_API_KEY ZAI_BASE_URL OPENROUTER_API_KEY OPENROUTER_BASE_URL
TOGETHER_API_KEY TOGETHER_BASE_URL
"""
FLAT_ERA_VARIABLES = _FLAT_ERA.split()

#: Values for fields whose default says nothing about what a valid value looks like.
SAMPLES = {
    "JWT_SECRET": "j" * 32,
    "BANNED_NETWORKS": "10.0.0.0/8",
    "CLERK_AUTHORIZED_PARTIES": "https://site.example",
    "CATALOG_PATHS": "extra.toml",
}


def group_fields() -> list[tuple[str, str, FieldInfo]]:
    return [
        (group, name, info)
        for group, model in setting_groups(Settings).items()
        if group != VENDORS
        for name, info in model.model_fields.items()
    ]


def sample(name: str, info: FieldInfo) -> str:
    """A valid value, as an environment variable would hold it."""
    env = env_names(name, info)[0]
    if env in SAMPLES:
        return SAMPLES[env]
    default = info.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return str(not default).lower()
    if default is None:
        return "1.5" if "float" in str(info.annotation) else "set-by-test"
    return str(default)


def test_every_variable_of_the_flat_era_is_still_read() -> None:
    grouped = {env for _, name, info in group_fields() for env in env_names(name, info)}
    declared = {env for cls in PROVIDERS.values() for env in declared_variables(cls)}
    assert sorted(set(FLAT_ERA_VARIABLES) - grouped - declared) == []
    assert grouped.isdisjoint(declared)


def test_every_setting_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = group_fields()
    for _, name, info in fields:
        monkeypatch.setenv(env_names(name, info)[0], sample(name, info))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    unread = [
        env_names(name, info)[0]
        for group, name, info in fields
        if name not in getattr(settings, group).model_fields_set
    ]
    assert unread == []
    assert settings.observability.log_format == "json"
    assert settings.privacy.pii_kek_file == Path("set-by-test")


def test_every_setting_says_what_it_does() -> None:
    undescribed = [name for _, name, info in group_fields() if not (info.description or "")]
    assert undescribed == []
    assert all(info.description for info in Settings.model_fields.values())


def test_the_env_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9001\nLOG_FORMAT=text\nXAI_API_KEY=xai-from-file\nHOST=10.0.0.1\n")
    monkeypatch.setenv("HOST", "10.0.0.2")
    monkeypatch.delenv("PORT", raising=False)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.serving.port == 9001
    assert settings.serving.host == "10.0.0.2"
    assert settings.observability.log_format == "text"
    assert settings.vendors.credential(PROVIDERS["grok"]) == "xai-from-file"


def test_flat_keyword_arguments_configure_their_group_and_beat_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_NAMESPACE", "from-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_namespace="from-kwargs",
        rate_limits_enabled=False,
        openai_api_key="sk-kwargs",
        GOOGLE_CLOUD_PROJECT_ID="proj",
    )
    assert settings.storage.redis_namespace == "from-kwargs"
    assert settings.limits.rate_limits_enabled is False
    assert settings.vendors.credential(PROVIDERS["openai"]) == "sk-kwargs"
    assert settings.vendors.extra(PROVIDERS["vertex"]) == {"project_id": "proj"}


def test_a_group_can_be_passed_whole() -> None:
    from image_router.config.serving import ServingSettings

    settings = Settings(_env_file=None, serving=ServingSettings(port=9002), host="h")  # type: ignore[call-arg]
    assert (settings.serving.host, settings.serving.port) == ("h", 9002)


def test_invalid_values_are_refused_with_their_variable_names() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET must be at least 32 characters"):
        Settings(_env_file=None, jwt_secret="short")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="AUTH_PROVIDER=clerk needs CLERK_ISSUER"):
        Settings(_env_file=None, auth_provider="clerk")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="often"):
        Settings(_env_file=None, rate_limit_general="often")  # type: ignore[call-arg]


def test_unrelated_environment_variables_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_TOOL_HOME", "/opt/tool")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "a")
    values = Settings(_env_file=None).vendors.values  # type: ignore[call-arg]
    assert "SOME_TOOL_HOME" not in values and "PATH" not in values
    assert values["ANTHROPIC_API_KEY"] == SecretStr("a")  # vendor-shaped: kept, never read


def test_config_imports_nothing_of_the_gateway_but_kit() -> None:
    package = Path(__import__("image_router.config").config.__file__).parent
    imported: set[str] = set()
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    ours = {m for m in imported if m.startswith("image_router")}
    allowed = ("image_router.config", "image_router.kit")
    assert sorted(m for m in ours if not m.startswith(allowed)) == []


def test_settings_hold_groups_only() -> None:
    # A flat field added beside the groups would escape the README and the regrouping.
    assert set(setting_groups(Settings)) == set(Settings.model_fields)
