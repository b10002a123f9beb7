"""The operator's tool for the points ledger and the earning rules.

The ledger (accounts, entries, lots, consumptions, the system accounts' balances) and the
counters it keeps (check-ins, daily earnings) are read-only here: only ``rewards.services`` write
them. Operators award and deduct
points with the member actions ("Award points", "Deduct points") in the members admin.
"""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.validators import MinValueValidator
from django.db.models import Field, QuerySet, URLField
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from core.actors import Actor, ActorKind
from core.admin_base import ReadOnlyModelAdmin
from core.db import durable_atomic
from core.exceptions import DomainError
from rewards.models import (
    Badge,
    BadgeKind,
    Benefit,
    BenefitKind,
    Certification,
    CertificationGrant,
    CheckIn,
    DailyEarning,
    EarningRule,
    LotConsumption,
    MemberBadge,
    PointsAccount,
    PointsEntry,
    PointsLot,
    Redemption,
    Reward,
    SystemAccount,
    SystemAccountBalance,
)
from rewards.selectors import system_account_balances
from rewards.services import catalog, certifications, honors

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


# --- Rewards catalog -----------------------------------------------------------------------------

# An action handles at most this many redemptions (each in its own transaction).
MAX_REDEMPTION_ACTION_ROWS = 100


def _operator_actor(request: HttpRequest) -> Actor:
    """The actor of an operator working in the admin."""
    return Actor(kind=ActorKind.OPERATOR, user_id=request.user.pk, name=request.user.get_username())


def _https_formfield(field: Field, **kwargs: Any) -> forms.Field | None:
    # Image links are https unless they say otherwise (Django 6's default, chosen now).
    if isinstance(field, URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class RewardAdminForm(forms.ModelForm):
    class Meta:
        model = Reward
        fields = catalog.REWARD_FIELDS
        formfield_callback = _https_formfield

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("available_from"), cleaned.get("available_until")
        if start and end and end <= start:
            self.add_error("available_until", "Must be after the start of availability.")
        if cleaned.get("points_cost") == 0:
            self.add_error("points_cost", "Must be at least 1.")
        if cleaned.get("per_member_limit") == 0:
            self.add_error("per_member_limit", "Must be at least 1 (empty: no limit).")
        return cleaned


@admin.register(Reward)
class RewardAdmin(admin.ModelAdmin):
    """Operators edit the catalog here; saving goes through the catalog's services."""

    form = RewardAdminForm
    list_display = (
        "name",
        "points_cost",
        "stock",
        "redeemed_count",
        "min_tier",
        "per_member_limit",
        "available_from",
        "available_until",
        "is_active",
    )
    list_editable = ("points_cost", "stock", "is_active")
    list_filter = ("is_active", "min_tier", "required_benefit")
    search_fields = ("name", "description")
    list_select_related = ("min_tier",)
    ordering = ("-created_at", "-id")
    readonly_fields = ("redeemed_count", "created_at", "updated_at")

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[forms.ModelForm]:
        kwargs.setdefault("form", RewardAdminForm)
        return super().get_changelist_form(request, **kwargs)

    def formfield_for_dbfield(
        self, db_field: Field, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if isinstance(db_field, URLField):
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Reward, form: forms.ModelForm, change: bool
    ) -> None:
        actor, at = _operator_actor(request), timezone.now()
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            saved = catalog.reward_update(reward=obj, actor=actor, at=at, **changes)
        else:
            fields = {name: form.cleaned_data[name] for name in catalog.REWARD_FIELDS}
            saved = catalog.reward_create(actor=actor, at=at, **fields)
        obj.pk, obj.created_at, obj.updated_at = saved.pk, saved.created_at, saved.updated_at
        obj.redeemed_count = saved.redeemed_count


class RedemptionCancelForm(forms.Form):
    reason = forms.CharField(
        max_length=500, help_text="Why (e.g. the item came back); kept on the redemption."
    )


@admin.register(Redemption)
class RedemptionAdmin(ReadOnlyModelAdmin):
    """Redemptions are written only by the catalog's services: read-only, with fulfil and cancel
    actions (a cancellation refunds the points and restores the stock, once)."""

    list_display = (
        "id",
        "member",
        "reward",
        "points",
        "status",
        "actor",
        "created_at",
        "fulfilled_at",
        "cancelled_at",
    )
    list_filter = ("status", "created_at")
    search_fields = ("=member__external_id", "reward__name")
    search_help_text = "A member's external id (exact), or a reward's name."
    list_select_related = ("member", "reward")
    ordering = ("-created_at", "-id")
    actions = ("fulfil", "cancel")

    def has_fulfil_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.fulfil_redemption")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.cancel_redemption")

    def _each(self, request: HttpRequest, queryset: QuerySet[Redemption], apply: Any) -> int:
        done = 0
        for redemption in queryset.order_by("created_at", "id")[:MAX_REDEMPTION_ACTION_ROWS]:
            try:
                # One transaction each: a refusal (already cancelled, ...) undoes only its own.
                with durable_atomic():
                    apply(redemption)
            except DomainError as error:
                self.message_user(request, f"{redemption.pk}: {error.detail}", messages.ERROR)
            else:
                done += 1
        return done

    @admin.action(description="Fulfil selected redemptions", permissions=["fulfil"])
    def fulfil(self, request: HttpRequest, queryset: QuerySet[Redemption]) -> None:
        actor, at = _operator_actor(request), timezone.now()
        done = self._each(
            request,
            queryset,
            lambda redemption: catalog.redemption_fulfil(redemption=redemption, actor=actor, at=at),
        )
        if done:
            self.message_user(request, f"Fulfilled {done} redemption(s).", messages.SUCCESS)

    @admin.action(description="Cancel selected redemptions (refund)...", permissions=["cancel"])
    def cancel(
        self, request: HttpRequest, queryset: QuerySet[Redemption]
    ) -> TemplateResponse | None:
        form = RedemptionCancelForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Cancel redemptions",
                "intro": "Each of these redemptions is cancelled with your reason: its points "
                "are refunded and its item goes back into stock, once. A redemption already "
                f"cancelled is reported and skipped. At most {MAX_REDEMPTION_ACTION_ROWS}.",
                "opts": self.opts,
                "objects": list(queryset.select_related("member", "reward")[:100]),
                "form": form,
                "media": self.media + form.media,
                "action": "cancel",
                "submit_label": "Cancel and refund",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/tiers/action_form.html", context)
        actor, at = _operator_actor(request), timezone.now()
        reason = form.cleaned_data["reason"]
        done = self._each(
            request,
            queryset,
            lambda redemption: catalog.redemption_cancel(
                redemption=redemption, reason=reason, actor=actor, at=at
            ),
        )
        if done:
            self.message_user(request, f"Cancelled {done} redemption(s).", messages.SUCCESS)
        return None


