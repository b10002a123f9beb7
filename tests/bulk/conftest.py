"""Fixtures of the bulk operation tests: many members written set-based (never a factory loop)."""

from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from members.models import Member, MemberTag, TagCategory, TagSource


@pytest.fixture
def bulk_members(db: Any) -> Callable[..., list[Member]]:
    """``count`` members ``{prefix}-000001``... in one ``bulk_create``; with ``tag``
    (``namespace:key``) each carries that tag."""

    def make(count: int, *, prefix: str = "bulk", tag: str | None = None) -> list[Member]:
        at = timezone.now()
        members = Member.objects.bulk_create(
            Member(
                external_id=f"{prefix}-{number:06d}",
                display_name=f"Bulk {number}",
                joined_at=at,
                tier_id="basic",
                tier_since=at,
                lifecycle_changed_at=at,
                created_at=at,
                updated_at=at,
            )
            for number in range(1, count + 1)
        )
        if tag is not None:
            namespace, key = tag.split(":")
            MemberTag.objects.bulk_create(
                MemberTag(
                    member=member,
                    namespace=namespace,
                    key=key,
                    category=TagCategory.CUSTOM,
                    source=TagSource.ADMIN,
                    written_by="tests",
                    synced_at=at,
                    created_at=at,
                )
                for member in members
            )
        return members

    return make
