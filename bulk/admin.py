"""Bulk operations in the admin: the members' "Award points", "Grant a certification" and
"Reassess tiers" actions start a background job on any selection (including "select all N
matching" across pages: the changelist's filtered queryset is handed to the job as SQL, never
read here), and redirect to the job's progress page; a CSV of external ids can be uploaded for a
certification grant. Operations and their items are read-only here.
"""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from bulk.models import BulkItem, BulkOperation, BulkOperationKind
from bulk.selectors import VIEW_ALL_PERMISSION
from bulk.services import POINTS_REASONS, Selection, bulk_operation_request, external_ids_from_csv
from core.actors import Actor, ActorKind
from core.admin_base import ReadOnlyModelAdmin
from core.exceptions import DomainError
from core.models import JobStatus
from members.admin import MemberAdmin
from members.models import Member
from rewards.models import Certification, Reason

OPERATION_PERMISSIONS = {
    BulkOperationKind.POINTS_AWARD: "rewards.award_points",
    BulkOperationKind.CERTIFICATION_GRANT: "rewards.grant_certification",
    BulkOperationKind.TIER_REASSESSMENT: "tiers.run_reassessment",
}
# An uploaded list of external ids is read into memory; keep it to what one request handles.
MAX_UPLOAD_BYTES = 16 * 1024 * 1024


def _actor(request: HttpRequest) -> Actor:
    return Actor(kind=ActorKind.OPERATOR, user_id=request.user.pk, name=request.user.get_username())


def _may_operate(request: HttpRequest) -> bool:
    user = request.user
    return (
        user.is_active
        and user.is_staff
        and any(
            user.has_perm(permission)
            for permission in (VIEW_ALL_PERMISSION, *OPERATION_PERMISSIONS.values())
        )
    )


def _progress_url(bulk_operation: BulkOperation) -> str:
    return reverse("admin:bulk_bulkoperation_change", args=[bulk_operation.pk])


# --- Forms ---------------------------------------------------------------------------------------


class BulkPointsForm(forms.Form):
    points = forms.IntegerField(
        min_value=1, max_value=settings.LOYALTY_POINTS_MAX_AWARD, help_text="For each member."
    )
    reason = forms.ChoiceField(
        choices=[(reason, Reason(reason).label) for reason in POINTS_REASONS],
        initial=Reason.MANUAL,
    )
    note = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept on each entry.",
    )
    expires_at = forms.SplitDateTimeField(
        required=False,
        widget=AdminSplitDateTime,
        help_text="When these points expire; empty for the default validity.",
    )


class BulkCertificationForm(forms.Form):
    certification = forms.ModelChoiceField(
        queryset=Certification.objects.filter(is_active=True).order_by("level", "code"),
        empty_label=None,
    )
    evidence = forms.CharField(
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="What shows the members earned it (kept on each grant).",
    )
    expires_at = forms.SplitDateTimeField(
        required=False,
        widget=AdminSplitDateTime,
        help_text="Empty for the certification's own validity.",
    )


class BulkReassessForm(forms.Form):
    """Nothing to ask: the page confirms the selection."""


class CertificationCsvForm(BulkCertificationForm):
    file = forms.FileField(
        help_text="UTF-8 CSV whose first column holds external ids (an external_id header row "
        "is optional). Unknown ids are reported as failed items."
    )

    def clean_file(self) -> list[str]:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"At most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
        try:
            ids = external_ids_from_csv(upload.read().decode("utf-8"))
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None
        except DomainError as error:
            raise forms.ValidationError(error.detail) from None
        if not ids:
            raise forms.ValidationError("The file names no external id.")
        if any(len(external_id) > 128 for external_id in ids):
            raise forms.ValidationError("External ids are at most 128 characters.")
        return ids


def _params(operation: str, data: dict[str, Any]) -> dict[str, Any]:
    if operation == BulkOperationKind.POINTS_AWARD:
        return {
            "points": data["points"],
            "reason": data["reason"],
            "note": data["note"],
            "expires_at": data["expires_at"],
        }
    if operation == BulkOperationKind.CERTIFICATION_GRANT:
        return {
            "certification": data["certification"].code,
            "evidence": data["evidence"],
            "expires_at": data["expires_at"],
        }
    return {}


# --- Actions on members --------------------------------------------------------------------------


