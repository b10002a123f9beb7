"""The operator's tool for members, identities and tags. Writes go through the services.

Tier and lifecycle fields are read-only here: only the tier and lifecycle services write them
(operators move tiers with the "Reassess tiers" and "Promote or demote" actions). Members are
never deleted from the admin; "Erase personal data" replaces deletion.
"""

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.actors import Actor, ActorKind
from core.admin_base import ReadOnlyModelAdmin
from core.db import durable_atomic
from core.exceptions import DomainError, InvalidInputError
from core.models import SYSTEM_NAMESPACE, Partner
from members.csv_io import (
    MEMBER_IMPORT_OPTIONAL,
    MEMBER_IMPORT_REQUIRED,
    TAG_IMPORT_OPTIONAL,
    TAG_IMPORT_REQUIRED,
    TAG_KEY_PATTERN,
    CsvImportError,
    csv_stream,
    member_tags_csv_import,
    member_tags_csv_rows,
    members_csv_import,
    members_csv_rows,
)
from members.models import (
    EVENT_SOURCE_MEMBER,
    EVENT_SOURCE_OPERATOR,
    ActivityEvent,
    EventType,
    Identity,
    Member,
    MemberDailyActivity,
    MemberTag,
    TagChange,
    TagSource,
)
from members.services import (
    MEMBER_EDITABLE_FIELDS,
    TagInput,
    TagSyncItem,
    TagSyncMode,
    TagSyncStatus,
    identities_replace,
    member_create,
    member_erase,
    member_update,
    member_user_link,
    tags_sync,
)
from rewards.models import Badge, PointsEntry, Reason
from rewards.services.honors import badge_award
from rewards.services.ledger import points_deduct
from tiers.models import Tier
from tiers.selectors import tier_history_list
from tiers.services.promotions import tier_promote

# Shown on the import page; more would bury the first errors the operator needs to fix.
MAX_ERROR_MESSAGES = 20
# The points actions post one member at a time; larger sets go through the batch award API.
MAX_POINTS_ACTION_MEMBERS = 500
# Each promotion is its own audited change (history row, event, optional pin) in its own
# transaction; a bounded selection keeps the request short.
MAX_PROMOTION_ACTION_MEMBERS = 100
# A reassessment of the selection is one set-based transaction: at most one job chunk's worth.
# The whole population is the job ("Run tier reassessment now" under Jobs, or reassess_tiers).
# The member page shows this many of the latest tier changes; the rest are a link away.
RECENT_TIER_CHANGES = 10


def operator_actor(request: HttpRequest) -> Actor:
    """The actor of an operator working in the admin."""
    return Actor(kind=ActorKind.OPERATOR, user_id=request.user.pk, name=request.user.get_username())


def adopt_saved(target: Model, saved: Model) -> None:
    """Make the admin's unsaved instance the row a service wrote, for the log and the redirect."""
    for field in saved._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db
    target._state.fields_cache = {}


class ServiceFormMixin:
    """A domain error raised by a service while saving a form is shown, and nothing is saved.

    The admin's own transaction around the form view has rolled back by the time it is caught.
    """

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
        except DomainError as error:
            self.message_user(request, error.detail, messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.get_full_path())


# --- Members -------------------------------------------------------------------------------------