# --- Capability, benefits and honors -------------------------------------------------------------

MAX_REVOKE_ACTION_ROWS = 100


@admin.register(Certification)
class CertificationAdmin(admin.ModelAdmin):
    """Certification definitions (plain configuration); grants are made with the member action
    "Grant a certification" and revoked from the grants list."""

    list_display = ("code", "name", "level", "validity_days", "is_active")
    list_editable = ("is_active",)
    list_filter = ("is_active", "level")
    search_fields = ("code", "name")
    filter_horizontal = ("prerequisites",)
    ordering = ("level", "code")
    readonly_fields = ("created_at",)

    def get_readonly_fields(self, request: HttpRequest, obj: Certification | None = None) -> Any:
        # The code is what tier rules and grants refer to: fixed once created.
        return ("code", "created_at") if obj is not None else ("created_at",)

    def has_delete_permission(self, request: HttpRequest, obj: Certification | None = None) -> bool:
        return False  # deactivate instead: grants and tier rules keep referring to it

    def save_model(
        self, request: HttpRequest, obj: Certification, form: forms.ModelForm, change: bool
    ) -> None:
        # No certification-definition service exists: it is configuration the form validated.
        if not change:
            obj.created_at = timezone.now()
        super().save_model(request, obj, form, change)


class CertificationRevokeForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: kept on each grant.",
    )


