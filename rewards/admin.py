"""The operator's tool for the points ledger and the earning rules.

The ledger (accounts, entries, lots, consumptions, the system accounts' balances) and the
counters it keeps (check-ins, daily earnings) are read-only here: only ``rewards.services`` write
them. Operators award and deduct
points with the member actions ("Award points", "Deduct points") in the members admin.
"""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.validators import MinValueValidator
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from core.admin_base import ReadOnlyModelAdmin
from rewards.models import (
    CheckIn,
    DailyEarning,
    EarningRule,
    LotConsumption,
    PointsAccount,
    PointsEntry,
    PointsLot,
    SystemAccount,
    SystemAccountBalance,
)
from rewards.selectors import system_account_balances

# --- The ledger ----------------------------------------------------------------------------------


@admin.register(PointsAccount)
class PointsAccountAdmin(ReadOnlyModelAdmin):
    list_display = ("member", "available", "pending", "lifetime_earned", "version", "updated_at")
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member",)
    ordering = ("-updated_at", "-pk")


@admin.register(PointsEntry)
class PointsEntryAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "member",
        "version",
        "kind",
        "points",
        "counter_account",
        "balance_after",
        "reason",
        "actor",
        "created_at",
    )
    list_filter = ("kind", "counter_account", "reason", "created_at")
    search_fields = ("=member__external_id", "^reference")
    search_help_text = "A member's external id (exact), or the beginning of a reference."
    list_select_related = ("member",)
    # Served by the (-created_at, -id) index.
    ordering = ("-created_at", "-id")


@admin.register(SystemAccountBalance)
class SystemAccountBalanceAdmin(ReadOnlyModelAdmin):
    """The program's side of the double-entry ledger: the shard rows, and above them each
    account's balance (the sum of its shards)."""

    list_display = ("account", "shard", "balance")
    list_filter = ("account",)
    ordering = ("account", "shard")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        balances = system_account_balances()
        extra_context = {
            **(extra_context or {}),
            "system_accounts": [
                (label, balances[account]) for account, label in SystemAccount.choices
            ],
            "system_total": sum(balances.values()),
        }
        return super().changelist_view(request, extra_context)


@admin.register(PointsLot)
class PointsLotAdmin(ReadOnlyModelAdmin):
    list_display = (
        "entry_id",
        "member",
        "points",
        "remaining",
        "expires_at",
        "is_pending",
        "pending_until",
        "created_at",
    )
    list_filter = ("is_pending", "expires_at")
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member",)
    # The primary key is the lot's entry id, which grows with time: newest first, by its index.
    ordering = ("-pk",)


@admin.register(LotConsumption)
class LotConsumptionAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "entry", "lot", "points")
    list_filter = ("entry__kind",)
    search_fields = ("=entry__member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("entry", "lot")
    ordering = ("-id",)


@admin.register(CheckIn)
class CheckInAdmin(ReadOnlyModelAdmin):
    list_display = ("member", "business_date", "streak", "points_awarded", "entry", "created_at")
    list_filter = ("business_date",)
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member", "entry")
    ordering = ("-created_at", "-id")


@admin.register(DailyEarning)
class DailyEarningAdmin(ReadOnlyModelAdmin):
    list_display = ("member", "event_type", "business_date", "points", "awards_count")
    list_filter = ("business_date",)
    # A search rather than a filter on the event type: its list of values would scan the table.
    search_fields = ("=member__external_id", "=event_type")
    search_help_text = "A member's external id or an event type (exact)."
    list_select_related = ("member",)
    ordering = ("-business_date", "-id")


# --- Earning rules -------------------------------------------------------------------------------


class EarningRuleAdminForm(forms.ModelForm):
    class Meta:
        model = EarningRule
        fields = (
            "event_type",
            "points",
            "per_currency_unit",
            "daily_cap",
            "hourly_limit",
            "min_tier",
            "pending_days",
            "expiry_days",
            "is_active",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "points" in self.fields:
            # The check constraint would say the same, naming the constraint instead of the field.
            self.fields["points"].validators.append(MinValueValidator(1))
            self.fields["points"].widget.attrs["min"] = 1

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        pending_days = cleaned.get("pending_days")
        lifetime_days = cleaned.get("expiry_days") or settings.LOYALTY_POINTS_EXPIRY_DAYS
        if pending_days is not None and pending_days >= lifetime_days:
            # Points still pending when their lot expires could never be spent.
            self.add_error(
                "pending_days", f"Must be fewer than the points' lifetime ({lifetime_days} days)."
            )
        return cleaned


@admin.register(EarningRule)
class EarningRuleAdmin(admin.ModelAdmin):
    form = EarningRuleAdminForm
    list_display = (
        "event_type",
        "points",
        "per_currency_unit",
        "daily_cap",
        "hourly_limit",
        "min_tier",
        "pending_days",
        "expiry_days",
        "is_active",
    )
    list_editable = ("points", "daily_cap", "hourly_limit", "is_active")
    list_filter = ("is_active", "per_currency_unit")
    search_fields = ("event_type",)
    list_select_related = ("min_tier",)
    ordering = ("event_type",)
    readonly_fields = ("updated_at",)

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[forms.ModelForm]:
        # The list's rows validate like the change form (its fields limited to list_editable).
        kwargs.setdefault("form", EarningRuleAdminForm)
        return super().get_changelist_form(request, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: EarningRule, form: forms.ModelForm, change: bool
    ) -> None:
        # No earning-rule service exists: a rule is plain configuration the form has validated.
        # updated_at is business time (no auto_now), so the interface reads the clock.
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