class ErasedFilter(admin.SimpleListFilter):
    title = "erased"
    parameter_name = "erased"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "No"), ("yes", "Yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Member]) -> QuerySet[Member]:
        if self.value() == "no":
            return queryset.filter(erased_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(erased_at__isnull=False)
        return queryset


class IdentityInline(admin.TabularInline):
    """Saved as a whole through ``identities_replace`` (see ``MemberAdmin.save_formset``)."""

    model = Identity
    fields = ("provider", "value", "created_at")
    readonly_fields = ("created_at",)
    extra = 0

    def _editable(self, obj: Member | None) -> bool:
        return obj is None or not obj.is_erased

    def has_add_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        return self._editable(obj) and super().has_delete_permission(request, obj)


class MemberTagInline(admin.TabularInline):
    """Tags are written by partners, the tag sync, the CSV import and the tag admin; shown here."""

    model = MemberTag
    fields = ("namespace", "key", "value", "category", "expires_at", "source", "synced_at")
    readonly_fields = fields
    ordering = ("namespace", "key")
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        return False


class MemberAddForm(forms.ModelForm):
    joined_at = forms.SplitDateTimeField(
        required=False, widget=AdminSplitDateTime, help_text="Leave empty for now."
    )

    class Meta:
        model = Member
        fields = ("external_id", "display_name", "email", "phone", "joined_at", "user")


class TierPromotionForm(forms.Form):
    """The page of the "Promote or demote" action."""

    tier = forms.ModelChoiceField(queryset=Tier.objects.order_by("rank"), empty_label=None)
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: kept on each member's tier change.",
    )
    pin_days = forms.IntegerField(
        min_value=1,
        max_value=settings.LOYALTY_TIER_MAX_PIN_DAYS,
        required=False,
        help_text="Pin the tier for this many days: reassessment never demotes below it until "
        "then. Leave empty for no pin.",
    )


class CsvImportForm(forms.Form):
    MEMBERS = "members"
    TAGS = "tags"

    kind = forms.ChoiceField(
        choices=[
            (MEMBERS, f"Members ({', '.join((*MEMBER_IMPORT_REQUIRED, *MEMBER_IMPORT_OPTIONAL))})"),
            (TAGS, f"Tags ({', '.join((*TAG_IMPORT_REQUIRED, *TAG_IMPORT_OPTIONAL))})"),
        ],
        widget=forms.RadioSelect,
        initial=MEMBERS,
    )
    file = forms.FileField(help_text="UTF-8 CSV with a header row.")


class PointsActionForm(forms.Form):
    """The page of the "Award points" and "Deduct points" actions."""

    points = forms.IntegerField(
        min_value=1,
        max_value=settings.LOYALTY_POINTS_MAX_AWARD,
        help_text="For each selected member.",
    )
    reason = forms.ChoiceField(
        choices=[(reason.value, reason.label) for reason in (Reason.MANUAL, Reason.CORRECTION)],
        initial=Reason.MANUAL,
    )
    note = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept on each entry.",
    )