def _bulk_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Member],
    *,
    action: str,
    operation: str,
    title: str,
    intro: str,
    form_class: type[forms.Form],
) -> HttpResponse | None:
    """Ask for the operation's parameters, then start it as a background job on the selection
    (the whole filtered list with "select all"), and show its progress page."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if not form.is_valid():
        selected = queryset.filter(erased_at__isnull=True)
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "intro": intro,
            "opts": modeladmin.opts,
            "form": form,
            "media": modeladmin.media + form.media,
            "action": action,
            "member_count": selected.count(),
            "select_across": request.POST.get("select_across", "0"),
            "selected_pks": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "submit_label": title,
        }
        return TemplateResponse(request, "admin/bulk/action_form.html", context)
    try:
        bulk_operation = bulk_operation_request(
            operation=operation,
            params=_params(operation, form.cleaned_data),
            selection=Selection(members=queryset),
            description={"admin_filters": request.GET.urlencode()},
            actor=_actor(request),
            at=timezone.now(),
        )
    except DomainError as error:
        modeladmin.message_user(request, error.detail, messages.ERROR)
        return None
    modeladmin.message_user(
        request,
        f"{title}: started a background job for {bulk_operation.job.items_total} member(s).",
        messages.SUCCESS,
    )
    return HttpResponseRedirect(_progress_url(bulk_operation))


@admin.action(
    description="Award points to selected members (background job)...", permissions=["award_points"]
)
def award_points(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Member]
) -> HttpResponse | None:
    return _bulk_action(
        modeladmin,
        request,
        queryset,
        action="award_points",
        operation=BulkOperationKind.POINTS_AWARD,
        title="Award points",
        intro="Each selected member gets the points once, however often the job is retried; "
        "erased members are left out.",
        form_class=BulkPointsForm,
    )


@admin.action(
    description="Grant a certification to selected members (background job)...",
    permissions=["grant_certification"],
)
def grant_certification(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Member]
) -> HttpResponse | None:
    return _bulk_action(
        modeladmin,
        request,
        queryset,
        action="grant_certification",
        operation=BulkOperationKind.CERTIFICATION_GRANT,
        title="Grant a certification",
        intro="Each selected member is certified and their tier reassessed. A member who "
        "holds it already is skipped (kept as it is); one who lacks a prerequisite is reported "
        "as failed.",
        form_class=BulkCertificationForm,
    )


@admin.action(
    description="Reassess tiers of selected members (background job)...",
    permissions=["reassess_tiers"],
)
def reassess_tiers(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Member]
) -> HttpResponse | None:
    return _bulk_action(
        modeladmin,
        request,
        queryset,
        action="reassess_tiers",
        operation=BulkOperationKind.TIER_REASSESSMENT,
        title="Reassess tiers",
        intro="Each selected member's tier is assessed now under the rules in force.",
        form_class=BulkReassessForm,
    )


# Next to the member admin's own actions: these work on any number of members, as jobs.
MemberAdmin.actions = (*MemberAdmin.actions, award_points, grant_certification, reassess_tiers)


# --- Operations and items ------------------------------------------------------------------------


class _VisibleToOperators:
    """Operators who may run an operation see their own; ``bulk.view_bulkoperation`` sees all."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _may_operate(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_operate(request)

    def _scoped(self, request: HttpRequest, queryset: QuerySet[Any], field: str) -> QuerySet[Any]:
        if request.user.has_perm(VIEW_ALL_PERMISSION):
            return queryset
        return queryset.filter(**{field: request.user.pk})


