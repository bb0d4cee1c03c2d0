"""Calendar days of stored moments, in SQL: the UTC day of a timestamp column, as text.

SQLite stores our UTC moments as naive text and PostgreSQL as `timestamptz`; both answer
`YYYY-MM-DD` for the UTC day, so per-day sums group in the database on either engine.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func


def utc_day(column: Any, dialect: str) -> ColumnElement[str]:
    """`YYYY-MM-DD`, the UTC day of `column`, for the engine named `dialect`."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)
