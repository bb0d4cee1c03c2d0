"""The guides under `/docs/guides`: Markdown files shipped in this folder, rendered by us.

`library` loads and renders them (code samples name this server's address; the facts a
guide states — limits, caps, error statuses — come from the running configuration and the
code, never typed into the text), `errors_table` is the error reference generated from the
error classes, and `pages` serves them.
"""