@admin.register(BulkOperation)
class BulkOperationAdmin(_VisibleToOperators, ReadOnlyModelAdmin):
    list_display = (
        "created_at",
        "operation",
        "status",
        "progress",
        "items_total",
        "succeeded_count",
        "skipped_count",
        "failed_count",
        "requested_by",
    )
    list_filter = ("operation", "job__status")
    list_select_related = ("job",)
    ordering = ("-created_at", "-job")
    change_list_template = "admin/bulk/bulkoperation/change_list.html"
    fields = (
        "job_id",
        "operation",
        "status",
        "progress",
        "items_total",
        "items_done",
        "succeeded_count",
        "skipped_count",
        "failed_count",
        "items",
        "parameters",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "error",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[BulkOperation]:
        queryset = super().get_queryset(request).select_related("job")
        return self._scoped(request, queryset, "requested_by_user_id")

    @admin.display(description="status")
    def status(self, obj: BulkOperation) -> str:
        return obj.job.get_status_display()

    @admin.display(description="progress")
    def progress(self, obj: BulkOperation) -> SafeString:
        share = obj.job.progress
        return format_html(
            '<progress max="100" value="{}"></progress> {}% ({} of {} items)',
            round(share * 100),
            round(share * 100),
            obj.job.items_done,
            obj.job.items_total,
        )

    @admin.display(description="items")
    def items_total(self, obj: BulkOperation) -> int:
        return obj.job.items_total

    @admin.display(description="items done")
    def items_done(self, obj: BulkOperation) -> int:
        return obj.job.items_done

    @admin.display(description="requested by")
    def requested_by(self, obj: BulkOperation) -> str:
        return obj.job.requested_by

    @admin.display(description="started")
    def started_at(self, obj: BulkOperation) -> Any:
        return obj.job.started_at

    @admin.display(description="finished")
    def finished_at(self, obj: BulkOperation) -> Any:
        return obj.job.finished_at

    @admin.display(description="error")
    def error(self, obj: BulkOperation) -> str:
        return obj.job.error

    @admin.display(description="parameters")
    def parameters(self, obj: BulkOperation) -> str:
        return ", ".join(
            f"{name}={value}"
            for name, value in obj.job.params.items()
            if name not in ("actor", "chunk_size", "operation")
        )

    @admin.display(description="item outcomes")
    def items(self, obj: BulkOperation) -> SafeString:
        url = reverse("admin:bulk_bulkitem_changelist") + f"?job__id__exact={obj.pk}"
        return format_html(
            '<a href="{}">All items</a> &middot; <a href="{}&status__exact=failed">Failed</a>'
            ' &middot; <a href="{}&status__exact=skipped">Skipped</a>',
            url,
            url,
            url,
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The progress page reloads itself every few seconds until the job ends.
        try:
            still_running = BulkOperation.objects.filter(
                pk=object_id, job__status__in=(JobStatus.PENDING, JobStatus.RUNNING)
            ).exists()
        except (ValidationError, ValueError):
            still_running = False  # not an id: Django's own view answers
        extra_context = {**(extra_context or {}), "still_running": still_running}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "grant-certification-csv/",
                self.admin_site.admin_view(self.grant_certification_csv_view),
                name="bulk_bulkoperation_grant_certification_csv",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "may_grant_certification": request.user.has_perm(
                OPERATION_PERMISSIONS[BulkOperationKind.CERTIFICATION_GRANT]
            ),
        }
        return super().changelist_view(request, extra_context)

    def grant_certification_csv_view(self, request: HttpRequest) -> HttpResponse:
        """Grant a certification to the members a CSV file of external ids names."""
        if not request.user.has_perm(OPERATION_PERMISSIONS[BulkOperationKind.CERTIFICATION_GRANT]):
            raise PermissionDenied
        form = CertificationCsvForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                bulk_operation = bulk_operation_request(
                    operation=BulkOperationKind.CERTIFICATION_GRANT,
                    params=_params(BulkOperationKind.CERTIFICATION_GRANT, data),
                    selection=Selection(external_ids=data["file"]),
                    description={"file": form.files["file"].name},
                    actor=_actor(request),
                    at=timezone.now(),
                )
            except DomainError as error:
                self.message_user(request, error.detail, messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Grant a certification: started a background job for "
                    f"{bulk_operation.job.items_total} external id(s).",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(_progress_url(bulk_operation))
        context = {
            **self.admin_site.each_context(request),
            "title": "Grant a certification from a CSV of external ids",
            "opts": self.opts,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/bulk/bulkoperation/grant_csv.html", context)


@admin.register(BulkItem)
class BulkItemAdmin(_VisibleToOperators, ReadOnlyModelAdmin):
    list_display = ("job", "position", "external_id", "member", "status", "outcome", "detail")
    list_filter = ("status", "outcome")
    search_fields = ("=external_id",)
    search_help_text = "An external id (exact)."
    list_select_related = ("member",)
    ordering = ("job", "position")
    raw_id_fields = ("member",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[BulkItem]:
        queryset = super().get_queryset(request)
        return self._scoped(request, queryset, "job__bulk_operation__requested_by_user_id")

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The operation's page links to its items by job id.
        return lookup == "job__id__exact" or super().lookup_allowed(lookup, value, request)
