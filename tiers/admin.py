"""The operator's tool for the tier ladder, rule versions, tier history and nominations.

Which tier a member holds is never edited here: promotions, nomination reviews and
reassessments are actions that call ``tiers.services``. Rule versions are edited only as drafts,
validated by the rule service as they are saved; a published version is read-only (history
refers to it), and publishing, copying and simulating are actions on it.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import BooleanField, ExpressionWrapper, Model, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.actors import Actor, ActorKind
from core.admin_base import ReadOnlyModelAdmin
from core.db import durable_atomic
from core.exceptions import DomainError, InvalidInputError
from rewards.models import Certification
from tiers.evaluation import CERTIFICATION, METRICS, UNWINDOWED_METRICS, Requirement, TierPolicy
from tiers.models import (
    TIER_CODES,
    Nomination,
    NominationStatus,
    RequirementPurpose,
    RuleSet,
    RuleSetStatus,
    Tier,
    TierChange,
    TierChangeReason,
    TierRequirement,
    TierRule,
)
from tiers.selectors import ladder_list, rule_set_in_force, rules_compile, rules_in_force, tier_list
from tiers.services.promotions import nomination_create, nomination_review, nomination_withdraw
from tiers.services.reassessment import tier_simulation_run
from tiers.services.rules import (
    TierRuleInput,
    rule_set_check,
    rule_set_delete,
    rule_set_draft_create,
    rule_set_draft_update,
    rule_set_publish,
    rules_check,
)

# Each review is its own audited change in its own transaction; larger sets go through the API.
MAX_REVIEW_ACTION_NOMINATIONS = 100
# Copies are whole rule versions; a handful at a time is all an operator needs.
MAX_COPY_ACTION_RULE_SETS = 10


def operator_actor(request: HttpRequest) -> Actor:
    """The actor of an operator working in the admin."""
    return Actor(kind=ActorKind.OPERATOR, user_id=request.user.pk, name=request.user.get_username())


def _adopt_saved(target: Model, saved: Model) -> None:
    """Make the admin's unsaved instance the row a service wrote, for the log and the redirect."""
    for field in saved._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db
    target._state.fields_cache = {}


class _ServiceFormMixin:
    """A domain error raised by a service while saving a form is shown, and nothing is saved
    (the admin's transaction around the form view has rolled back when it is caught)."""

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


def _number(value: Any) -> str:
    """12 rather than 12.00, 2.5 rather than 2.50."""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def requirement_text(requirement: Requirement) -> str:
    """One requirement as operators read it: ``interactions >= 12 in 30 days``."""
    if requirement.is_certification:
        return f"certification {requirement.certification}"
    minimum = _number(requirement.minimum)
    if requirement.metric in UNWINDOWED_METRICS:
        return f"{requirement.metric} >= {minimum}"
    return f"{requirement.metric} >= {minimum} in {requirement.window_days} days"


def _requirements_html(requirements: Sequence[Requirement]) -> SafeString:
    if not requirements:
        return format_html("<em>{}</em>", "none")
    return format_html(
        '<ul class="tier-requirements">{}</ul>',
        format_html_join("", "<li>{}</li>", ((requirement_text(r),) for r in requirements)),
    )


def _policy_row(tier: Tier, policy: TierPolicy) -> dict[str, Any]:
    return {
        "tier": tier,
        "nomination_only": policy.nomination_only,
        "grace_days": policy.grace_days,
        "entry": _requirements_html(policy.entry),
        "maintenance": _requirements_html(policy.maintenance),
    }


