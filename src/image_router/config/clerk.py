"""Clerk sign-in (AUTH_PROVIDER=clerk): session tokens are verified with the PEM
(networkless) or the JWKS; the Backend API only fetches a user just in time and deletes
one on erasure."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from image_router.config.group import Group


class ClerkSettings(Group):
    clerk_issuer: str | None = Field(
        default=None,
        description="Clerk mode (required): the Frontend API URL, e.g. https://clerk.example.com",
    )
    clerk_authorized_parties: list[str] = Field(
        default_factory=list,
        description="Clerk mode (required): the site's origins accepted in `azp`, comma-separated",
    )
    clerk_jwt_key: str | None = Field(
        default=None,
        description='Clerk mode (this or `CLERK_JWKS_URL`): the PEM public key ("JWT public '
        'key" in the dashboard), verifies without the network',
    )
    clerk_jwks_url: str | None = Field(
        default=None, description="Clerk mode (this or `CLERK_JWT_KEY`): the JWKS address"
    )
    clerk_jwks_cache_s: float = Field(
        default=300.0, description="how long the fetched JWKS is cached, seconds"
    )
    clerk_secret_key: SecretStr | None = Field(
        default=None,
        description="the Backend API key: fetch a user at first sign-in, delete one on erasure",
    )
    clerk_api_url: str = Field(default="https://api.clerk.com", description="the Backend API host")
    clerk_webhook_signing_secret: SecretStr | None = Field(
        default=None, description="`whsec_…` (Svix) of the `/webhooks/clerk` endpoint"
    )
    clerk_sign_in_url: str | None = Field(
        default=None,
        description="Clerk's hosted sign-in page (Account Portal); our `/signin` redirects there",
    )
    clerk_publishable_key: str | None = Field(
        default=None, description="`pk_…`, the key Clerk's browser script needs"
    )

    @field_validator("clerk_authorized_parties", mode="before")
    @classmethod
    def _split_parties(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    def missing(self) -> list[str]:
        """The settings Clerk mode needs that are not set."""
        return [
            name
            for name, value in (
                ("CLERK_ISSUER", self.clerk_issuer),
                ("CLERK_AUTHORIZED_PARTIES", self.clerk_authorized_parties),
                ("CLERK_JWT_KEY or CLERK_JWKS_URL", self.clerk_jwt_key or self.clerk_jwks_url),
            )
            if not value
        ]
