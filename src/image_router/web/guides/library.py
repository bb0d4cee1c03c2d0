"""Loading and rendering the guides: Markdown with a small YAML front matter.

    ---
    title: Quickstart
    summary: One sentence for the index.
    order: 1
    ---
    Markdown, with {{ placeholders }} for this server's facts (see `GuideContext`).

A guide is a Jinja template in a sandbox (it can only read what the context offers) whose
output is CommonMark with tables; raw HTML in a guide is shown as text. The HTML is shaped
for the site's design system: fenced code becomes a code block with a Copy button (its
`<code>` keeps `language-…`), tables scroll inside their own box, headings get ids.

Every guide is parsed and compiled once; a malformed one raises `GuideError` naming the
file (the tests render them all).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

GUIDES_DIR = Path(__file__).parent
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_LANGUAGES = {
    "python": "Python",
    "js": "JavaScript",
    "javascript": "JavaScript",
    "sh": "Shell",
    "shell": "Shell",
    "json": "JSON",
    "http": "HTTP",
    "text": "",
}


class GuideError(ValueError):
    """A guide is malformed; the message names the file."""


@dataclass(frozen=True)
class Guide:
    slug: str  # the file name without `.md`; the page is /docs/guides/<slug>
    title: str
    summary: str
    order: int
    template: Template = field(repr=False, compare=False)

    @property
    def path(self) -> str:
        return f"/docs/guides/{self.slug}"


@dataclass(frozen=True)
class GuideContext:
    """What a guide may use: `{{ base_url }}`, `{{ api_base }}`, `{{ api("post", path) }}`
    (the link to that operation in the API reference) and the `facts` of this server."""

    base_url: str  # this server's public address, no trailing slash
    api_reference: Callable[[str, str], str]
    facts: Mapping[str, Any]

    def variables(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_base": f"{self.base_url}/v1/openai",
            "api": self.api_reference,
            **self.facts,
        }


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@functools.cache
def load_guides(directory: Path = GUIDES_DIR) -> tuple[Guide, ...]:
    """Every `*.md` of `directory`, in their `order`; raises GuideError naming a bad file."""
    guides = [_load(path) for path in sorted(directory.glob("*.md"))]
    return tuple(sorted(guides, key=lambda g: (g.order, g.slug)))


def find_guide(slug: str, guides: Sequence[Guide] | None = None) -> Guide | None:
    return next((g for g in guides or load_guides() if g.slug == slug), None)


def _load(path: Path) -> Guide:
    text = path.read_text(encoding="utf-8")
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise GuideError(f"{path.name}: missing the front matter (---, title, summary, order)")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise GuideError(f"{path.name}: the front matter is not YAML: {exc}") from exc
    slug = path.stem
    if not _SLUG.match(slug):
        raise GuideError(f"{path.name}: the file name must be lower-case letters, digits, -")
    title, summary, order = meta.get("title"), meta.get("summary"), meta.get("order")
    if not isinstance(title, str) or not isinstance(summary, str) or not isinstance(order, int):
        raise GuideError(f"{path.name}: the front matter needs title, summary (text), order")
    try:
        template = _ENV.from_string(text[match.end() :])
    except TemplateError as exc:
        raise GuideError(f"{path.name}: {exc}") from exc
    return Guide(slug=slug, title=title, summary=summary, order=order, template=template)


def render_guide(guide: Guide, context: GuideContext) -> str:
    """The guide's body as HTML; a broken placeholder raises GuideError."""
    try:
        source = guide.template.render(context.variables())
    except TemplateError as exc:
        raise GuideError(f"{guide.slug}.md: {exc.message or exc}") from exc
    html: str = _MARKDOWN.render(source, {"slug": guide.slug})
    return html


# ------------------------------------------------------------------ Markdown → site HTML


def _heading_ids(state: StateCore) -> None:
    """An id on every heading (its words, lower-cased, hyphenated), unique in the page."""
    seen: dict[str, int] = {}
    tokens = state.tokens
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or index + 1 >= len(tokens):
            continue
        words = tokens[index + 1].content
        slug = re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-") or "section"
        seen[slug] = seen.get(slug, 0) + 1
        token.attrSet("id", slug if seen[slug] == 1 else f"{slug}-{seen[slug]}")


def _fence(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    info = token.info.strip().split(maxsplit=1)
    language = info[0].lower() if info else ""
    title = info[1] if len(info) > 1 else _LANGUAGES.get(language, language)
    env["blocks"] = number = env.get("blocks", 0) + 1
    block_id = f"{env.get('slug', 'guide')}-code-{number}"
    css = f' class="language-{escapeHtml(language)}"' if language else ""
    return (
        '<div class="codeblock">'
        '<div class="codeblock-head">'
        f'<span class="codeblock-title">{escapeHtml(title)}</span>'
        f'<span class="copy-status" id="{block_id}-status" role="status"></span>'
        f'<button type="button" class="small secondary copy" data-copy="{block_id}" '
        f'data-copy-status="{block_id}-status" hidden>Copy</button>'
        "</div>"
        f'<pre tabindex="0"><code id="{block_id}"{css}>{escapeHtml(token.content)}</code></pre>'
        "</div>\n"
    )


def _table_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    # A wide table scrolls inside its own box (no sideways scroll of the page on a phone).
    env["tables"] = number = env.get("tables", 0) + 1
    label = escapeHtml(f"Table {number}")
    return f'<div class="table-wrap" role="region" aria-label="{label}" tabindex="0">\n<table>\n'


def _table_close(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    return "</table>\n</div>\n"


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.core.ruler.push("heading_ids", _heading_ids)
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _fence)
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", _table_close)
    return md


_MARKDOWN = _markdown()
