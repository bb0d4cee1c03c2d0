"""The guides under /docs/guides: each renders, links resolve, samples call this server, and
what they state (limits, error statuses) is what the server does."""

from __future__ import annotations

import ast
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest

import image_router
from image_router.errors import GatewayError
from image_router.web.guides import errors_table
from image_router.web.guides.library import GuideError, load_guides
from tests.conftest import Gateway

GUIDES = load_guides()
SRC = Path(image_router.__file__).parent


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _hrefs(html: str) -> set[str]:
    return {unescape(h) for h in re.findall(r'href="([^"]+)"', html)}


async def _page(gateway: Gateway, path: str, **kwargs: Any) -> str:
    response = await gateway.client.get(path, **kwargs)
    assert response.status_code == 200, (path, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    return response.text


async def test_the_index_lists_every_guide_and_links_back(gateway: Gateway) -> None:
    page = await _page(gateway, "/docs/guides")
    for guide in GUIDES:
        assert f'href="{guide.path}"' in page
        assert guide.title in page
    assert 'href="/docs"' in page  # the API reference
    assert 'href="/"' in page  # the site (header)
    # ... and the API reference links to the guides.
    assert 'href="/docs/guides"' in await _page(gateway, "/docs")


@pytest.mark.parametrize("guide", GUIDES, ids=[g.slug for g in GUIDES])
async def test_each_guide_renders_and_its_links_resolve(gateway: Gateway, guide: Any) -> None:
    page = await _page(gateway, guide.path)
    assert f"<h1>{guide.title}</h1>" in page
    assert f"<title>{guide.title} · Guides" in page
    spec = (await gateway.client.get("/openapi.json")).json()
    operations = {
        (op.get("tags") or ["default"])[0].replace(" ", "%20") + "/" + op["operationId"]
        for ops in spec["paths"].values()
        for op in ops.values()
    }
    for href in _hrefs(page):
        if href.startswith("#"):
            assert f'id="{href[1:]}"' in page, href
            continue
        if not href.startswith("/"):
            assert href.startswith(("http://gateway.test", "mailto:")), href
            continue
        path, _, fragment = href.partition("#")
        target = await gateway.client.get(path, follow_redirects=True)
        assert target.status_code == 200, href
        if path == "/docs" and fragment:
            assert fragment.removeprefix("/") in operations, href
        elif fragment:
            assert f'id="{fragment}"' in target.text, href


async def test_the_samples_name_this_servers_public_url(gateway: Gateway) -> None:
    for guide in GUIDES:
        page = await _page(gateway, guide.path)
        code = " ".join(re.findall(r"<code[^>]*>(.*?)</code>", page, re.DOTALL))
        if "curl" in code or "OpenAI(" in code:
            assert "http://gateway.test" in code, guide.slug
        assert "127.0.0.1" not in code and "localhost" not in code, guide.slug
    quickstart = await _page(gateway, "/docs/guides/quickstart")
    assert 'base_url="http://gateway.test/v1/openai"' in unescape(quickstart)
    assert 'baseURL: "http://gateway.test/v1/openai"' in unescape(quickstart)


@pytest.mark.parametrize("gateway_overrides", [{"public_url": None}])
async def test_without_public_url_the_samples_use_the_requests_address(
    gateway: Gateway,
) -> None:
    page = unescape(
        await _page(gateway, "/docs/guides/quickstart", headers={"host": "docs.example:8443"})
    )
    assert 'base_url="http://docs.example:8443/v1/openai"' in page
    # A Host header no URL is made of is not repeated into the samples.
    odd = unescape(await _page(gateway, "/docs/guides/quickstart", headers={"host": 'x"y<z'}))
    assert 'x"y<z' not in odd and 'base_url="http://127.0.0.1:8000/v1/openai"' in odd


async def test_code_blocks_and_tables_use_the_design_system(gateway: Gateway) -> None:
    page = await _page(gateway, "/docs/guides/images")
    assert page.count('class="codeblock"') == page.count("<pre")
    assert page.count('data-copy="') == page.count("<pre")
    assert page.count('class="table-wrap"') == page.count("<table")
    assert 'id="response-formats"' in page


async def test_an_unknown_guide_is_a_404_page(gateway: Gateway) -> None:
    response = await gateway.client.get("/docs/guides/no-such-guide")
    assert response.status_code == 404
    assert "No guide is called" in response.text


# ------------------------------------------------------------- what the guides state


@pytest.mark.parametrize(
    "gateway_overrides",
    [
        {
            "rate_limits_enabled": True,
            "rate_limit_general": "30/second",
            "rate_limit_account_image_step_usd": "0.5",
            "rate_limit_account_image_min": 3,
            "rate_limit_account_image_max": 9,
            "free_daily_limit_funded": 7,
            "free_daily_limit_unfunded": 2,
        }
    ],
)
async def test_the_limits_guide_states_this_servers_settings(gateway: Gateway) -> None:
    text = _text(await _page(gateway, "/docs/guides/limits"))
    assert "30 per second" in text
    assert "from 3 to 9 per second" in text
    assert "clamp(floor(balance_usd / 0.5), 3, 9)" in text
    # The table comes from the limiter itself: $1 → 3 (the minimum), $10 → 9 (the maximum).
    assert "$1 3 1" in text and "$10 9 1" in text
    assert "7, per account and per address" in text
    assert "2, per account and per address" in text


async def test_the_limits_guide_says_when_rate_limits_are_off(gateway: Gateway) -> None:
    text = _text(await _page(gateway, "/docs/guides/limits"))
    assert "without rate limits" in text
    assert "50, per account and per address" in text  # FREE_DAILY_LIMIT_FUNDED's default


def _raised_codes() -> set[tuple[str, str]]:
    """(class name, code) of every `SomeError(..., code="literal")` in the source."""
    found = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            for keyword in node.keywords:
                if keyword.arg == "code" and isinstance(keyword.value, ast.Constant):
                    found.add((str(name), str(keyword.value.value)))
    return found


def _error_classes() -> dict[str, list[type[GatewayError]]]:
    import image_router.app  # noqa: F401  (imports every module that defines an error)

    classes: dict[str, list[type[GatewayError]]] = {}
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        classes.setdefault(cls.__name__, []).append(cls)
        todo.extend(cls.__subclasses__())
    return classes


#: Class defaults that no call site leaves in place (each sets its own `code`).
NEVER_SENT = {(502, "upstream_failed")}


def test_the_error_reference_documents_every_code_the_server_raises() -> None:
    documented = {(row.status, row.error_code) for row in errors_table.rows()} | NEVER_SENT
    classes = _error_classes()
    missing = set()
    for name, cls_list in classes.items():
        for cls in cls_list:
            ours = cls is not GatewayError and cls.__module__.startswith("image_router")
            if ours and cls.code and (cls.status, cls.code) not in documented:
                missing.add(f"{cls.__module__}.{name}: {cls.status} {cls.code}")
    for name, code in _raised_codes():
        for cls in classes.get(name, []):
            if (cls.status, code) not in documented:
                missing.add(f"{name}(code={code!r}): {cls.status}")
    assert not missing, sorted(missing)


async def test_the_errors_guide_shows_each_row_with_its_class_status(gateway: Gateway) -> None:
    page = await _page(gateway, "/docs/guides/errors")
    rows = [_text(r) for r in re.findall(r"<tr>(.*?)</tr>", page, re.DOTALL)]
    for row in errors_table.rows():
        assert any(r.startswith(f"{row.status} {row.error_type} {row.error_code}") for r in rows), (
            row
        )


def test_a_malformed_guide_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken.md").write_text("no front matter\n")
    with pytest.raises(GuideError, match=r"broken\.md"):
        load_guides.__wrapped__(tmp_path)
    (tmp_path / "broken.md").write_text("---\ntitle: T\nsummary: S\norder: 1\n---\n{{ x\n")
    with pytest.raises(GuideError, match=r"broken\.md"):
        load_guides.__wrapped__(tmp_path)
