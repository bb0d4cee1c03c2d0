"""Loading the policy documents: Markdown files with a small YAML front matter.

    ---
    version: "2"
    last_updated: 2026-11-27
    material: true            # a change people must be told about (privacy) or accept (terms)
    effective: 2026-12-27     # optional, default last_updated: when the version applies
    title: Privacy Policy     # optional
    last_material_version: "2"  # optional: an older material version still to be announced
    ---
    # Markdown, with {{ placeholders }} for the deployment's facts (see `render`)

Everything is checked when the application starts, so a typo in a document stops the start
with a message naming the file, instead of serving a broken or silently wrong policy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import yaml
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

SHIPPED_DIR = Path(__file__).parent
DOCUMENT_NAMES = ("privacy", "terms", "cookies")
_TITLES = {"privacy": "Privacy Policy", "terms": "Terms of Service", "cookies": "Cookie Policy"}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_KEYS = {"version", "last_updated", "material", "effective", "title", "last_material_version"}
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")  # fits consents.document_version


class LegalDocumentError(ValueError):
    """A policy document is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class LegalDocument:
    name: str  # privacy | terms | cookies
    title: str
    version: str
    last_updated: date
    effective: date  # from this day the version applies (the terms grace period counts from it)
    material: bool
    body: str  # Markdown with Jinja placeholders
    sha256: str  # of the whole file, so a published version can be proven later
    last_material_version: str | None = None

    @property
    def material_version(self) -> str | None:
        """The newest version whose change people must hear about (or accept); None: none."""
        return self.version if self.material else self.last_material_version

    def effective_at(self) -> datetime:
        return datetime(self.effective.year, self.effective.month, self.effective.day, tzinfo=UTC)


@dataclass(frozen=True)
class LegalDocuments:
    privacy: LegalDocument
    terms: LegalDocument
    cookies: LegalDocument

    def get(self, name: str) -> LegalDocument | None:
        """The document called `name` (privacy, terms, cookies), or None."""
        return next((doc for doc in self.all() if doc.name == name), None)

    def all(self) -> tuple[LegalDocument, ...]:
        return (self.privacy, self.terms, self.cookies)


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions naturally: "2" < "10", "1.9" < "1.10", "2026-01-05" < "2026-11-27"."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower()) for part in parts)


def is_older(version: str | None, than: str) -> bool:
    """Is `version` (None: nothing seen or accepted yet) older than `than`?"""
    return version is None or version_key(version) < version_key(than)


def load_documents(directory: Path | None = None) -> LegalDocuments:
    """The three documents of `directory` (default: the shipped ones), validated."""
    folder = directory or SHIPPED_DIR
    if not folder.is_dir():
        raise LegalDocumentError(f"LEGAL_DIR {folder} is not a directory")
    loaded = {name: _load(folder, name) for name in DOCUMENT_NAMES}
    return LegalDocuments(**loaded)


def _load(folder: Path, name: str) -> LegalDocument:
    path = folder / f"{name}.md"
    if not path.is_file():
        raise LegalDocumentError(
            f"{path} is missing: a legal directory needs privacy.md, terms.md and cookies.md"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LegalDocumentError(f"{path} is not UTF-8 text") from exc
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise LegalDocumentError(
            f"{path} has no front matter: start it with a '---' line, then version, "
            "last_updated and material, then another '---' line"
        )
    meta = _front_matter(path, match.group(1))
    body = text[match.end() :]
    _check_placeholders(path, body, first_line=text[: match.end()].count("\n") + 1)
    last_updated = _date(path, meta, "last_updated")
    effective = _date(path, meta, "effective") if "effective" in meta else last_updated
    material = meta["material"]
    if not isinstance(material, bool):
        raise LegalDocumentError(f"{path}: 'material' must be true or false, not {material!r}")
    title = meta.get("title", _TITLES[name])
    if not isinstance(title, str) or not title.strip():
        raise LegalDocumentError(f"{path}: 'title' must be a non-empty text")
    last_material = meta.get("last_material_version")
    return LegalDocument(
        name=name,
        title=title.strip(),
        version=_version(path, meta["version"], "version"),
        last_updated=last_updated,
        effective=effective,
        material=material,
        body=body,
        sha256=hashlib.sha256(raw).hexdigest(),
        last_material_version=(
            None
            if last_material is None
            else _version(path, last_material, "last_material_version")
        ),
    )


def _front_matter(path: Path, source: str) -> dict[str, object]:
    try:
        meta = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise LegalDocumentError(f"{path}: the front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise LegalDocumentError(f"{path}: the front matter must be 'key: value' lines")
    unknown = sorted(str(key) for key in meta if key not in _KEYS)
    if unknown:
        raise LegalDocumentError(
            f"{path}: unknown front matter key(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(_KEYS))})"
        )
    missing = [key for key in ("version", "last_updated", "material") if key not in meta]
    if missing:
        raise LegalDocumentError(f"{path}: the front matter lacks {', '.join(missing)}")
    return {str(key): value for key, value in meta.items()}


def _version(path: Path, value: object, key: str) -> str:
    # YAML reads `version: 2` as an int and `version: 1.10` as the float 1.1: accept whole
    # numbers, and ask for quotes where a float would silently change the version.
    if isinstance(value, (bool, float)):
        raise LegalDocumentError(f"{path}: quote '{key}' (for example {key}: \"{value}\")")
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if not _VERSION.match(text):
        raise LegalDocumentError(
            f"{path}: '{key}' must be 1-40 letters, digits, '.', '-' or '_', not {value!r}"
        )
    return text


def _date(path: Path, meta: Mapping[str, object], key: str) -> date:
    value = meta[key]
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise LegalDocumentError(f"{path}: '{key}' must be a date written YYYY-MM-DD, not {value!r}")


def _check_placeholders(path: Path, body: str, first_line: int) -> None:
    try:
        SandboxedEnvironment().parse(body)
    except TemplateSyntaxError as exc:
        line = exc.lineno + first_line - 1
        raise LegalDocumentError(f"{path}, line {line}: broken placeholder: {exc.message}") from exc
