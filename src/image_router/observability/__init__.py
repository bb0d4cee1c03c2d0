"""Logs, request ids and metrics.

Kept empty on purpose: `metrics` is imported by services, which must not pull in the ASGI
middleware (and Starlette) through this package.
"""
