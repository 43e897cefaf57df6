"""Migrations are applied by number, once: two files with one number would leave the second unapplied."""

from __future__ import annotations

from collections import Counter

from services.infra.db import _migration_files


def test_every_migration_has_its_own_number() -> None:
    numbers = Counter(number for number, _, _ in _migration_files())
    assert numbers, "no migrations found"
    assert [n for n, count in numbers.items() if count > 1] == []
