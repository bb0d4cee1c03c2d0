"""Website sign-in (local accounts or Clerk), website tokens, sessions and e-mail."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from image_router.config.group import Group
from image_router.config.limits import check_rate


class AuthSettings(Group):
    auth_provider: Literal["local", "clerk"] = Field(
        default="local",
        description="website sign-in: `local` accounts with passwords, or `clerk` "
        "([Website and sign-in](#website-and-sign-in))",
    )
    bootstrap_admin_email: str = Field(
        default="admin@localhost", description="the admin account created on first start"
    )
    admin_signin_link_ttl_minutes: int = Field(
        default=60,
        ge=1,
        le=7 * 24 * 60,
        description="how long a one-time sign-in link works (the one printed at first start, "
        "`image-router users signin-link`), minutes",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="signs website tokens (`POST /v1/web-token`), at least 32 characters; "
        "unset: a key created on first start in `DATA_DIR/keys/web-token.key` (several "
        "machines sharing one database must set the same value)",
    )
    human_check: Literal["altcha", "off"] = Field(
        default="altcha",
        description="before a website token is minted for a guest or an account without "
        "credit, the browser solves a self-hosted proof-of-work challenge (ALTCHA); `off` "
        "skips it",
    )
    human_check_max_number: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="ALTCHA difficulty: the challenge's secret number is below this (the "
        "browser tries about half as many SHA-256 hashes on average)",
    )
    human_check_expire_s: int = Field(
        default=600,
        ge=10,
        description="how long an ALTCHA challenge may be solved and used (once), seconds",
    )
    reverify_max_minutes: int = Field(
        default=10,
        ge=0,
        description="how recent a sign-in must be (minutes) for erasure, export and creating keys",
    )
    auth_cache_ttl_s: float = Field(
        default=5,
        ge=0,
        le=60,
        description="how long an authenticated API key is remembered in each process, "
        "seconds (0: read the database on every request); revocation, disabling, expiry "
        "and account changes take effect at once in every process (through Redis with "
        "`REDIS_URL`, else a file in `DATA_DIR`); the balance it carries for the rate "
        "limits may be this old",
    )
    session_ttl_s: float = Field(
        default=14 * 24 * 3600, gt=0, description="how long a website session lasts, seconds"
    )
    web_token_ttl_s: float = Field(
        default=60, gt=0, description="lifetime of a website token, seconds"
    )
    signin_throttle: str = Field(
        default="5/minute",
        description="sign-in and reset attempts per e-mail and client IP, and sign-ups per "
        "IP (in Redis with `REDIS_URL`)",
    )
    # One e-mail tried from many addresses, and many e-mails from one address.
    signin_throttle_email: str = Field(
        default="10/minute", description="sign-in and reset attempts per e-mail, from any address"
    )
    signin_throttle_ip: str = Field(
        default="20/minute",
        description="sign-in and reset attempts per client IP, whatever the e-mail",
    )

    @field_validator("signin_throttle", "signin_throttle_email", "signin_throttle_ip")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        return check_rate(value)

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # HS256 with a short secret can be brute-forced offline from any one token.
        if value is not None and 0 < len(value.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return value


class MailSettings(Group):
    smtp_url: str | None = Field(
        default=None,
        description="`smtp://[user:pass@]host[:port]` (STARTTLS when offered) or `smtps://…`; "
        "unset: e-mails are written to standard error",
    )
    smtp_from: str = Field(
        default="Image Router <noreply@localhost>",
        description="sender of password reset e-mails",
    )
