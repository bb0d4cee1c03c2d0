"""Where a database of Image Router lives, as shell assignments for the backup scripts.

    python3 dburl.py main|keys

reads DATABASE_URL / DATA_KEYS_URL / DATA_DIR like the gateway does (unset: the SQLite
files under DATA_DIR) and prints, shell-quoted, either `DB_KIND=postgresql` with libpq's
PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE (and PGSSLMODE), or `DB_KIND=sqlite` with
SQLITE_PATH. The password travels in the environment, never on a command line that `ps`
shows. Standard library only: the scripts run on hosts without the project installed.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


def target(which: str, env: dict[str, str]) -> dict[str, str]:
    data_dir = Path(env.get("DATA_DIR") or "data")
    main = env.get("DATABASE_URL") or f"sqlite:///{(data_dir / 'image-router.db').resolve()}"
    keys = env.get("DATA_KEYS_URL") or f"sqlite:///{(data_dir / 'keys' / 'data-keys.db').resolve()}"
    if describe(main) == describe(keys):
        raise SystemExit("error: DATA_KEYS_URL names the main database; it must be another one")
    return describe(main if which == "main" else keys)


def describe(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        # sqlite:///relative or sqlite:////absolute, as SQLAlchemy spells them.
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or path == ":memory:":
            raise SystemExit(f"error: not a SQLite file: {url}")
        return {"DB_KIND": "sqlite", "SQLITE_PATH": str(Path(path.split("?", 1)[0]).resolve())}
    if scheme not in ("postgresql", "postgres"):
        raise SystemExit(f"error: unsupported database URL scheme {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    found = {
        "DB_KIND": "postgresql",
        "PGHOST": query.get("host") or parts.hostname or "",
        "PGPORT": str(parts.port or query.get("port") or 5432),
        "PGUSER": unquote(parts.username or ""),
        "PGPASSWORD": unquote(parts.password or ""),
        "PGDATABASE": unquote(parts.path.lstrip("/")),
    }
    # asyncpg's ?ssl= takes libpq's sslmode names; libpq's own ?sslmode= too.
    mode = query.get("sslmode") or query.get("ssl")
    if mode:
        found["PGSSLMODE"] = mode
    if not found["PGDATABASE"]:
        raise SystemExit(f"error: no database name in {parts.scheme}://…{parts.path}")
    return {k: v for k, v in found.items() if v}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("main", "keys"):
        sys.stderr.write("usage: dburl.py main|keys\n")
        return 2
    for name, value in target(argv[0], dict(os.environ)).items():
        sys.stdout.write(f"{name}={shlex.quote(value)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
