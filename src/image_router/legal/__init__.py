"""The policy documents (privacy policy, terms, cookie policy) and how they are loaded.

The shipped documents live next to this file; an operator replaces them with LEGAL_DIR.
`documents` parses and validates them (pure: no database, no web framework); `render`
turns one into HTML with the deployment's facts (retention periods, contacts) filled in.
"""