@admin.register(Member)
class MemberAdmin(ServiceFormMixin, admin.ModelAdmin):
    list_display = (
        "external_id",
        "display_name",
        "tier",
        "lifecycle_stage",
        "joined_at",
        "erased_at",
    )
    list_filter = (
        "tier",
        "lifecycle_stage",
        ("joined_at", admin.DateFieldListFilter),
        ErasedFilter,
    )
    search_fields = ("external_id", "display_name", "email", "=identities__value")
    search_help_text = "External id, name or email (partial), or an identity value (exact)."
    list_select_related = ("tier",)
    autocomplete_fields = ("user",)
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    inlines = (IdentityInline, MemberTagInline)
    actions = (
        "export_members_csv",
        "export_tags_csv",
        "erase_personal_data",
        "deduct_points",
        "promote_tier",
    )
    # Award points, grant a certification and reassess tiers run as background jobs on any
    # selection: bulk/admin.py adds them.
    change_list_template = "admin/members/member/change_list.html"
    add_fieldsets = (
        (None, {"fields": ("external_id", "display_name", "email", "phone", "joined_at", "user")}),
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "external_id",
                    "display_name",
                    "email",
                    "phone",
                    "user",
                    "public_recognition",
                )
            },
        ),
        (
            "Tier and lifecycle (written by the tier and lifecycle jobs only)",
            {
                "fields": (
                    "tier",
                    "tier_since",
                    "tier_grace_until",
                    "tier_pin",
                    "tier_pinned_until",
                    "tier_probation_until",
                    "recent_tier_changes",
                    "lifecycle_stage",
                    "previous_lifecycle_stage",
                    "lifecycle_changed_at",
                )
            },
        ),
        (
            "Activity",
            {
                "fields": (
                    "joined_at",
                    "first_interaction_at",
                    "first_purchase_at",
                    "last_purchase_at",
                    "last_interaction_at",
                    "last_activity_at",
                    "last_login_at",
                )
            },
        ),
        ("Record", {"fields": ("erased_at", "created_at", "updated_at")}),
    )
    # Everything but the profile the services let an operator edit.
    readonly_fields = (
        "id",
        "external_id",
        "tier",
        "tier_since",
        "tier_grace_until",
        "tier_pin",
        "tier_pinned_until",
        "tier_probation_until",
        "recent_tier_changes",
        "lifecycle_stage",
        "previous_lifecycle_stage",
        "lifecycle_changed_at",
        "joined_at",
        "first_interaction_at",
        "first_purchase_at",
        "last_purchase_at",
        "last_interaction_at",
        "last_activity_at",
        "last_login_at",
        "erased_at",
        "created_at",
        "updated_at",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Member | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Member | None = None) -> Any:
        if obj is None:
            return ()
        if obj.is_erased:
            return [name for _, options in self.fieldsets for name in options["fields"]]
        return self.readonly_fields

    def get_form(
        self, request: HttpRequest, obj: Member | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = MemberAddForm
        return super().get_form(request, obj, change, **kwargs)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            # Staff accounts sign in as operators; only plain accounts can be a member's login.
            kwargs["queryset"] = get_user_model().objects.filter(is_staff=False)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        # Members are erased, never deleted: the ledger and history keep pointing at the row.
        return False

    def has_erase_permission(self, request: HttpRequest) -> bool:
        """The model's delete permission is the permission to erase."""
        return request.user.has_perm("members.delete_member")

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_award_points_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.award_points")

    def has_deduct_points_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.deduct_points")

    def has_reassess_tiers_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tiers.run_reassessment")

    def has_promote_members_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tiers.promote_member")

    @admin.display(description="recent tier changes")
    def recent_tier_changes(self, obj: Member) -> SafeString:
        changes = list(
            tier_history_list(member=obj).order_by("-created_at", "-id")[: RECENT_TIER_CHANGES + 1]
        )
        if not changes:
            return format_html("{}", "None: the member has held their tier since joining.")
        table = format_html(
            "<table><thead><tr><th>when</th><th>from</th><th>to</th><th>why</th><th>by</th>"
            "<th>rule version</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
                "<td>{}</td></tr>",
                (
                    (
                        reverse("admin:tiers_tierchange_change", args=[change.pk]),
                        f"{change.created_at:%Y-%m-%d %H:%M}",
                        change.from_tier_id or "-",
                        change.to_tier_id,
                        change.get_reason_display() + (f": {change.note}" if change.note else ""),
                        change.actor,
                        f"v{change.rule_set.version}" if change.rule_set else "-",
                    )
                    for change in changes[:RECENT_TIER_CHANGES]
                ),
            ),
        )
        history_url = reverse("admin:tiers_tierchange_changelist") + f"?member__exact={obj.pk}"
        return format_html('{}<p><a href="{}">{}</a></p>', table, history_url, "Full tier history")

    def save_model(
        self, request: HttpRequest, obj: Member, form: forms.ModelForm, change: bool
    ) -> None:
        actor, at = operator_actor(request), timezone.now()
        data = form.cleaned_data
        if change:
            member = Member.objects.get(pk=obj.pk)
            changes = {
                name: data[name] for name in form.changed_data if name in MEMBER_EDITABLE_FIELDS
            }
            member_update(member=member, changes=changes, actor=actor, at=at)
        else:
            member = member_create(
                external_id=data["external_id"],
                display_name=data["display_name"],
                email=data["email"],
                phone=data["phone"],
                joined_at=data["joined_at"],
                actor=actor,
                at=at,
            )
        if "user" in form.changed_data:
            member_user_link(member=member, user=data["user"], actor=actor, at=at)
        adopt_saved(obj, member)

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool
    ) -> None:
        # commit=False writes nothing; it records what changed, for the admin's history message.
        formset.save(commit=False)
        if formset.model is not Identity or not formset.has_changed():
            return  # the tags inline is read-only
        identities_replace(
            member=formset.instance,
            identities=[
                (row.cleaned_data["provider"], row.cleaned_data["value"])
                for row in formset.forms
                if row.cleaned_data and not row.cleaned_data.get("DELETE")
            ],
            actor=operator_actor(request),
            at=timezone.now(),
        )

    # --- Actions ---------------------------------------------------------------------------------

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_members_csv(
        self, request: HttpRequest, queryset: QuerySet[Member]
    ) -> StreamingHttpResponse:
        return _csv_response(
            csv_stream(rows=members_csv_rows(members=queryset)), filename_prefix="members"
        )

    @admin.action(description="Export tags of selected as CSV", permissions=["view"])
    def export_tags_csv(
        self, request: HttpRequest, queryset: QuerySet[Member]
    ) -> StreamingHttpResponse:
        return _csv_response(
            csv_stream(rows=member_tags_csv_rows(members=queryset)), filename_prefix="member-tags"
        )

    @admin.action(description="Erase personal data of selected members", permissions=["erase"])
    def erase_personal_data(
        self, request: HttpRequest, queryset: QuerySet[Member]
    ) -> TemplateResponse | None:
        members = list(queryset.filter(erased_at__isnull=True).order_by("external_id"))
        if not members:
            self.message_user(request, "The selected members are already erased.", messages.INFO)
            return None
        if request.POST.get("confirm") != "yes":
            # Erasure cannot be undone: ask first, like Django's own delete action.
            context = {
                **self.admin_site.each_context(request),
                "title": "Erase personal data?",
                "opts": self.opts,
                "members": members,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(
                request, "admin/members/member/erase_confirmation.html", context
            )
        actor, at = operator_actor(request), timezone.now()
        with durable_atomic():
            for member in members:
                member_erase(member=member, actor=actor, at=at)
        self.message_user(
            request, f"Erased the personal data of {len(members)} member(s).", messages.SUCCESS
        )
        return None

    @admin.action(description="Deduct points from selected members", permissions=["deduct_points"])
    def deduct_points(
        self, request: HttpRequest, queryset: QuerySet[Member]
    ) -> TemplateResponse | None:
        return self._points_action(
            request,
            queryset,
            action="deduct_points",
            title="Deduct points",
            post=points_deduct,
            summary="Deducted {points} points from {count} member(s).",
        )

    @admin.action(
        description="Promote or demote selected members...", permissions=["promote_members"]
    )
    def promote_tier(
        self, request: HttpRequest, queryset: QuerySet[Member]
    ) -> TemplateResponse | None:
        """Set the selected members' tier (optionally pinned), each as its own audited change."""

        def apply(member: Member, data: dict[str, Any], actor: Actor, at: Any) -> str:
            tier_promote(
                member=member,
                tier=data["tier"].code,
                reason=data["reason"],
                pin_days=data["pin_days"],
                actor=actor,
                at=at,
            )
            pin = f", pinned for {data['pin_days']} days" if data["pin_days"] else ""
            return f"moved to {data['tier'].code}{pin}"

        return _members_action(
            self,
            request,
            queryset.select_related("tier"),
            action="promote_tier",
            title="Promote or demote",
            intro="Set the tier of each of these members. Each gets a tier change of their own "
            "with your reason (and a pin, when given); a member who cannot be moved (on a "
            "nomination's probation, or already holding the tier without a pin) is reported and "
            "the others are still moved.",
            form_class=TierPromotionForm,
            apply=apply,
            limit=MAX_PROMOTION_ACTION_MEMBERS,
        )

    def _points_action(
        self,
        request: HttpRequest,
        queryset: QuerySet[Member],
        *,
        action: str,
        title: str,
        post: Callable[..., PointsEntry],
        summary: str,
    ) -> TemplateResponse | None:
        """Ask for the points, reason and note; on ``apply``, post them to each member."""
        members = list(queryset.order_by("external_id")[: MAX_POINTS_ACTION_MEMBERS + 1])
        if len(members) > MAX_POINTS_ACTION_MEMBERS:
            self.message_user(
                request,
                f"Select at most {MAX_POINTS_ACTION_MEMBERS} members; nothing was posted.",
                messages.ERROR,
            )
            return None
        erased = [member for member in members if member.is_erased]
        if len(erased) == len(members):
            self.message_user(
                request,
                "The selected members are erased; their points cannot change.",
                messages.INFO,
            )
            return None
        form = PointsActionForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": title,
                "opts": self.opts,
                "form": form,
                "action": action,
                "members": members,
                "erased_count": len(erased),
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/members/member/points_action.html", context)
        data, actor, at = form.cleaned_data, operator_actor(request), timezone.now()
        posted_count = 0
        for member in members:
            if member.is_erased:
                continue
            try:
                # One transaction per member: a refusal (e.g. too few points) undoes only its own.
                with durable_atomic():
                    post(
                        member=member,
                        points=data["points"],
                        reason=data["reason"],
                        note=data["note"],
                        actor=actor,
                        at=at,
                    )
            except DomainError as error:
                self.message_user(request, f"{member.external_id}: {error.detail}", messages.ERROR)
            else:
                posted_count += 1
        if erased:
            self.message_user(request, f"Skipped {len(erased)} erased member(s).", messages.WARNING)
        if posted_count:
            self.message_user(
                request,
                summary.format(points=data["points"], count=posted_count),
                messages.SUCCESS,
            )
        return None

    # --- CSV import ------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        return [
            path(
                "import-csv/",
                self.admin_site.admin_view(self.import_csv_view),
                name="{}_{}_import_csv".format(*info),
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "has_import_permission": self.has_import_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def import_csv_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = CsvImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            importer = (
                members_csv_import
                if form.cleaned_data["kind"] == CsvImportForm.MEMBERS
                else member_tags_csv_import
            )
            try:
                with durable_atomic():
                    result = importer(
                        file=form.cleaned_data["file"],
                        actor=operator_actor(request),
                        at=timezone.now(),
                    )
            except CsvImportError as error:
                _report_import_errors(request, error)
            except DomainError as error:
                self.message_user(request, error.detail, messages.ERROR)
            else:
                self.message_user(request, _import_summary(result), messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Import members or tags from CSV",
            "opts": self.opts,
            "form": form,
            "member_columns": (*MEMBER_IMPORT_REQUIRED, *MEMBER_IMPORT_OPTIONAL),
            "tag_columns": (*TAG_IMPORT_REQUIRED, *TAG_IMPORT_OPTIONAL),
        }
        return TemplateResponse(request, "admin/members/member/import_csv.html", context)


def _csv_response(lines: Any, *, filename_prefix: str) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename_prefix}-{stamp}.csv"'
    return response


def _report_import_errors(request: HttpRequest, error: CsvImportError) -> None:
    messages.error(request, f"The file has {len(error.errors)} error(s); nothing was imported.")
    for item in error.errors[:MAX_ERROR_MESSAGES]:
        where = f"Row {item['row']}" + (f", {item['attr']}" if item["attr"] else "")
        messages.error(request, f"{where}: {item['detail']}")
    if len(error.errors) > MAX_ERROR_MESSAGES:
        messages.error(request, f"... and {len(error.errors) - MAX_ERROR_MESSAGES} more.")


def _import_summary(result: Any) -> str:
    if hasattr(result, "created_count"):
        return (
            f"Members imported: {result.created_count} created, {result.updated_count} updated, "
            f"{result.unchanged_count} unchanged."
        )
    return (
        f"Tags imported: {result.row_count} row(s), "
        f"{result.changed_member_count} member(s) changed."
    )


# --- Identities and tags -------------------------------------------------------------------------


@admin.register(Identity)
class IdentityAdmin(ReadOnlyModelAdmin):
    """Read-only: identities are edited on their member's page, through ``identities_replace``."""

    list_display = ("provider", "value", "member", "created_at")
    list_filter = ("provider",)
    search_fields = ("=value", "=member__external_id")
    search_help_text = "An identity value or a member's external id (exact)."
    list_select_related = ("member",)
    ordering = ("provider", "value")


class MemberTagAdminForm(forms.ModelForm):
    key = forms.RegexField(regex=TAG_KEY_PATTERN, max_length=128)

    class Meta:
        model = MemberTag
        fields = ("member", "namespace", "key", "value", "category", "expires_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "member" in self.fields:
            self.fields["member"].queryset = Member.objects.filter(erased_at__isnull=True)


@admin.register(MemberTag)
class MemberTagAdmin(ServiceFormMixin, admin.ModelAdmin):
    """Adds and edits one tag through the tag sync (merge); the system namespace is read-only."""

    form = MemberTagAdminForm
    list_display = ("member", "namespace", "key", "value", "category", "expires_at", "source")
    list_filter = ("namespace", "category", "source")
    search_fields = ("=member__external_id", "key", "value")
    search_help_text = "A member's external id (exact), or a tag key or value (partial)."
    list_select_related = ("member",)
    autocomplete_fields = ("member",)
    ordering = ("member__external_id", "namespace", "key")
    show_full_result_count = False
    fields = (
        "member",
        "namespace",
        "key",
        "value",
        "category",
        "expires_at",
        "source",
        "written_by",
        "synced_at",
        "created_at",
    )
    _written_by_services = ("source", "written_by", "synced_at", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: MemberTag | None = None) -> Any:
        if obj is None:
            return self._written_by_services
        return ("member", "namespace", "key", *self._written_by_services)

    def get_fields(self, request: HttpRequest, obj: MemberTag | None = None) -> Any:
        if obj is None:
            return self.fields[:6]
        return self.fields

    def has_change_permission(self, request: HttpRequest, obj: MemberTag | None = None) -> bool:
        if obj is not None and obj.namespace == SYSTEM_NAMESPACE:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: MemberTag | None = None) -> bool:
        # No service removes a single tag yet; a partner's sync (replace) or expiry removes tags.
        return False

    def save_model(
        self, request: HttpRequest, obj: MemberTag, form: forms.ModelForm, change: bool
    ) -> None:
        [result] = tags_sync(
            namespace=obj.namespace,
            mode=TagSyncMode.MERGE,
            items=[
                TagSyncItem(
                    external_id=obj.member.external_id,
                    tags=[
                        TagInput(
                            key=obj.key,
                            value=obj.value,
                            category=obj.category,
                            expires_at=obj.expires_at,
                        )
                    ],
                )
            ],
            actor=operator_actor(request),
            at=timezone.now(),
            source=TagSource.ADMIN,
        )
        if result.status is TagSyncStatus.NOT_FOUND:
            raise InvalidInputError("The member has been erased.")
        adopt_saved(
            obj, MemberTag.objects.get(member=obj.member_id, namespace=obj.namespace, key=obj.key)
        )


@admin.register(TagChange)
class TagChangeAdmin(ReadOnlyModelAdmin):
    """The audit of tag writes: read-only."""

    list_display = ("created_at", "member", "namespace", "key", "action", "source", "actor")
    list_filter = ("action", "source", "namespace", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=member__external_id", "key", "=actor")
    search_help_text = "A member's external id or an actor (exact), or a tag key (partial)."
    list_select_related = ("member",)
    ordering = ("-created_at", "-id")


# --- Activity ------------------------------------------------------------------------------------


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    """Operators register custom event types; the built-ins' meaning is fixed (the rollups, the
    lifecycle rules and what members may report depend on it)."""

    list_display = (
        "code",
        "name",
        "counts_as_interaction",
        "members_may_post",
        "is_builtin",
        "is_active",
    )
    list_filter = ("is_builtin", "is_active", "counts_as_interaction", "members_may_post")
    search_fields = ("code", "name")
    ordering = ("code",)

    def get_readonly_fields(self, request: HttpRequest, obj: EventType | None = None) -> Any:
        if obj is None:
            return ("is_builtin", "created_at")
        if obj.is_builtin:
            return ("code", "counts_as_interaction", "members_may_post", "is_builtin", "created_at")
        return ("code", "is_builtin", "created_at")

    def has_delete_permission(self, request: HttpRequest, obj: EventType | None = None) -> bool:
        return (obj is None or not obj.is_builtin) and super().has_delete_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: EventType, form: forms.ModelForm, change: bool
    ) -> None:
        # No service: an event type is plain configuration the form has validated; created_at
        # is business time (no auto_now), so the interface reads the clock.
        if not change:
            obj.created_at = timezone.now()
        super().save_model(request, obj, form, change)


class EventTypeListFilter(admin.SimpleListFilter):
    """The registered types, read from their own small table (not a scan of the events)."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(code, code) for code in EventType.objects.values_list("code", flat=True)]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ActivityEvent]
    ) -> QuerySet[ActivityEvent]:
        return queryset.filter(type=self.value()) if self.value() else queryset


class EventSourceListFilter(admin.SimpleListFilter):
    """Members, operators and each partner's namespace (not a scan of the events)."""

    title = "source"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        partners = Partner.objects.order_by("namespace").values_list("namespace", "name")
        return [
            (EVENT_SOURCE_MEMBER, "Members (self-reported)"),
            (EVENT_SOURCE_OPERATOR, "Operators"),
            *((namespace, f"Partner: {name}") for namespace, name in partners),
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ActivityEvent]
    ) -> QuerySet[ActivityEvent]:
        return queryset.filter(source=self.value()) if self.value() else queryset


