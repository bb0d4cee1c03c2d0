"""Key options of the operator CLI against a real server: management keys, spend limits,
expiry — and the management API driven with the keys the CLI printed."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_management_and_limited_keys_from_the_cli(server: Server) -> None:
    email = "keys.owner@example.com"
    server.cli("users", "create", email)
    server.cli("credits", "grant", email, "1", "--reason", "test")
    made = server.cli("keys", "create", email, "--name", "ops", "--management").stdout
    assert "created management key" in made
    manager = made.strip().splitlines()[-1]
    limited = (
        server.cli(
            "keys",
            "create",
            email,
            "--name",
            "batch",
            "--spend-limit",
            "0.016",
            "--period",
            "day",
            "--expires",
            "2999-01-01T00:00:00Z",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    listing = {
        line.split("\t")[1]: line.split("\t")
        for line in server.cli("keys", "list", email).stdout.splitlines()
    }
    assert listing["ops"][3:] == [
        "active",
        "never used",
        "management",
        "no spend limit",
        "no expiry",
    ]
    assert listing["batch"][5:] == [
        "normal",
        "limit $0.0160/day",
        "expires 2999-01-01T00:00:00+00:00",
    ]

    # The limit holds: one $0.016 image, then 402; the management key itself cannot generate.
    url = server.url
    assert (
        httpx.post(f"{url}{IMAGE}", json=DALLE2, headers=_auth(limited), timeout=30).status_code
        == 200
    )
    over = httpx.post(f"{url}{IMAGE}", json=DALLE2, headers=_auth(limited), timeout=30)
    assert over.status_code == 402
    assert over.json()["error"]["code"] == "key_spend_limit"
    assert (
        httpx.post(f"{url}{IMAGE}", json=DALLE2, headers=_auth(manager), timeout=30).status_code
        == 403
    )

    created = httpx.post(
        f"{url}/v1/api-keys",
        json={"name": "from-api", "spend_limit": "0.5", "spend_limit_period": "week"},
        headers=_auth(manager),
    )
    assert created.status_code == 201, created.text
    assert "from-api\t" in server.cli("keys", "list", email).stdout
    assert "limit $0.5000/week" in server.cli("keys", "list", email).stdout
    credits = httpx.get(f"{url}/v1/credits?by_api_key=true", headers=_auth(limited)).json()
    [batch] = [i for i in credits["usage_by_api_key"] if i["api_key_name"] == "batch"]
    assert (batch["spend_limit"], batch["period_spend"]) == ("0.0160", "0.0160")
    assert httpx.post(f"{url}/v1/auth/test", headers=_auth(limited)).status_code == 200
    revoked = httpx.delete(f"{url}/v1/api-keys/{listing['batch'][0]}", headers=_auth(manager))
    assert revoked.status_code == 200
    assert httpx.post(f"{url}/v1/auth/test", headers=_auth(limited)).status_code == 401
    assert "\trevoked\t" in server.cli("keys", "list", email).stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--period", "day"), "--period needs --spend-limit"),
        (("--spend-limit", "lots"), "not a USD amount"),
        (("--spend-limit=-1",), "must not be negative"),
        (("--spend-limit", "1", "--period", "year"), "spend_limit_period must be"),
        (("--expires", "2001-01-01"), "must be in the future"),
        (("--expires", "soon"), "ISO 8601"),
    ],
)
def test_bad_key_options_exit_non_zero(
    server: Server, options: tuple[str, ...], message: str
) -> None:
    done = server.cli("keys", "create", "admin@localhost", *options, check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
