"""Query filters of the points entry lists."""

import django_filters

from rewards.models import EntryKind, PointsEntry, Reason


class PointsEntryFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=EntryKind.choices)
    reason = django_filters.ChoiceFilter(choices=Reason.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = PointsEntry
        fields = ()
