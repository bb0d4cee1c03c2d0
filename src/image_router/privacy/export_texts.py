"""The explanatory parts of a data export: README.txt and privacy_info.json.

privacy_info.json answers what GDPR Art. 15(1) and (2) require beyond the data itself:
purposes, recipients, retention periods, the rights, where the data came from, automated
decisions, and transfers. The deployment-specific facts (which recipients are configured,
the retention settings, the contact) come in as `PolicyFacts`, the same values the
published privacy policy is rendered from, so the export and the policy cannot disagree.
"""

from __future__ import annotations

from image_router.legal.render import PolicyFacts

README = """\
Your data export
================

This archive holds the personal data this service keeps about your account, in
machine-readable form (schema version {schema_version}). Times are UTC (ISO 8601). Money is
given in US dollars and in credits (1 credit = $0.0001).

  manifest.json          the list of files with their sizes and SHA-256 checksums
  account.json           your profile, preferences, restriction, legal acceptances, balance
  privacy_info.json      purposes, recipients, retention periods, your rights, sources
  api_keys.json          your API keys: name, prefix, last four characters, dates, limits
                         (the secret keys themselves are never stored, so never exported)
  usage.jsonl            one line per request: time, model, parameters, status, cost,
                         latency, and the prompt where it is stored
  credit_ledger.jsonl    every change to your credit balance
  payments.json          top-ups, refunds and disputes, with the payment processor's ids
  consents.json          the history of your consents and policy acceptances
  sessions.json          your website sign-in sessions (time, IP address, browser)
  privacy_requests.json  your data-protection requests and when they were answered
  access_log.json        every access to your personal data by staff or automated
                         privacy processes, and your own exports
  webhooks.json          your webhook endpoints (address, description, created,
                         disabled) and whether a secret for per-request webhooks exists;
                         signing secrets are live credentials and are not exported (an
                         endpoint's was shown when it was created; the request secret is
                         on the webhooks page)
  webhook_deliveries.jsonl
                         each webhook event sent (or still to send) that is still in the
                         delivery log: target, event, the payload as sent, attempts, the
                         receiver's answer
  jobs.jsonl             your long-running (async or resumable) generations: state, model,
                         times, error, the request's webhook_url; their outputs and cost
                         are the usage.jsonl line with the same id
  idempotency_keys.jsonl
                         the Idempotency-Keys of your recent requests, as stored: only a
                         SHA-256 of your account id, an empty line and the key (the key
                         itself is never stored), the answer's status and times; the
                         stored answers are not exported (one may hold a new API key's
                         secret), the requests they answered are in usage.jsonl
  generated/             the images and videos you generated that are still stored

JSON files are UTF-8; each line of a .jsonl file is one JSON object. To check that the
archive is complete, compare each file's SHA-256 with manifest.json.
"""

_PURPOSES = [
    {
        "purpose": "Providing the service: your account, generating what you request, "
        "delivering the results",
        "data": [
            "account",
            "usage",
            "generated outputs",
            "prompts (when stored)",
            "jobs",
            "webhook endpoints and deliveries",
            "idempotency keys and their stored answers",
        ],
        "legal_basis": "contract (GDPR Art. 6(1)(b))",
    },
    {
        "purpose": "Prepaid credits, payments, invoices and accounting records",
        "data": ["credit ledger", "payments"],
        "legal_basis": "contract and legal obligation (Art. 6(1)(b) and (c))",
    },
    {
        "purpose": "Security, abuse and fraud prevention, audit of access to personal data",
        "data": ["IP addresses", "sign-in sessions", "access log"],
        "legal_basis": "legitimate interests (Art. 6(1)(f))",
    },
    {
        "purpose": "Improving routing between AI vendors from aggregate request outcomes",
        "data": ["usage metadata (no prompts)"],
        "legal_basis": "legitimate interests (Art. 6(1)(f)); you may object "
        "(preference allow_routing_improvement)",
    },
    {
        "purpose": "Product e-mails, only if you opted in",
        "data": ["e-mail address"],
        "legal_basis": "consent (Art. 6(1)(a)); preference marketing_emails",
    },
]

_RIGHTS = [
    "access and portability (this export)",
    "rectification",
    "erasure (closing your account)",
    "restriction of processing",
    "objection, and withdrawal of consent at any time",
    "complaint to a data-protection supervisory authority",
]


def privacy_info(facts: PolicyFacts, schema_version: int) -> dict[str, object]:
    return {
        "schema_version": schema_version,
        "controller_contact": facts.contact_email,
        "site": facts.site_url,
        "purposes": _PURPOSES,
        "recipients": recipients(facts),
        "retention": [
            {"data": row.data, "period": row.period, "setting": row.setting or None}
            for row in facts.retention
        ],
        "sources": sources(facts),
        "rights": _RIGHTS,
        "automated_decision_making": "none with legal or similarly significant effects; "
        "requests are routed to vendors automatically by price and availability",
        "international_transfers": "recipients may process data outside your country, "
        "including outside the EEA; the privacy policy names the safeguards",
    }


def recipients(facts: PolicyFacts) -> list[dict[str, str]]:
    found = [
        {
            "recipient": "Our hosting provider",
            "role": "processor",
            "purpose": "runs the servers and the database",
        }
    ]
    if facts.object_storage:
        found.append(
            {
                "recipient": "Our object-storage provider",
                "role": "processor",
                "purpose": "stores generated outputs until they expire",
            }
        )
    if facts.clerk:
        found.append(
            {
                "recipient": "Clerk",
                "role": "processor",
                "purpose": "sign-in and identity (e-mail, name, profile image)",
            }
        )
    if facts.stripe:
        found.append(
            {
                "recipient": "Stripe",
                "role": "processor and independent controller for payments",
                "purpose": "card payments, refunds and disputes",
            }
        )
    if facts.analytics_host:
        found.append(
            {
                "recipient": f"Analytics ({facts.analytics_host})",
                "role": "processor",
                "purpose": "website statistics, only after your cookie consent",
            }
        )
    for vendor in facts.vendors:
        found.append(
            {
                "recipient": vendor,
                "role": "AI vendor",
                "purpose": "generates the outputs you request (receives the prompt and "
                "input images of those requests, never your account details)",
            }
        )
    return found


def sources(facts: PolicyFacts) -> list[str]:
    found = ["you: sign-up, settings, and the requests you send"]
    if facts.clerk:
        found.append("Clerk: your sign-in profile (e-mail, name, image)")
    if facts.stripe:
        found.append("Stripe: the outcome of payments, refunds and disputes")
    found.append("this service: usage records, balances, security and audit logs")
    return found
