"""Idempotency keys (issue #14 §1): the same `Idempotency-Key` and the same request within
the retention period get the first answer again, never a second vendor call or charge.

`keys.py` checks a key and hashes what identifies it and the request; `store.py` keeps the
claims and answers in the database, the one authority every worker and machine shares.
The HTTP side (reading the header, fingerprinting the body, replaying) is
`api/idempotency.py`. See docs/idempotency.md.
"""
