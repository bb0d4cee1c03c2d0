"""A policy document as HTML, with this deployment's facts filled in.

The documents say what *this* deployment does, so the facts come from its configuration:
the retention periods (RET-2: the table is generated from the settings, never typed into
the text, so the policy cannot drift from what the purge jobs do), the contact address,
and which recipients are in use (Clerk, Stripe, the AI vendors with a key configured).

A document uses them as Jinja placeholders (`{{ contact_email }}`, `{% if stripe %}`,
`{{ retention_table }}`); see `PolicyFacts.context`. A privacy policy that does not place
`{{ retention_table }}` gets the table appended. Raw HTML in a document is not allowed
(it is shown as text), so neither a document nor a setting can inject markup or scripts.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt

from image_router.legal.documents import LegalDocument, LegalDocumentError

RETENTION_TABLE = "retention_table"


@dataclass(frozen=True)
class RetentionRow:
    data: str  # what is kept
    period: str  # for how long, in words
    setting: str  # the environment variable that sets it ("" when none)


@dataclass(frozen=True)
class PolicyFacts:
    """What the documents may state about this deployment (built from the settings)."""

    contact_email: str
    site_url: str
    retention: tuple[RetentionRow, ...]
    clerk: bool = False  # sign-in through Clerk
    stripe: bool = False  # card payments through Stripe
    analytics_host: str | None = None  # the analytics script's host; None: no analytics
    store_prompts_default: bool = True
    object_storage: bool = False  # outputs on S3-compatible storage rather than local disk
    vendors: tuple[str, ...] = ()  # the AI vendors requests may be sent to
    grace_days: int = 30
    consent_reask_days: int = 180
    consent_cookie_days: int = 390
    session_days: int = 14

    def context(self) -> dict[str, object]:
        """The placeholders a document may use."""
        return {
            "contact_email": self.contact_email,
            "site_url": self.site_url,
            "retention": self.retention,
            RETENTION_TABLE: retention_table(self.retention),
            "clerk": self.clerk,
            "stripe": self.stripe,
            "analytics": self.analytics_host is not None,
            "analytics_host": self.analytics_host or "",
            "store_prompts_default": self.store_prompts_default,
            "object_storage": self.object_storage,
            "vendors": ", ".join(self.vendors) if self.vendors else "",
            "grace_days": self.grace_days,
            "consent_reask_days": self.consent_reask_days,
            "consent_cookie_days": self.consent_cookie_days,
            "session_days": self.session_days,
        }


def retention_table(rows: tuple[RetentionRow, ...]) -> str:
    """The retention schedule as a Markdown table."""
    lines = ["| Data | How long we keep it | Setting |", "|---|---|---|"]
    for row in rows:
        setting = f"`{row.setting}`" if row.setting else "—"
        lines.append(f"| {_cell(row.data)} | {_cell(row.period)} | {setting} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def render_document(document: LegalDocument, facts: PolicyFacts) -> str:
    """The document's body as HTML; a broken placeholder raises LegalDocumentError."""
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    try:
        template = env.from_string(document.body)
        source = template.render(facts.context())
        uses_table = RETENTION_TABLE in meta.find_undeclared_variables(env.parse(document.body))
    except TemplateError as exc:
        raise LegalDocumentError(
            f"{document.name}.md (version {document.version}): {exc.message or exc}"
        ) from exc
    if document.name == "privacy" and not uses_table:
        source += "\n\n## How long we keep data\n\n" + retention_table(facts.retention)
    html: str = _MARKDOWN.render(source)
    return html
