"""The redaction net: secrets never reach a log line, ordinary text is left alone."""

from __future__ import annotations

import json

import pytest

from image_router.kit.ids import API_KEY_LENGTH, API_KEY_PREFIX
from image_router.observability.redact import REDACTED, redact

# Fixed, not random: parameter ids must be the same in every xdist worker.
API_KEY = API_KEY_PREFIX + ("k3Y" * 30)[: API_KEY_LENGTH - len(API_KEY_PREFIX)]
OPENAI_KEY = "sk-proj-Abc123def456GHI789jkl012"
STRIPE_KEY = "sk_live_51HxYzAbCdEfGhIjKl"
GOOGLE_KEY = "AIzaSyA1b2C3d4E5f6G7h8"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.DEF-ghi_123~x/y+z==", "abc.DEF-ghi_123~x/y+z=="),
        ("sent header bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("{'authorization': 'Key fal-id:fal-secret'}", "fal-secret"),
        (f"unknown key {API_KEY} used", API_KEY),
        (f"vendor said: invalid key {OPENAI_KEY}.", OPENAI_KEY),
        (f"stripe {STRIPE_KEY}", STRIPE_KEY),
        (f"GET https://g.example/v1beta/models/x:predict?key={GOOGLE_KEY}&alt=sse", GOOGLE_KEY),
        ("POST /upload?api_key=s3cr3t-value", "s3cr3t-value"),
        ("POST /upload?x-api-key=s3cr3t-value", "s3cr3t-value"),
        ("callback https://h.example/cb?id=1&token=t0k3n.v4lue", "t0k3n.v4lue"),
        ("retrying with access_token=ya29.a0AfH6SM", "ya29.a0AfH6SM"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    clean = redact(text)
    assert secret not in clean
    assert REDACTED in clean


def test_the_rest_of_the_line_survives() -> None:
    url = f"https://g.example/v1/models/x?alt=sse&key={GOOGLE_KEY}&n=2"
    assert redact(url) == f"https://g.example/v1/models/x?alt=sse&key={REDACTED}&n=2"
    assert redact("Authorization: Bearer abcdefghijkl") == f"Authorization: {REDACTED}"
    assert redact("header Bearer abcdefghijkl sent") == f"header Bearer {REDACTED} sent"


@pytest.mark.parametrize(
    "text",
    [
        "generation 5b0e3c2a finished in 2.1s",
        "the monkey=banana setting",  # `key=` inside a longer word
        "task-1234567890abcdefghijkl failed",  # `sk-` inside a word
        "the bearer of bad news",
        f"key {API_KEY[:7]}…{API_KEY[-4:]} revoked",  # the shown prefix and last four
        "",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_a_json_line_stays_valid_json() -> None:
    line = json.dumps(
        {"message": f'call "https://x.example/?key=abc\\"def" with Bearer {API_KEY}', "n": 1}
    )
    parsed = json.loads(redact(line))
    assert API_KEY not in parsed["message"] and "abc" not in parsed["message"]
    assert parsed["n"] == 1