@admin.register(ActivityEvent)
class ActivityEventAdmin(ReadOnlyModelAdmin):
    list_display = (
        "occurred_at",
        "member",
        "type",
        "source",
        "event_id",
        "points_awarded",
        "received_at",
    )
    list_filter = (
        EventTypeListFilter,
        EventSourceListFilter,
        ("business_date", admin.DateFieldListFilter),
    )
    search_fields = ("=member__external_id", "=event_id")
    search_help_text = "A member's external id or an event id (exact)."
    list_select_related = ("member",)
    # Ids grow with receipt: newest first, by the primary key.
    ordering = ("-id",)


@admin.register(MemberDailyActivity)
class MemberDailyActivityAdmin(ReadOnlyModelAdmin):
    list_display = (
        "business_date",
        "member",
        "interactions",
        "logins",
        "checkins",
        "posts",
        "comments",
        "likes",
        "shares",
        "purchases",
        "purchase_amount",
        "points_earned",
    )
    list_filter = (("business_date", admin.DateFieldListFilter),)
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member",)
    # Unique per (member, day), served backwards by the (business_date, member) index.
    ordering = ("-business_date", "-member")


# --- Honors and capability actions on members ----------------------------------------------------
# Appended to MemberAdmin below (kept together here: they call the rewards services).