def _action_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    title: str,
    intro: str,
    objects: Sequence[Model],
    form: forms.Form,
    action: str,
    submit_label: str,
) -> TemplateResponse:
    """The intermediate page of an action: the selection, a form, and "apply"."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "opts": model_admin.opts,
        "objects": objects,
        "form": form,
        "media": model_admin.media + form.media,
        "action": action,
        "submit_label": submit_label,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/tiers/action_form.html", context)


# --- The ladder ----------------------------------------------------------------------------------


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    """The rungs. The changelist shows the ladder under the rule version in force (a "ladder
    view"); the rules themselves are edited as rule versions (Tier rule sets)."""

    list_display = ("code", "name", "rank", "expected_share", "points_multiplier")
    search_fields = ("code", "name")
    ordering = ("rank",)
    fields = (
        "code",
        "name",
        "rank",
        "description",
        "expected_share",
        "points_multiplier",
        "rules_in_force",
    )
    change_list_template = "admin/tiers/tier/change_list.html"

    def get_fields(self, request: HttpRequest, obj: Tier | None = None) -> Any:
        return self.fields[:-1] if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Tier | None = None) -> Any:
        # The code is the tier's stable identifier: members, rules and history refer to it.
        # The points multiplier is shown, not edited: earning applies it to every award, and it
        # is seeded with the ladder by a data migration.
        if obj is None:
            return ("points_multiplier",)
        return ("code", "points_multiplier", "rules_in_force")

    def has_delete_permission(self, request: HttpRequest, obj: Tier | None = None) -> bool:
        # The seeded rungs are the ladder the services rely on (basic is every member's start).
        if obj is not None and obj.code in TIER_CODES:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="rules in force")
    def rules_in_force(self, obj: Tier) -> SafeString:
        rules = rules_in_force(at=timezone.now())
        if not rules.has_tier(obj.pk):
            return format_html("<em>{}</em>", "Not in the ladder yet.")
        policy = rules.tier(obj.pk)
        version = f"v{rules.version}" if rules.version is not None else "no published version"
        return format_html(
            "<p>Rule version {}: {}, grace {} days.</p>"
            "<p><strong>Entry</strong></p>{}<p><strong>Maintenance</strong></p>{}"
            '<p class="help">Edit them in a new draft of the tier rule sets.</p>',
            version,
            "nomination only" if policy.nomination_only else "reached by the rules",
            policy.grace_days,
            _requirements_html(policy.entry),
            _requirements_html(policy.maintenance),
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        tiers, rule_set = ladder_list(at=timezone.now())
        rules = rules_compile(rule_set=rule_set, tiers=tiers)
        extra_context = {
            **(extra_context or {}),
            "ladder_rule_set": rule_set,
            "ladder": [_policy_row(tier, rules.tier(tier.code)) for tier in reversed(tiers)],
        }
        return super().changelist_view(request, extra_context)


# --- Rule versions -------------------------------------------------------------------------------


def _metric_choices() -> list[tuple[str, str]]:
    return [(CERTIFICATION, "certification (holds it)"), *((m, m) for m in METRICS)]


def _certification_choices() -> list[tuple[str, str]]:
    return [
        ("", "---------"),
        *Certification.objects.order_by("level", "code").values_list("code", "code"),
    ]


class TierRequirementForm(forms.ModelForm):
    metric = forms.ChoiceField(choices=_metric_choices)
    certification = forms.ChoiceField(choices=_certification_choices, required=False)

    class Meta:
        model = TierRequirement
        fields = ("tier", "purpose", "metric", "window_days", "minimum", "certification")


class RuleFormSet(BaseInlineFormSet):
    """Both inlines of a draft are one set of rules: the requirements formset (validated after
    the tier rules formset) checks them together with the rule service, so an invalid draft is
    refused with every problem shown and nothing saved."""

    # Set per request by ``RuleSetInlineBase.get_formset`` (the two formsets find each other).
    request: HttpRequest

    def clean(self) -> None:
        super().clean()
        registry: dict[type[Model], RuleFormSet] = self.request.__dict__.setdefault(
            "_tier_rule_formsets", {}
        )
        registry[self.model] = self
        rules = registry.get(TierRule)
        if self.model is not TierRequirement or rules is None:
            return
        if any(form.errors for form in (*rules.forms, *self.forms)) or rules.non_form_errors():
            return  # the rows' own errors come first
        _, problems = tier_rule_inputs(rules, self)
        if problems:
            raise ValidationError(problems)


def _live_rows(formset: BaseInlineFormSet) -> list[dict[str, Any]]:
    return [
        form.cleaned_data
        for form in formset.forms
        if form.cleaned_data and not form.cleaned_data.get("DELETE")
    ]


def tier_rule_inputs(
    rules: BaseInlineFormSet, requirements: BaseInlineFormSet
) -> tuple[list[TierRuleInput], list[str]]:
    """The draft's rules from the two inlines, and the rule service's problems with them."""
    requirement_rows: dict[str, dict[str, list[Requirement]]] = defaultdict(
        lambda: {RequirementPurpose.ENTRY: [], RequirementPurpose.MAINTENANCE: []}
    )
    for row in _live_rows(requirements):
        is_certification = row["metric"] == CERTIFICATION
        requirement_rows[row["tier"].code][row["purpose"]].append(
            Requirement(
                metric=row["metric"],
                window_days=None if is_certification else row["window_days"],
                minimum=Decimal(0) if is_certification else row["minimum"],
                certification=row["certification"] or "",
            )
        )
    rule_rows = {row["tier"].code: row for row in _live_rows(rules)}
    problems = [
        f"{code}: has requirements but no tier rule row; add one for {code}."
        for code in requirement_rows
        if code not in rule_rows
    ]
    inputs = [
        TierRuleInput(
            tier=code,
            nomination_only=row["nomination_only"],
            grace_days=row["grace_days"],
            entry=tuple(requirement_rows[code][RequirementPurpose.ENTRY]),
            maintenance=tuple(requirement_rows[code][RequirementPurpose.MAINTENANCE]),
        )
        for code, row in rule_rows.items()
    ]
    # Tiers with requirements but no rule row are checked too, so every problem shows at once.
    orphans = [
        TierRuleInput(
            tier=code,
            nomination_only=False,
            grace_days=0,
            entry=tuple(rows[RequirementPurpose.ENTRY]),
            maintenance=tuple(rows[RequirementPurpose.MAINTENANCE]),
        )
        for code, rows in requirement_rows.items()
        if code not in rule_rows
    ]
    try:
        rules_check(tier_rules=[*inputs, *orphans])
    except InvalidInputError as error:
        problems.extend(item["detail"] for item in error.errors)
    return inputs, problems


class RuleSetInlineBase(admin.TabularInline):
    """Editable while the version is a draft, with the rule set's own permission; read-only
    once it is published (published versions never change)."""

    formset = RuleFormSet
    extra = 0

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        return type(formset.__name__, (formset,), {"request": request})

    def _editable(self, request: HttpRequest, obj: RuleSet | None) -> bool:
        return obj is not None and obj.is_draft and request.user.has_perm("tiers.change_ruleset")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("tiers.view_ruleset") or request.user.has_perm(
            "tiers.change_ruleset"
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(request, obj)


class TierRuleInline(RuleSetInlineBase):
    model = TierRule
    fields = ("tier", "nomination_only", "grace_days")
    ordering = ("tier__rank",)
    verbose_name = "tier rule"
    verbose_name_plural = (
        "tier rules (one per tier above the lowest; nomination-only tiers are reached only by "
        "a nomination or a promotion)"
    )


class TierRequirementInline(RuleSetInlineBase):
    model = TierRequirement
    form = TierRequirementForm
    fields = ("tier", "purpose", "metric", "window_days", "minimum", "certification")
    ordering = ("tier__rank", "purpose", "metric", "window_days")
    verbose_name = "requirement"
    verbose_name_plural = (
        "requirements (all must hold; maintenance may only loosen or drop entry requirements; "
        "a certification requirement takes no window or minimum)"
    )


class RuleSetAddForm(forms.ModelForm):
    based_on = forms.ModelChoiceField(
        queryset=RuleSet.objects.order_by("-version"),
        required=False,
        help_text="The version to copy; leave empty for the version in force now.",
    )

    class Meta:
        model = RuleSet
        fields = ("name", "note")


class PublishForm(forms.Form):
    effective_at = forms.SplitDateTimeField(
        required=False,
        widget=AdminSplitDateTime,
        help_text="From when this version is in force (UTC). Leave empty for now; a later time "
        "schedules it. It cannot be in the past: history is never rewritten.",
    )


class RuleSetStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("draft", "Draft"),
            ("in_force", "In force"),
            ("scheduled", "Scheduled"),
            ("superseded", "Superseded"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RuleSet]) -> QuerySet[RuleSet]:
        value, now = self.value(), timezone.now()
        published = queryset.filter(status=RuleSetStatus.PUBLISHED)
        if value == "draft":
            return queryset.filter(status=RuleSetStatus.DRAFT)
        if value == "in_force":
            return queryset.filter(in_force=True)
        if value == "scheduled":
            return published.filter(effective_at__gt=now)
        if value == "superseded":
            return published.filter(effective_at__lte=now, in_force=False)
        return queryset


@admin.register(RuleSet)
class RuleSetAdmin(_ServiceFormMixin, admin.ModelAdmin):
    """Rule versions: draft -> simulate -> publish with an effective time."""

    list_display = (
        "version",
        "name",
        "state",
        "effective_at",
        "published_by",
        "published_at",
        "created_by",
        "created_at",
    )
    list_display_links = ("version", "name")
    list_filter = (RuleSetStateFilter, "status")
    search_fields = ("name", "note")
    ordering = ("-version",)
    actions = ("publish_draft", "copy_into_draft", "simulate")
    inlines = (TierRuleInline, TierRequirementInline)
    change_form_template = "admin/tiers/ruleset/change_form.html"
    add_fieldsets = ((None, {"fields": ("name", "note", "based_on")}),)
    fieldsets = (
        (None, {"fields": ("version", "state", "rule_check", "name", "note")}),
        (
            "Publication",
            {"fields": ("effective_at", "published_at", "published_by")},
        ),
        ("Record", {"fields": ("created_by", "created_at")}),
    )
    _written_by_services = (
        "version",
        "state",
        "rule_check",
        "status",
        "effective_at",
        "published_at",
        "published_by",
        "created_by",
        "created_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[RuleSet]:
        in_force = rule_set_in_force(at=timezone.now())
        return (
            super()
            .get_queryset(request)
            .annotate(
                in_force=ExpressionWrapper(
                    Q(pk=in_force.pk if in_force else None), output_field=BooleanField()
                )
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: RuleSet | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: RuleSet | None = None) -> Any:
        return () if obj is None else self._written_by_services

    def get_form(
        self, request: HttpRequest, obj: RuleSet | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = RuleSetAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: RuleSet | None) -> Any:
        # A new draft starts as a copy (of the version in force, or the one chosen); its rules
        # are edited on its page once it exists.
        return () if obj is None else self.inlines

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # Only drafts may be deleted, one at a time from their page (through the service).
        actions.pop("delete_selected", None)
        return actions

    def has_change_permission(self, request: HttpRequest, obj: RuleSet | None = None) -> bool:
        if obj is not None and not obj.is_draft:
            return False  # published versions are immutable: history refers to them
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: RuleSet | None = None) -> bool:
        if obj is not None and not obj.is_draft:
            return False
        return super().has_delete_permission(request, obj)

    def has_publish_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tiers.publish_ruleset")

    # --- Display ---------------------------------------------------------------------------------

    @admin.display(description="state", ordering="status")
    def state(self, obj: RuleSet) -> SafeString:
        if obj.is_draft:
            return format_html('<span style="color:#8a6d00">{}</span>', "draft")
        if getattr(obj, "in_force", False):
            return format_html('<strong style="color:#2e7d32">{}</strong>', "in force")
        if obj.effective_at is not None and obj.effective_at > timezone.now():
            return format_html('<span style="color:#1565c0">{}</span>', "scheduled")
        return format_html("<span>{}</span>", "superseded")

    @admin.display(description="check")
    def rule_check(self, obj: RuleSet) -> SafeString:
        if not obj.is_draft:
            return format_html("{}", "Published: fixed, as history refers to it.")
        problems = rule_set_check(rule_set=obj)
        if not problems:
            return format_html(
                '<span style="color:#2e7d32">{}</span>',
                "No problems: ready to simulate and publish.",
            )
        return format_html(
            '<strong style="color:#c62828">{}</strong><ul class="errorlist">{}</ul>',
            "This draft cannot be published until these are fixed:",
            format_html_join("", "<li>{}</li>", ((problem,) for problem in problems)),
        )

    # --- Saving through the rule service ---------------------------------------------------------

    def save_model(
        self, request: HttpRequest, obj: RuleSet, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            return  # saved with its rules, in one service call, by save_related
        rule_set = rule_set_draft_create(
            actor=operator_actor(request),
            at=timezone.now(),
            name=form.cleaned_data["name"],
            note=form.cleaned_data["note"],
            based_on=form.cleaned_data["based_on"],
        )
        _adopt_saved(obj, rule_set)

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool
    ) -> None:
        if not change:
            return
        # commit=False writes nothing; it records what changed, for the admin's history message.
        for formset in formsets:
            formset.save(commit=False)
        by_model = {formset.model: formset for formset in formsets}
        tier_rules = None
        if {TierRule, TierRequirement} <= by_model.keys() and any(
            formset.has_changed() for formset in formsets
        ):
            tier_rules, _ = tier_rule_inputs(by_model[TierRule], by_model[TierRequirement])
        updated = rule_set_draft_update(
            rule_set=form.instance,
            actor=operator_actor(request),
            name=form.cleaned_data["name"],
            note=form.cleaned_data["note"],
            tier_rules=tier_rules,
        )
        _adopt_saved(form.instance, updated)

    def delete_model(self, request: HttpRequest, obj: RuleSet) -> None:
        rule_set_delete(rule_set=obj)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as error:
            self.message_user(request, error.detail, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:tiers_ruleset_changelist"))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        rule_set = self.get_object(request, object_id)
        if rule_set is not None and rule_set.is_draft and request.method == "GET":
            problems = rule_set_check(rule_set=rule_set)
            if problems:
                self.message_user(
                    request,
                    f"This draft has {len(problems)} problem(s) and cannot be published: "
                    + " ".join(problems),
                    messages.WARNING,
                )
        extra_context = {
            **(extra_context or {}),
            "can_publish": rule_set is not None
            and rule_set.is_draft
            and self.has_publish_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    # --- Publication and simulation pages --------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/publication/",
                self.admin_site.admin_view(self.publish_view),
                name="tiers_ruleset_publish",
            ),
            path(
                "<path:object_id>/simulation/",
                self.admin_site.admin_view(self.simulation_view),
                name="tiers_ruleset_simulate",
            ),
            *super().get_urls(),
        ]

    def _rule_set_or_redirect(
        self, request: HttpRequest, object_id: str
    ) -> RuleSet | HttpResponseRedirect:
        rule_set = self.get_object(request, object_id)
        if rule_set is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return rule_set

    def publish_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_publish_permission(request):
            raise PermissionDenied
        rule_set = self._rule_set_or_redirect(request, object_id)
        if isinstance(rule_set, HttpResponseRedirect):
            return rule_set
        change_url = reverse("admin:tiers_ruleset_change", args=[rule_set.pk])
        if not rule_set.is_draft:
            self.message_user(request, f"{rule_set} is published already.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        form = PublishForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                with durable_atomic():
                    published = rule_set_publish(
                        rule_set=rule_set,
                        effective_at=form.cleaned_data["effective_at"],
                        actor=operator_actor(request),
                        at=timezone.now(),
                    )
            except DomainError as error:
                form.add_error(None, error.detail)
            else:
                self.message_user(
                    request,
                    f"Published version {published.version}: in force from "
                    f"{published.effective_at:%Y-%m-%d %H:%M} UTC.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Publish tier rules version {rule_set.version}",
            "opts": self.opts,
            "original": rule_set,
            "rule_set": rule_set,
            "problems": rule_set_check(rule_set=rule_set),
            "ladder": self._ladder(rule_set),
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/tiers/ruleset/publish.html", context)

    def simulation_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        rule_set = self._rule_set_or_redirect(request, object_id)
        if isinstance(rule_set, HttpResponseRedirect):
            return rule_set
        at = timezone.now()
        try:
            with durable_atomic():
                result = tier_simulation_run(rule_set_id=rule_set.pk, at=at)
        except DomainError as error:
            self.message_user(request, error.detail, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:tiers_ruleset_change", args=[rule_set.pk]))
        simulated = result.as_dict()
        tiers = [tier.code for tier in tier_list()]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Simulation of tier rules version {rule_set.version}",
            "opts": self.opts,
            "original": rule_set,
            "rule_set": rule_set,
            "at": at,
            "members_count": simulated["members"],
            "changed_count": simulated["changed"],
            "tiers": tiers,
            "rows": matrix_rows(tiers, simulated["matrix"], simulated["samples"]),
            "column_totals": [
                sum(row.get(code, 0) for row in simulated["matrix"].values()) for code in tiers
            ],
            "ladder": self._ladder(rule_set),
            "can_publish": rule_set.is_draft and self.has_publish_permission(request),
        }
        return TemplateResponse(request, "admin/tiers/ruleset/simulation.html", context)

    def _ladder(self, rule_set: RuleSet) -> list[dict[str, Any]]:
        tiers = list(tier_list())
        rules = rules_compile(rule_set=rule_set, tiers=tiers)
        return [_policy_row(tier, rules.tier(tier.code)) for tier in reversed(tiers)]

    # --- Actions ---------------------------------------------------------------------------------

    def _single(self, request: HttpRequest, queryset: QuerySet[RuleSet]) -> RuleSet | None:
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(request, "Select exactly one rule version.", messages.ERROR)
            return None
        return selected[0]

    @admin.action(description="Publish selected draft...", permissions=["publish"])
    def publish_draft(
        self, request: HttpRequest, queryset: QuerySet[RuleSet]
    ) -> HttpResponse | None:
        rule_set = self._single(request, queryset)
        if rule_set is None:
            return None
        if not rule_set.is_draft:
            self.message_user(request, f"{rule_set} is published already.", messages.ERROR)
            return None
        return HttpResponseRedirect(reverse("admin:tiers_ruleset_publish", args=[rule_set.pk]))

    @admin.action(description="Copy into a new draft", permissions=["add"])
    def copy_into_draft(self, request: HttpRequest, queryset: QuerySet[RuleSet]) -> None:
        sources = list(queryset.order_by("version")[: MAX_COPY_ACTION_RULE_SETS + 1])
        if len(sources) > MAX_COPY_ACTION_RULE_SETS:
            self.message_user(
                request,
                f"Select at most {MAX_COPY_ACTION_RULE_SETS} versions; nothing was copied.",
                messages.ERROR,
            )
            return
        actor, at = operator_actor(request), timezone.now()
        for source in sources:
            try:
                with durable_atomic():
                    draft = rule_set_draft_create(
                        actor=actor,
                        at=at,
                        name=f"Copy of v{source.version}"
                        + (f": {source.name}" if source.name else ""),
                        based_on=source,
                    )
            except DomainError as error:
                self.message_user(request, f"v{source.version}: {error.detail}", messages.ERROR)
                continue
            self.message_user(
                request,
                format_html(
                    'Copied v{} into the new draft <a href="{}">v{}</a>: edit, simulate, publish.',
                    source.version,
                    reverse("admin:tiers_ruleset_change", args=[draft.pk]),
                    draft.version,
                ),
                messages.SUCCESS,
            )

    @admin.action(description="Simulate against the current population", permissions=["view"])
    def simulate(self, request: HttpRequest, queryset: QuerySet[RuleSet]) -> HttpResponse | None:
        rule_set = self._single(request, queryset)
        if rule_set is None:
            return None
        return HttpResponseRedirect(reverse("admin:tiers_ruleset_simulate", args=[rule_set.pk]))


def matrix_rows(
    tiers: Sequence[str],
    matrix: dict[str, dict[str, int]],
    samples: dict[str, dict[str, list[dict[str, str]]]] | None = None,
) -> list[dict[str, Any]]:
    """The from-to matrix as table rows in ladder order, each cell with its sample members
    linked to their admin page."""
    rows = []
    for source in tiers:
        counts = matrix.get(source, {})
        cells = []
        for target in tiers:
            cell_samples = (samples or {}).get(source, {}).get(target, [])
            cells.append(
                {
                    "count": counts.get(target, 0),
                    "moves": source != target,
                    "samples": [
                        (
                            reverse("admin:members_member_change", args=[sample["id"]]),
                            sample["external_id"],
                        )
                        for sample in cell_samples
                    ],
                }
            )
        rows.append({"tier": source, "cells": cells, "total": sum(counts.values())})
    return rows


# --- History -------------------------------------------------------------------------------------


def checks_html(checks: Iterable[dict[str, Any]]) -> SafeString:
    """The requirement checks stored with a decision: required, current, met."""
    rows = []
    for check in checks:
        if check.get("certification"):
            what = f"certification {check['certification']}"
            required, current = "held", "held" if check.get("met") else "not held"
        else:
            window = check.get("window_days")
            what = check.get("metric", "?") + (f" in {window} days" if window else "")
            required, current = _number(check.get("required")), _number(check.get("current"))
        rows.append((what, required, current, "yes" if check.get("met") else "NO"))
    if not rows:
        return format_html("<em>{}</em>", "no requirement checks")
    return format_html(
        "<table><thead><tr><th>requirement</th><th>required</th><th>current</th><th>met</th>"
        "</tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )


@admin.register(TierChange)
class TierChangeAdmin(ReadOnlyModelAdmin):
    """The tier history, read-only: every change with its reason, actor, rule version and the
    metrics that decided it."""

    list_display = (
        "created_at",
        "member",
        "from_tier",
        "to_tier",
        "reason",
        "actor",
        "rule_set",
        "pinned_until",
    )
    list_filter = ("reason", "to_tier", "from_tier", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member", "from_tier", "to_tier", "rule_set")
    # Served by the (-created_at, -id) index.
    ordering = ("-created_at", "-id")
    fields = (
        "member",
        "from_tier",
        "to_tier",
        "reason",
        "actor",
        "note",
        "rule_set",
        "job",
        "pinned_until",
        "explanation",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="why")
    def explanation(self, obj: TierChange) -> SafeString:
        details = dict(obj.details or {})
        checks = details.pop("checks", None)
        parts = []
        if checks is not None:
            basis = (
                "The entry rule of the new tier"
                if obj.reason == TierChangeReason.REASSESSMENT
                else "The maintenance rule of the tier held"
            )
            parts.append(format_html("<p>{}:</p>{}", basis, checks_html(checks)))
        if details:
            parts.append(
                format_html(
                    "<dl>{}</dl>",
                    format_html_join(
                        "",
                        "<dt>{}</dt><dd>{}</dd>",
                        ((key.replace("_", " "), value) for key, value in sorted(details.items())),
                    ),
                )
            )
        if not parts:
            return format_html("-")
        return format_html_join("", "{}", ((part,) for part in parts))


# --- Nominations ---------------------------------------------------------------------------------


class NominationAddForm(forms.ModelForm):
    evidence_urls = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Links to the evidence, one per line.",
    )

    class Meta:
        model = Nomination
        fields = ("member", "tier", "evidence")

    def clean_evidence_urls(self) -> list[str]:
        urls = [line.strip() for line in self.cleaned_data["evidence_urls"].splitlines()]
        field = forms.URLField(assume_scheme="https")
        return [field.clean(url) for url in urls if url]


class ReviewForm(forms.Form):
    note = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept on each nomination and its tier change.",
    )


class ApproveForm(ReviewForm):
    probation_days = forms.IntegerField(
        min_value=0,
        max_value=366,
        initial=settings.LOYALTY_TIER_PROBATION_DAYS,
        help_text="The member holds the tier on probation this long; the reassessment job then "
        "confirms it if the tier's maintenance rule holds, or rolls it back.",
    )


@admin.register(Nomination)
class NominationAdmin(_ServiceFormMixin, admin.ModelAdmin):
    """Nominations into nomination-only tiers: added here or through the API, reviewed with the
    actions (approve with probation, reject, withdraw); every field is read-only otherwise."""

    list_display = (
        "id",
        "member",
        "tier",
        "status",
        "nominated_by",
        "created_at",
        "reviewed_by",
        "probation_until",
        "decided_at",
    )
    list_filter = ("status", "tier", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=member__external_id",)
    search_help_text = "A member's external id (exact)."
    list_select_related = ("member", "tier")
    autocomplete_fields = ("member",)
    ordering = ("-created_at", "-id")
    actions = ("approve", "reject", "withdraw")
    fields = (
        "member",
        "tier",
        "status",
        "evidence",
        "evidence_links",
        "nominated_by",
        "created_at",
        "from_tier",
        "reviewed_by",
        "reviewed_at",
        "review_note",
        "probation_until",
        "decided_at",
    )
    readonly_fields = fields

    def get_fields(self, request: HttpRequest, obj: Nomination | None = None) -> Any:
        return ("member", "tier", "evidence", "evidence_urls") if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Nomination | None = None) -> Any:
        return () if obj is None else self.readonly_fields

    def get_form(
        self,
        request: HttpRequest,
        obj: Nomination | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = NominationAddForm
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Nomination | None = None) -> bool:
        # A nomination's page is read-only; it moves only through the review actions.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Nomination | None = None) -> bool:
        return False  # every step is part of the member's record

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tiers.change_nomination")

    @admin.display(description="evidence links")
    def evidence_links(self, obj: Nomination) -> SafeString:
        if not obj.evidence_urls:
            return format_html("-")
        items = [
            format_html('<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>', url, url)
            if _is_http(url)
            else format_html("{} (not a web link)", url)
            for url in obj.evidence_urls
        ]
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((item,) for item in items))
        )

    def save_model(
        self, request: HttpRequest, obj: Nomination, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        nomination = nomination_create(
            member=data["member"],
            tier=data["tier"].code,
            evidence=data["evidence"],
            evidence_urls=data["evidence_urls"],
            actor=operator_actor(request),
            at=timezone.now(),
        )
        _adopt_saved(obj, nomination)

    def _review(
        self,
        request: HttpRequest,
        queryset: QuerySet[Nomination],
        *,
        action: str,
        title: str,
        form_class: type[ReviewForm],
        review: Callable[[Nomination, dict[str, Any]], Nomination],
        summary: str,
    ) -> TemplateResponse | None:
        nominations = list(
            queryset.select_related("member", "tier").order_by("created_at", "id")[
                : MAX_REVIEW_ACTION_NOMINATIONS + 1
            ]
        )
        if len(nominations) > MAX_REVIEW_ACTION_NOMINATIONS:
            self.message_user(
                request,
                f"Select at most {MAX_REVIEW_ACTION_NOMINATIONS} nominations; nothing was done.",
                messages.ERROR,
            )
            return None
        pending = [n for n in nominations if n.status == NominationStatus.PENDING]
        if not pending:
            self.message_user(
                request, "None of the selected nominations is pending.", messages.INFO
            )
            return None
        form = form_class(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return _action_page(
                self,
                request,
                title=title,
                intro=f"{title} these {len(pending)} pending nomination(s); each is its own "
                "recorded step, and one that cannot be reviewed is reported while the others go "
                "ahead."
                + (
                    " Nominations not pending are skipped."
                    if len(pending) < len(nominations)
                    else ""
                ),
                objects=pending,
                form=form,
                action=action,
                submit_label=title,
            )
        done = 0
        for nomination in pending:
            try:
                # One transaction per nomination: a refusal undoes only its own review.
                with durable_atomic():
                    review(nomination, form.cleaned_data)
            except DomainError as error:
                self.message_user(
                    request, f"{nomination.member.external_id}: {error.detail}", messages.ERROR
                )
            else:
                done += 1
        if done:
            self.message_user(request, summary.format(count=done), messages.SUCCESS)
        return None

    @admin.action(description="Approve selected (start probation)...", permissions=["review"])
    def approve(
        self, request: HttpRequest, queryset: QuerySet[Nomination]
    ) -> TemplateResponse | None:
        actor, at = operator_actor(request), timezone.now()
        return self._review(
            request,
            queryset,
            action="approve",
            title="Approve",
            form_class=ApproveForm,
            review=lambda nomination, data: nomination_review(
                nomination=nomination,
                approve=True,
                note=data["note"],
                probation_days=data["probation_days"],
                actor=actor,
                at=at,
            ),
            summary="Approved {count} nomination(s): the members hold the tier on probation.",
        )

    @admin.action(description="Reject selected...", permissions=["review"])
    def reject(
        self, request: HttpRequest, queryset: QuerySet[Nomination]
    ) -> TemplateResponse | None:
        actor, at = operator_actor(request), timezone.now()
        return self._review(
            request,
            queryset,
            action="reject",
            title="Reject",
            form_class=ReviewForm,
            review=lambda nomination, data: nomination_review(
                nomination=nomination, approve=False, note=data["note"], actor=actor, at=at
            ),
            summary="Rejected {count} nomination(s).",
        )

    @admin.action(description="Withdraw selected (pending only)", permissions=["review"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet[Nomination]) -> None:
        actor, at = operator_actor(request), timezone.now()
        pending = list(
            queryset.filter(status=NominationStatus.PENDING).order_by("id")[
                :MAX_REVIEW_ACTION_NOMINATIONS
            ]
        )
        withdrawn = 0
        for nomination in pending:
            try:
                with durable_atomic():
                    nomination_withdraw(nomination=nomination, actor=actor, at=at)
            except DomainError as error:
                self.message_user(request, f"#{nomination.pk}: {error.detail}", messages.ERROR)
            else:
                withdrawn += 1
        self.message_user(request, f"Withdrew {withdrawn} nomination(s).")


def _is_http(url: str) -> bool:
    # Evidence links come from partners too: only web links become clickable.
    return isinstance(url, str) and url.lower().startswith(("https://", "http://"))
