"""Outgoing webhooks: generation events delivered to the accounts' endpoints.

- `signing`: Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
  `webhook-signature` = `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, `whsec_` secrets).
- `targets`: which URLs may be called (the vendor-output guard: public addresses only unless
  ALLOW_PRIVATE_UPSTREAMS), checked at registration and again at every delivery.
- `endpoints`: the account's endpoints, its request secret and its delivery log.
- `events`: the generation's `events` collaborator; records one delivery per target.
- `delivery`: the runner every server process starts: claims due deliveries (SKIP LOCKED on
  PostgreSQL), posts them, backs off, gives up after the retry window, disables endpoints
  that keep failing and queues the e-mail that says so (`notices`).

See docs/webhooks.md.
"""