# Each award or grant is its own transaction; a bounded selection keeps the request short.
MAX_HONOR_ACTION_MEMBERS = 500


class BadgeAwardForm(forms.Form):
    """The page of the "Award a badge" action."""

    badge = forms.ModelChoiceField(
        queryset=Badge.objects.filter(is_active=True).order_by("-level", "code"),
        empty_label=None,
    )
    reason = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept on each award.",
    )


def _members_action(
    modeladmin: MemberAdmin,
    request: HttpRequest,
    queryset: QuerySet[Member],
    *,
    action: str,
    title: str,
    intro: str,
    form_class: type[forms.Form],
    apply: Callable[[Member, dict[str, Any], Actor, Any], str],
    limit: int = MAX_HONOR_ACTION_MEMBERS,
) -> TemplateResponse | None:
    """A bulk action that asks for a form, then on ``apply`` calls the service for each selected
    member (erased ones skipped), each in its own transaction so a refusal undoes only its own
    change, and reports the outcomes (``apply`` names each) and the refusals."""
    members = list(queryset.order_by("external_id")[: limit + 1])
    if len(members) > limit:
        modeladmin.message_user(
            request, f"Select at most {limit} members; nothing was done.", messages.ERROR
        )
        return None
    active = [member for member in members if not member.is_erased]
    if not active:
        modeladmin.message_user(request, "The selected members are erased.", messages.INFO)
        return None
    form = form_class(request.POST if "apply" in request.POST else None)
    if not form.is_valid():
        skipped = len(members) - len(active)
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "intro": intro + (f" {skipped} erased member(s) will be skipped." if skipped else ""),
            "opts": modeladmin.opts,
            "objects": members,
            "form": form,
            "media": modeladmin.media + form.media,
            "action": action,
            "submit_label": title,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/tiers/action_form.html", context)
    actor, at = operator_actor(request), timezone.now()
    outcomes: dict[str, int] = {}
    for member in active:
        try:
            with durable_atomic():
                outcome = apply(member, form.cleaned_data, actor, at)
        except DomainError as error:
            modeladmin.message_user(
                request, f"{member.external_id}: {error.detail}", messages.ERROR
            )
        else:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    skipped = len(members) - len(active)
    if skipped:
        modeladmin.message_user(request, f"Skipped {skipped} erased member(s).", messages.WARNING)
    if outcomes:
        summary = "; ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
        modeladmin.message_user(request, f"{title}: {summary}.", messages.SUCCESS)
    return None


@admin.action(description="Award a badge to selected members...", permissions=["award_badge"])
def award_badge(
    modeladmin: MemberAdmin, request: HttpRequest, queryset: QuerySet[Member]
) -> TemplateResponse | None:
    def apply(member: Member, data: dict[str, Any], actor: Actor, at: Any) -> str:
        result = badge_award(
            member=member, code=data["badge"].code, reason=data["reason"], actor=actor, at=at
        )
        return "awarded" if result.created else "already held"

    return _members_action(
        modeladmin,
        request,
        queryset,
        action="award_badge",
        title="Award a badge",
        intro="Each of these members gets the badge with your reason; a member who holds it "
        "already keeps the award they have.",
        form_class=BadgeAwardForm,
        apply=apply,
    )


MemberAdmin.actions = (*MemberAdmin.actions, award_badge)
MemberAdmin.has_award_badge_permission = (  # type: ignore[attr-defined]
    lambda self, request: request.user.has_perm("rewards.award_badge")
)
MemberAdmin.has_grant_certification_permission = (  # type: ignore[attr-defined]
    lambda self, request: request.user.has_perm("rewards.grant_certification")
)
