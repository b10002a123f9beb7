"""The operator's tool for the tier ladder. Which tier a member holds is never edited here."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from tiers.models import TIER_CODES, Tier


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "rank", "expected_share")
    search_fields = ("code", "name")
    ordering = ("rank",)
    fields = ("code", "name", "rank", "description", "expected_share")

    def get_readonly_fields(self, request: HttpRequest, obj: Tier | None = None) -> Any:
        # The code is the tier's stable identifier: members, rules and history refer to it.
        return () if obj is None else ("code",)

    def has_delete_permission(self, request: HttpRequest, obj: Tier | None = None) -> bool:
        # The seeded rungs are the ladder the services rely on (basic is every member's start).
        if obj is not None and obj.code in TIER_CODES:
            return False
        return super().has_delete_permission(request, obj)
