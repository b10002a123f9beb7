"""The operator's tool for partners, their API keys and the idempotency records.

Plain API keys are shown once, in a message, when they are issued; only their hashes are stored.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from core.exceptions import DomainError
from core.models import IdempotencyRecord, Partner, PartnerAPIKey, Scope
from core.services import partner_create, partner_key_issue, partner_keys_revoke

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
class IdempotencyRecordAdmin(admin.ModelAdmin):
    """Read-only: a record is the stored first response to a request, replayed on retries."""

    list_display = ("owner", "key", "method", "path", "response_status", "created_at")
    list_filter = ("method", "response_status")
    search_fields = ("=owner", "=key")
    search_help_text = "An owner or an Idempotency-Key (exact)."
    ordering = ("-created_at", "-id")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: IdempotencyRecord | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: IdempotencyRecord | None = None
    ) -> bool:
        # Deleting a record would let a retried request run its effect a second time.
        return False
