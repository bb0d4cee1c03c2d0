"""Every table holding an account's rows is covered by each privacy right, or exempt with a
reason (privacy/inventory.py): the export names it, the erasure deletes it (or says what it
keeps and why), the retention purge has a category for it, and the privacy policy's
retention table has a row for it whose setting is a real one.

A new table with an `account_id` column fails the first test until someone decides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from image_router.config.settings import Settings
from image_router.db.base import Base
from image_router.legal.render import RetentionRow
from image_router.privacy import erasure
from image_router.privacy.export_texts import README
from image_router.privacy.inventory import DELETE, INVENTORY, Coverage, Exempt
from image_router.privacy.retention import COUNTS
from image_router.resources import policy_facts
from tests.conftest import gateway_settings

ACCOUNT_COLUMNS = ("account_id", "subject_account_id")


def tables_with_an_account() -> set[str]:
    return {
        name
        for name, table in Base.metadata.tables.items()
        if any(column in table.columns for column in ACCOUNT_COLUMNS)
    }


@pytest.fixture
def retention_rows(tmp_path: Path) -> tuple[RetentionRow, ...]:
    settings = gateway_settings(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    return policy_facts(settings).retention


def test_every_table_with_an_account_column_is_in_the_inventory() -> None:
    found = tables_with_an_account()
    assert found - set(INVENTORY) == set(), "tables holding account rows with no privacy entry"
    assert set(INVENTORY) - found == set(), "inventory entries for tables that do not exist"


@pytest.mark.parametrize("table", sorted(INVENTORY))
def test_each_exemption_gives_a_reason(table: str) -> None:
    coverage = INVENTORY[table]
    for right in (coverage.export, coverage.erasure, coverage.retention, coverage.policy):
        if isinstance(right, Exempt):
            assert len(right.reason.split()) >= 4, f"{table}: say why, not just that"
        else:
            assert right, f"{table}: an empty entry is neither covered nor exempt"


@pytest.mark.parametrize("table", sorted(INVENTORY))
def test_the_export_readme_names_the_members_holding_the_table(table: str) -> None:
    members = INVENTORY[table].export
    if isinstance(members, Exempt):
        return
    for member in members:
        assert f"  {member} " in README or f"  {member}\n" in README, member


def test_the_erasure_deletes_exactly_the_tables_the_inventory_says() -> None:
    deleted = {model.__tablename__ for model in erasure.DELETED_TABLES}
    said = {name for name, c in INVENTORY.items() if c.erasure == DELETE}
    assert deleted == said
    for name, coverage in INVENTORY.items():
        if coverage.erasure != DELETE and not isinstance(coverage.erasure, Exempt):
            # What is kept instead is described in words, never a bare keyword.
            assert len(str(coverage.erasure).split()) >= 4, name


@pytest.mark.parametrize("table", sorted(INVENTORY))
def test_the_retention_purge_has_the_categories_named(table: str) -> None:
    categories = INVENTORY[table].retention
    if isinstance(categories, Exempt):
        return
    for category in categories:
        assert category in COUNTS, f"{table}: no purge category {category!r}"


@pytest.mark.parametrize("table", sorted(INVENTORY))
def test_the_policy_retention_table_has_a_row_for_the_table(
    table: str, retention_rows: tuple[RetentionRow, ...]
) -> None:
    coverage: Coverage = INVENTORY[table]
    if isinstance(coverage.policy, Exempt):
        return
    wanted = coverage.policy
    assert any(row.setting == wanted or row.data.startswith(wanted) for row in retention_rows), (
        f"{table}: the privacy policy's retention table has no row {wanted!r}"
    )


def test_every_setting_the_retention_table_names_exists(
    retention_rows: tuple[RetentionRow, ...],
) -> None:
    known = {
        name.upper()
        for group in Settings.model_fields.values()
        if group.annotation is not None and hasattr(group.annotation, "model_fields")
        for name in group.annotation.model_fields
    }
    assert known, "the settings groups were not found"
    for row in retention_rows:
        if row.setting:
            assert row.setting in known, f"{row.data!r} names an unknown setting {row.setting}"
