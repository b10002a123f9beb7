"""The operator's tool for partners, their API keys, the idempotency records, the outbox,
webhooks and background jobs.

Plain API keys and webhook signing secrets are shown once, in a message, when they are issued;
API keys are stored hashed, webhook secrets (needed to sign) are never displayed again.
"""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from core.actors import Actor, ActorKind
from core.admin_base import ReadOnlyModelAdmin
from core.db import durable_atomic
from core.exceptions import DomainError
from core.models import (
    DeliveryStatus,
    IdempotencyRecord,
    Job,
    JobChunk,
    JobStatus,
    OutboxEvent,
    Partner,
    PartnerAPIKey,
    Scope,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from core.services import partner_create, partner_key_issue, partner_keys_revoke
from core.webhooks import (
    ALL_EVENTS,
    EVENT_TYPES,
    WebhookURLError,
    webhook_deliveries_redeliver,
    webhook_secret_rotate,
    webhook_subscription_create,
    webhook_subscription_update,
    webhook_target_resolve,
)

# The package registers its own APIKey model; this project authenticates PartnerAPIKey only, so a
# key made there would open nothing. Hide it to keep operators from issuing useless keys.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


def _adopt_saved(target: Model, saved: Model) -> None:
    """Make the admin's unsaved instance the row a service wrote, for the log and the redirect."""
    for field in saved._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db
    target._state.fields_cache = {}


def _key_issued_message(partner: Partner, key: str) -> str:
    return (
        f"New API key for {partner.name}. Store it somewhere safe now: it is shown only this "
        f"once and cannot be recovered. Key: {key}"
    )


class PartnerAdminForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = Partner
        fields = ("name", "namespace", "scopes", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "namespace" in self.fields:
            self.fields["namespace"].required = False
            self.fields["namespace"].help_text = (
                "The tag namespace this partner owns and alone may write; fixed once created. "
                "Leave empty to derive it from the name."
            )


class PartnerAPIKeyInline(admin.TabularInline):
    """The partner's keys, read-only; "Issue a new API key" adds one and shows it once."""

    model = PartnerAPIKey
    fields = ("prefix", "name", "created", "expiry_date", "revoked")
    readonly_fields = fields
    ordering = ("-created",)
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Partner | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Partner | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Partner | None = None) -> bool:
        return False


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    form = PartnerAdminForm
    list_display = ("name", "namespace", "scopes", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "namespace")
    ordering = ("name",)
    actions = ("issue_api_key", "revoke_api_keys")

    def get_fields(self, request: HttpRequest, obj: Partner | None = None) -> Any:
        if obj is None:
            return ("name", "namespace", "scopes")
        return ("name", "namespace", "scopes", "is_active", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Partner | None = None) -> Any:
        # Tags are keyed by namespace: renaming it would orphan every tag the partner wrote.
        return () if obj is None else ("namespace", "created_at")

    def get_inlines(self, request: HttpRequest, obj: Partner | None) -> Any:
        return () if obj is None else (PartnerAPIKeyInline,)

    def has_delete_permission(self, request: HttpRequest, obj: Partner | None = None) -> bool:
        # Audit rows name partners; a partner is switched off (is_active), never deleted.
        return False

    def has_issue_key_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("core.add_partnerapikey")

    def has_revoke_keys_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("core.change_partnerapikey")

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:  # raised by a service; the form view's transaction rolled back
            self.message_user(request, error.detail, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(
        self, request: HttpRequest, obj: Partner, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            # No partner_update service exists yet: name, scopes and is_active are plain fields
            # the form has validated (scopes against Scope).
            super().save_model(request, obj, form, change)
            return
        partner, key = partner_create(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            namespace=form.cleaned_data["namespace"] or None,
            at=timezone.now(),
        )
        _adopt_saved(obj, partner)
        self.message_user(request, _key_issued_message(partner, key), messages.WARNING)

    @admin.action(description="Issue a new API key", permissions=["issue_key"])
    def issue_api_key(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        at = timezone.now()
        for partner in queryset.order_by("name"):
            key = partner_key_issue(partner=partner, name=f"admin {at:%Y-%m-%d %H:%M}")
            self.message_user(request, _key_issued_message(partner, key), messages.WARNING)

    @admin.action(description="Revoke all API keys", permissions=["revoke_keys"])
    def revoke_api_keys(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        for partner in queryset.order_by("name"):
            count = partner_keys_revoke(partner=partner)
            self.message_user(request, f"Revoked {count} API key(s) of {partner.name}.")


@admin.register(PartnerAPIKey)
class PartnerAPIKeyAdmin(APIKeyModelAdmin):
    list_display = (
        "prefix",
        "partner",
        "name",
        "created",
        "expiry_date",
        "_has_expired",
        "revoked",
    )
    list_filter = ("partner", "revoked", "created")
    search_fields = ("prefix", "name", "partner__name")
    list_select_related = ("partner",)
    autocomplete_fields = ("partner",)
    ordering = ("-created",)

    def get_readonly_fields(self, request: HttpRequest, obj: PartnerAPIKey | None = None) -> Any:
        fields = super().get_readonly_fields(request, obj)
        return fields if obj is None else (*fields, "partner")

    def save_model(
        self, request: HttpRequest, obj: PartnerAPIKey, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key = partner_key_issue(partner=obj.partner, name=obj.name, expires_at=obj.expiry_date)
        _adopt_saved(obj, PartnerAPIKey.objects.get(prefix=key.partition(".")[0]))
        self.message_user(request, _key_issued_message(obj.partner, key), messages.WARNING)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyModelAdmin):
    """Read-only: a record is the stored first response to a request, replayed on retries.
    Deleting one would let a retried request run its effect a second time."""

    list_display = ("owner", "key", "method", "path", "response_status", "created_at")
    list_filter = ("method", "response_status")
    search_fields = ("=owner", "=key")
    search_help_text = "An owner or an Idempotency-Key (exact)."
    ordering = ("-created_at", "-id")
    # The stored body can hold a secret shown once (a webhook's signing secret): never display it.
    exclude = ("response_body",)


# --- Outbox and webhooks -----------------------------------------------------------------------

# One action redelivers at most this many; a larger backlog is redelivered in several passes.
MAX_REDELIVERIES_PER_ACTION = 1000


def _operator_actor(request: HttpRequest) -> Actor:
    return Actor(kind=ActorKind.OPERATOR, user_id=request.user.pk, name=request.user.get_username())


def _secret_issued_message(subscription: WebhookSubscription, secret: str) -> str:
    return (
        f"Signing secret for the webhook {subscription.url}. Give it to the receiver now: it is "
        f"shown only this once. Secret: {secret}"
    )


class EventTypeListFilter(admin.SimpleListFilter):
    """The known event types, without scanning the outbox for distinct values."""

    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return [(event_type, event_type) for event_type in EVENT_TYPES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        field = "event_type" if queryset.model is OutboxEvent else "event__event_type"
        return queryset.filter(**{field: value})


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyModelAdmin):
    """Read-only: events are written by the services, in the transaction of their change."""

    list_display = ("created_at", "event_type", "aggregate_id", "position", "id")
    list_filter = (EventTypeListFilter,)
    search_fields = ("=aggregate_id",)
    search_help_text = "A member id (or other aggregate id), exact."
    ordering = ("-created_at", "-id")


class WebhookSubscriptionAdminForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=[(ALL_EVENTS, "* (every event type)"), *((name, name) for name in EVENT_TYPES)],
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = WebhookSubscription
        fields = ("partner", "url", "event_types", "description", "is_active")

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            self.cleaned_data["target"] = webhook_target_resolve(url)
        except WebhookURLError as error:
            raise forms.ValidationError(error.detail) from None
        return url


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = (
        "attempted_at",
        "succeeded",
        "status_code",
        "error",
        "duration_ms",
        "response_excerpt",
    )
    readonly_fields = fields
    ordering = ("attempted_at", "id")
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionAdminForm
    list_display = (
        "url",
        "partner",
        "state",
        "event_types",
        "consecutive_failures",
        "disabled_at",
        "created_at",
    )
    list_filter = ("is_active", "partner")
    list_select_related = ("partner",)
    search_fields = ("url", "description")
    autocomplete_fields = ("partner",)
    ordering = ("-created_at", "-id")
    actions = ("redeliver_failed", "enable", "rotate_secret")

    @admin.display(description="state", ordering="is_active")
    def state(self, obj: WebhookSubscription) -> str:
        if obj.is_active:
            return format_html('<span style="color:#2e7d32">{}</span>', "active")
        return format_html(
            '<strong style="color:#c62828">{}</strong> {}', "DISABLED", obj.disabled_reason
        )

    @admin.display(description="signing secret")
    def secret_state(self, obj: WebhookSubscription) -> str:
        return 'Hidden: it was shown once. Use the action "Rotate signing secret" for a new one.'

    def get_fields(self, request: HttpRequest, obj: WebhookSubscription | None = None) -> Any:
        if obj is None:
            return ("partner", "url", "event_types", "description")
        return (
            "partner",
            "url",
            "event_types",
            "description",
            "is_active",
            "secret_state",
            "disabled_at",
            "disabled_reason",
            "consecutive_failures",
            "created_at",
            "updated_at",
        )

    def get_readonly_fields(
        self, request: HttpRequest, obj: WebhookSubscription | None = None
    ) -> Any:
        if obj is None:
            return ()
        return (
            "partner",
            "secret_state",
            "disabled_at",
            "disabled_reason",
            "consecutive_failures",
            "created_at",
            "updated_at",
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        disabled = WebhookSubscription.objects.filter(is_active=False).count()
        if disabled and request.method == "GET":
            self.message_user(
                request,
                f"{disabled} webhook subscription(s) are disabled and receive nothing: filter "
                'by "is active: No", fix the receiver, then use "Enable".',
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        subscription = self.get_object(request, object_id)
        if subscription is not None and not subscription.is_active and request.method == "GET":
            self.message_user(
                request,
                f"This subscription is DISABLED: {subscription.disabled_reason}",
                messages.WARNING,
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:  # raised by a service; the form view's transaction rolled back
            self.message_user(request, error.detail, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(
        self,
        request: HttpRequest,
        obj: WebhookSubscription,
        form: forms.ModelForm,
        change: bool,
    ) -> None:
        data = form.cleaned_data
        if change:
            updated = webhook_subscription_update(
                subscription=WebhookSubscription.objects.get(pk=obj.pk),
                actor=_operator_actor(request),
                at=timezone.now(),
                target=data["target"] if "url" in form.changed_data else None,
                event_types=data["event_types"],
                description=data["description"],
                is_active=data["is_active"],
            )
            _adopt_saved(obj, updated)
            return
        subscription, secret = webhook_subscription_create(
            partner=data["partner"],
            target=data["target"],
            event_types=data["event_types"],
            description=data["description"],
            at=timezone.now(),
        )
        _adopt_saved(obj, subscription)
        self.message_user(request, _secret_issued_message(subscription, secret), messages.WARNING)

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("core.change_webhookdelivery")

    @admin.action(description="Redeliver failed deliveries", permissions=["redeliver"])
    def redeliver_failed(
        self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]
    ) -> None:
        delivery_ids = list(
            WebhookDelivery.objects.filter(subscription__in=queryset, status=DeliveryStatus.FAILED)
            .order_by("id")
            .values_list("pk", flat=True)[:MAX_REDELIVERIES_PER_ACTION]
        )
        with durable_atomic():
            queued = webhook_deliveries_redeliver(delivery_ids=delivery_ids, at=timezone.now())
        skipped = len(delivery_ids) - queued
        message = f"Queued {queued} failed deliveries again."
        if skipped:
            message += f" Skipped {skipped} of disabled subscriptions: enable them first."
        self.message_user(request, message, messages.WARNING if skipped else messages.SUCCESS)

    @admin.action(description="Enable (resets the failure count)", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        actor, at = _operator_actor(request), timezone.now()
        count = 0
        for subscription in queryset.filter(is_active=False).order_by("pk"):
            webhook_subscription_update(
                subscription=subscription, actor=actor, at=at, is_active=True
            )
            count += 1
        self.message_user(request, f"Enabled {count} subscription(s).")

    @admin.action(description="Rotate signing secret", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        at = timezone.now()
        for subscription in queryset.order_by("pk"):
            secret, expires_at = webhook_secret_rotate(subscription=subscription, at=at)
            self.message_user(
                request,
                _secret_issued_message(subscription, secret)
                + f" (the previous secret also signs until {expires_at:%Y-%m-%d %H:%M} UTC)",
                messages.WARNING,
            )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    """Read-only: the delivery log. "Redeliver" attempts the selected deliveries again now."""

    list_display = (
        "id",
        "subscription",
        "partner",
        "event_type",
        "status",
        "attempts_count",
        "next_attempt_at",
        "last_status_code",
        "created_at",
    )
    list_filter = ("status", EventTypeListFilter, "subscription__partner")
    list_select_related = ("subscription__partner", "event")
    search_fields = ("=event__aggregate_id",)
    search_help_text = "A member id (or other aggregate id) of the event, exact."
    ordering = ("-id",)
    inlines = (WebhookAttemptInline,)
    actions = ("redeliver",)
    readonly_fields = (
        "subscription",
        "event",
        "status",
        "attempts_count",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "created_at",
    )
    exclude = ("lease_token", "leased_until")

    @admin.display(description="partner")
    def partner(self, obj: WebhookDelivery) -> str:
        return obj.subscription.partner.name

    @admin.display(description="event type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.event_type

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("core.change_webhookdelivery")

    @admin.action(description="Redeliver", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        delivery_ids = list(
            queryset.order_by("id").values_list("pk", flat=True)[:MAX_REDELIVERIES_PER_ACTION]
        )
        with durable_atomic():
            queued = webhook_deliveries_redeliver(delivery_ids=delivery_ids, at=timezone.now())
        skipped = len(delivery_ids) - queued
        message = f"Queued {queued} deliveries again."
        if skipped:
            message += f" Skipped {skipped} of disabled subscriptions: enable them first."
        self.message_user(request, message, messages.WARNING if skipped else messages.SUCCESS)


# --- Background jobs ---------------------------------------------------------------------------
# Jobs of every kind are listed here; the tier reassessment is the one operators start and resume.
# core has no domain rules, so what is specific to it is imported from tiers inside the methods
# that need it (the admin is an interface; core's domain modules never import tiers).

# One "Resume" re-dispatches at most this many jobs (only one population job runs at a time).
MAX_RESUMED_JOBS_PER_ACTION = 10


class JobChunkInline(admin.TabularInline):
    """The job's slices, read-only: status, attempts and counts per id range."""

    model = JobChunk
    fields = (
        "index",
        "status",
        "attempts",
        "items",
        "changed",
        "started_at",
        "finished_at",
        "lower",
        "upper",
    )
    readonly_fields = fields
    ordering = ("index",)
    extra = 0
    classes = ("collapse",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TierReassessmentStartForm(forms.Form):
    chunk_size = forms.IntegerField(
        min_value=1,
        max_value=100_000,
        required=False,
        help_text="Members per chunk; leave empty for LOYALTY_TIER_CHUNK_SIZE "
        f"({settings.LOYALTY_TIER_CHUNK_SIZE}).",
    )


@admin.register(Job)
class JobAdmin(ReadOnlyModelAdmin):
    """Read-only: progress and counts are written by the job's chunks as they commit.
    "Run tier reassessment now" starts a population reassessment; "Resume" dispatches the open
    chunks of an interrupted one again (done chunks are no-ops, so nothing is written twice)."""

    list_display = (
        "created_at",
        "kind",
        "state",
        "progress_percent",
        "chunks",
        "items",
        "items_changed",
        "requested_by",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "kind", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=dedupe_key", "=requested_by")
    search_help_text = "A schedule slot (e.g. nightly:2025-01-31) or who requested it (exact)."
    ordering = ("-created_at", "-id")
    inlines = (JobChunkInline,)
    actions = ("resume",)
    change_list_template = "admin/core/job/change_list.html"
    fields = (
        "id",
        "kind",
        "state",
        "progress_percent",
        "chunks",
        "items",
        "items_changed",
        "report",
        "error",
        "params",
        "dedupe_key",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def state(self, obj: Job) -> SafeString:
        colours = {
            JobStatus.DONE: "#2e7d32",
            JobStatus.FAILED: "#c62828",
            JobStatus.RUNNING: "#1565c0",
        }
        return format_html(
            '<span style="color:{}">{}</span>', colours.get(obj.status, "inherit"), obj.status
        )

    @admin.display(description="progress")
    def progress_percent(self, obj: Job) -> str:
        return f"{obj.progress * 100:.0f}%"

    @admin.display(description="chunks")
    def chunks(self, obj: Job) -> str:
        return f"{obj.chunks_done} / {obj.chunks_total}"

    @admin.display(description="items")
    def items(self, obj: Job) -> str:
        return f"{obj.items_done} / {obj.items_total}"

    @admin.display(description="report")
    def report(self, obj: Job) -> SafeString:
        from tiers.selectors import REASSESSMENT_JOB, reassessment_report, tier_list

        if obj.kind != REASSESSMENT_JOB:
            return format_html("-")
        report = reassessment_report(job=obj)
        tiers = list(tier_list().values_list("code", flat=True))
        matrix = report["matrix"]
        rows = [
            {
                "tier": source,
                "cells": [
                    {"count": matrix.get(source, {}).get(target, 0), "moves": source != target}
                    for target in tiers
                ],
                "total": sum(matrix.get(source, {}).values()),
            }
            for source in tiers
        ]
        counts = report["counts"]
        return format_html(
            "<p>{}</p>{}<p>{}</p>",
            f"Rule version {obj.params.get('rule_version') or '-'}, as of "
            f"{obj.params.get('as_of', '-')}; from-to matrix over the chunks done so far "
            "(rows: tier before, columns: tier after).",
            SafeString(
                render_to_string("admin/tiers/includes/matrix.html", {"tiers": tiers, "rows": rows})
            ),
            format_html_join(
                ", ",
                "{}: {}",
                ((name.replace("_", " "), value) for name, value in sorted(counts.items())),
            )
            or "No chunk is done yet.",
        )

    def has_reassess_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tiers.run_reassessment")

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tiers.run_reassessment")

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "reassess-tiers/",
                self.admin_site.admin_view(self.reassess_tiers_view),
                name="core_job_reassess_tiers",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "has_reassess_permission": self.has_reassess_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def reassess_tiers_view(self, request: HttpRequest) -> HttpResponse:
        """Start a population reassessment now and enqueue its planning (inline without a
        broker): what the nightly schedule does, on an operator's demand."""
        from tiers.selectors import rule_set_in_force
        from tiers.services.reassessment import reassessment_request

        if not self.has_reassess_permission(request):
            raise PermissionDenied
        form = TierReassessmentStartForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                with durable_atomic():
                    job, _ = reassessment_request(
                        actor=_operator_actor(request),
                        at=timezone.now(),
                        chunk_size=form.cleaned_data["chunk_size"],
                    )
            except DomainError as error:
                self.message_user(request, error.detail, messages.ERROR)
                return HttpResponseRedirect(reverse("admin:core_job_changelist"))
            job.refresh_from_db()
            if settings.CELERY_TASK_ALWAYS_EAGER:
                message = (
                    f"Tier reassessment {job.pk} ran inline (no broker configured): {job.status}, "
                    f"{job.items_done} member(s) assessed, {job.items_changed} changed tier."
                )
            else:
                message = (
                    f"Tier reassessment {job.pk} started: the workers of the bulk queue run its "
                    "chunks; this page shows the progress."
                )
            self.message_user(request, message, messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:core_job_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Run tier reassessment now",
            "opts": self.opts,
            "form": form,
            "rule_set": rule_set_in_force(at=timezone.now()),
            "eager": settings.CELERY_TASK_ALWAYS_EAGER,
        }
        return TemplateResponse(request, "admin/core/job/reassess_tiers.html", context)

    @admin.action(description="Resume (dispatch the open chunks again)", permissions=["resume"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        from tiers.selectors import REASSESSMENT_JOB
        from tiers.tasks import reassessment_plan_task

        jobs = list(
            queryset.filter(kind=REASSESSMENT_JOB)
            .exclude(status=JobStatus.DONE)
            .order_by("created_at", "id")[: MAX_RESUMED_JOBS_PER_ACTION + 1]
        )
        if len(jobs) > MAX_RESUMED_JOBS_PER_ACTION:
            self.message_user(
                request,
                f"Select at most {MAX_RESUMED_JOBS_PER_ACTION} jobs; nothing was resumed.",
                messages.ERROR,
            )
            return
        if not jobs:
            self.message_user(
                request,
                "Nothing to resume: only tier reassessments that are not done can be resumed.",
                messages.INFO,
            )
            return
        resumed = 0
        for job in jobs:
            try:
                # Planning again is idempotent: it returns the chunks not done and dispatches
                # them (at once, inline, when no broker is configured).
                reassessment_plan_task.delay_on_commit(job_id=str(job.pk))
            except DomainError as error:
                self.message_user(request, f"{job.pk}: {error.detail}", messages.ERROR)
            else:
                resumed += 1
        how = (
            "ran their open chunks inline (no broker configured)"
            if settings.CELERY_TASK_ALWAYS_EAGER
            else "dispatched their open chunks to the workers"
        )
        self.message_user(request, f"Resumed {resumed} reassessment(s): {how}.", messages.SUCCESS)