@admin.register(CertificationGrant)
class CertificationGrantAdmin(ReadOnlyModelAdmin):
    list_display = (
        "member",
        "certification",
        "granted_at",
        "expires_at",
        "granted_by",
        "revoked_at",
        "revoked_by",
    )
    list_filter = ("certification", ("revoked_at", admin.EmptyFieldListFilter), "granted_at")
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member", "certification")
    ordering = ("-updated_at", "-id")
    actions = ("revoke",)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.revoke_certification")

    @admin.action(description="Revoke selected certifications...", permissions=["revoke"])
    def revoke(
        self, request: HttpRequest, queryset: QuerySet[CertificationGrant]
    ) -> TemplateResponse | None:
        grants = list(
            queryset.select_related("member", "certification").order_by("pk")[
                :MAX_REVOKE_ACTION_ROWS
            ]
        )
        form = CertificationRevokeForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Revoke certifications",
                "intro": "Each of these certifications is revoked with your reason (the grant is "
                "kept with who and why) and the member's tier is reassessed. One not held is "
                f"reported and skipped. At most {MAX_REVOKE_ACTION_ROWS}.",
                "opts": self.opts,
                "objects": grants,
                "form": form,
                "media": self.media + form.media,
                "action": "revoke",
                "submit_label": "Revoke",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/tiers/action_form.html", context)
        actor, at = _operator_actor(request), timezone.now()
        done = 0
        for grant in grants:
            try:
                # One transaction each: a refusal (not held) undoes only its own.
                with durable_atomic():
                    certifications.certification_revoke(
                        member=grant.member,
                        code=grant.certification_id,
                        reason=form.cleaned_data["reason"],
                        actor=actor,
                        at=at,
                    )
            except DomainError as error:
                self.message_user(request, f"{grant}: {error.detail}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"Revoked {done} certification(s).", messages.SUCCESS)
        return None


class BenefitAdminForm(forms.ModelForm):
    points_multiplier = forms.DecimalField(
        min_value=1,
        max_digits=5,
        decimal_places=2,
        required=False,
        help_text="Points multiplier benefits only: the tier's multiplier, the one the earning "
        "rules apply (saved on the tier).",
    )

    class Meta:
        model = Benefit
        fields = (
            "code",
            "tier",
            "kind",
            "name",
            "value",
            "points_multiplier",
            "description",
            "exclusive_to_tier",
            "is_active",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.kind == BenefitKind.POINTS_MULTIPLIER:
            self.fields["points_multiplier"].initial = self.instance.tier.points_multiplier

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        multiplier = cleaned.get("kind") == BenefitKind.POINTS_MULTIPLIER
        if multiplier and cleaned.get("points_multiplier") is None:
            self.add_error("points_multiplier", "A points multiplier benefit needs it.")
        if multiplier and cleaned.get("value") is not None:
            self.add_error("value", "A points multiplier shows its tier's multiplier: leave empty.")
        if multiplier and not cleaned.get("is_active") and cleaned.get("points_multiplier") != 1:
            # The same refusal as honors.benefit_save, shown on the form.
            self.add_error(
                "is_active", "Members earn the multiplier whether shown or not: set it to 1.00."
            )
        if not multiplier and cleaned.get("points_multiplier") is not None:
            self.add_error("points_multiplier", "Only for a points multiplier benefit.")
        return cleaned


@admin.register(Benefit)
class BenefitAdmin(admin.ModelAdmin):
    form = BenefitAdminForm
    list_display = (
        "code",
        "tier",
        "kind",
        "name",
        "shown_value",
        "exclusive_to_tier",
        "is_active",
    )
    list_filter = ("tier", "kind", "is_active")
    search_fields = ("code", "name")
    list_select_related = ("tier",)
    ordering = ("tier__rank", "kind", "code")
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Benefit | None = None) -> Any:
        return ("code", "created_at", "updated_at") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Benefit | None = None) -> bool:
        return False  # deactivate instead: rewards may require a benefit's kind

    @admin.display(description="value")
    def shown_value(self, obj: Benefit) -> Any:
        if obj.kind == BenefitKind.POINTS_MULTIPLIER:
            return f"x{obj.tier.points_multiplier}"
        return obj.value if obj.value is not None else "-"

    def save_model(
        self, request: HttpRequest, obj: Benefit, form: forms.ModelForm, change: bool
    ) -> None:
        honors.benefit_save(
            benefit=obj,
            points_multiplier=form.cleaned_data.get("points_multiplier"),
            actor=_operator_actor(request),
            at=timezone.now(),
        )


class BadgeAdminForm(forms.ModelForm):
    class Meta:
        model = Badge
        fields = ("code", "name", "description", "kind", "rule", "is_title", "level", "is_active")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        rule = cleaned.get("rule", "")
        if cleaned.get("kind") == BadgeKind.AUTOMATIC:
            try:
                honors.badge_rule_parse(rule)
            except ValueError as error:
                self.add_error("rule", str(error))
        elif rule:
            self.add_error("rule", "A manual badge has no rule.")
        return cleaned


@admin.register(Badge)
class BadgeAdmin(admin.ModelAdmin):
    form = BadgeAdminForm
    list_display = ("code", "name", "kind", "rule", "is_title", "level", "is_active")
    list_editable = ("is_active",)
    list_filter = ("kind", "is_title", "is_active")
    search_fields = ("code", "name")
    ordering = ("-level", "code")

    def get_readonly_fields(self, request: HttpRequest, obj: Badge | None = None) -> Any:
        return ("code", "created_at") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Badge | None = None) -> bool:
        return False  # deactivate instead: awards keep referring to it

    def save_model(
        self, request: HttpRequest, obj: Badge, form: forms.ModelForm, change: bool
    ) -> None:
        # No badge-definition service exists: a badge is configuration the form validated.
        if not change:
            obj.created_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(MemberBadge)
class MemberBadgeAdmin(ReadOnlyModelAdmin):
    """Awards, read-only: operators award with the member action "Award a badge"."""

    list_display = ("member", "badge", "awarded_at", "awarded_by", "reason")
    list_filter = ("badge", "awarded_at")
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member", "badge")
    ordering = ("-awarded_at", "-id")
