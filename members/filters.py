"""Query filters of the member list: tier, lifecycle, tag, joined range, search."""

import re
from typing import Any

import django_filters
from django import forms
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field

from members.models import ActivityEvent, LifecycleStage, Member, MemberTag
from tiers.models import Tier

TAG_PATTERN = re.compile(
    r"^(?P<namespace>[\w-]{1,64}):(?P<key>[\w.:-]{1,128}?)(=(?P<value>.{0,256}))?$"
)


class TagQueryField(forms.Field):
    """Repeated ``tag`` parameters, each ``namespace:key`` or ``namespace:key=value``."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[re.Match[str]]:
        matches = []
        for raw in value or []:
            match = TAG_PATTERN.match(raw)
            if match is None:
                # The value goes in as a parameter: a "%" in it must not reach the %-formatting.
                raise forms.ValidationError(
                    "%(raw)r is not namespace:key or namespace:key=value.",
                    code="invalid",
                    params={"raw": raw},
                )
            matches.append(match)
        return matches


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class TagFilter(django_filters.Filter):
    field_class = TagQueryField

    def filter(self, qs: QuerySet[Member], value: list[re.Match[str]]) -> QuerySet[Member]:
        now = timezone.now()
        for match in value or []:
            condition = Q(member=OuterRef("pk"), namespace=match["namespace"], key=match["key"])
            condition &= Q(expires_at__isnull=True) | Q(expires_at__gt=now)
            if match["value"] is not None:
                condition &= Q(value=match["value"])
            qs = qs.filter(Exists(MemberTag.objects.filter(condition)))
        return qs


class MemberFilter(django_filters.FilterSet):
    external_id = django_filters.CharFilter()
    tier = django_filters.ModelChoiceFilter(queryset=Tier.objects.all(), to_field_name="code")
    lifecycle_stage = django_filters.ChoiceFilter(choices=LifecycleStage.choices)
    tag = TagFilter(
        help_text="namespace:key or namespace:key=value; repeat the parameter to require several."
    )
    joined_after = django_filters.IsoDateTimeFilter(field_name="joined_at", lookup_expr="gte")
    joined_before = django_filters.IsoDateTimeFilter(field_name="joined_at", lookup_expr="lt")
    search = django_filters.CharFilter(
        method="filter_search", max_length=100, help_text="external_id prefix, name or email."
    )
    is_erased = django_filters.BooleanFilter(
        field_name="erased_at", lookup_expr="isnull", exclude=True
    )

    class Meta:
        model = Member
        fields = ()

    def filter_search(self, queryset: QuerySet[Member], name: str, value: str) -> QuerySet[Member]:
        return queryset.filter(
            Q(external_id__istartswith=value)
            | Q(display_name__icontains=value)
            | Q(email__iexact=value)
        )


class ActivityEventFilter(django_filters.FilterSet):
    type = django_filters.CharFilter(max_length=64)
    source = django_filters.CharFilter(max_length=64)
    occurred_after = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    business_date = django_filters.DateFilter(help_text="A day in the program time zone.")

    class Meta:
        model = ActivityEvent
        fields = ()
