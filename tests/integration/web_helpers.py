"""Helpers for the website tests: CSRF tokens out of pages, signing up through the forms."""

from __future__ import annotations

import re

import httpx

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery"


def csrf_of(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def sign_up(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    token = await form_token(client, "/signup")
    return await client.post(
        "/signup",
        data={"csrf_token": token, "email": email, "password": password, "accept_terms": "on"},
    )


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    token = await form_token(client, "/signin")
    return await client.post(
        "/signin", data={"csrf_token": token, "email": email, "password": password}
    )


def set_cookie(response: httpx.Response, name: str) -> str:
    """The Set-Cookie header of `name` (lower-cased), which must be there."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.lower()
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers}")
