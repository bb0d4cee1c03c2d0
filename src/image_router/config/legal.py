"""The operator's policy documents, contacts and consent (docs/privacy.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from image_router.config.group import Group


class LegalSettings(Group):
    privacy_contact_email: str = Field(
        default="privacy@localhost", description="named in the policy, `/v1/legal` and security.txt"
    )
    security_contact: str | None = Field(
        default=None,
        description="the security.txt contact; unset: `mailto:` `PRIVACY_CONTACT_EMAIL`",
    )
    security_policy_url: str | None = Field(
        default=None, description="the security.txt policy link"
    )
    legal_dir: Path | None = Field(
        default=None,
        description="your `privacy.md`, `terms.md`, `cookies.md` "
        "([docs/privacy.md](docs/privacy.md)); unset: the shipped documents",
    )
    legal_grace_days: int = Field(
        default=30,
        ge=0,
        description="after a material terms change, days before generation needs acceptance",
    )
    analytics_script_url: str | None = Field(
        default=None,
        description="a browser analytics script, loaded only after consent (and only then a "
        "cookie banner); unset: no analytics, no banner",
    )
    consent_reask_days: int = Field(
        default=180, ge=1, description="days after which a consent choice is asked again"
    )
