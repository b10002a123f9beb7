"""Query filters of the points entry lists."""

import django_filters

from rewards.models import EntryKind, PointsEntry, Reason, Redemption, RedemptionStatus


class PointsEntryFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=EntryKind.choices)
    reason = django_filters.ChoiceFilter(choices=Reason.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = PointsEntry
        fields = ()


class RedemptionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RedemptionStatus.choices)
    member = django_filters.UUIDFilter(field_name="member_id")
    reward = django_filters.NumberFilter(field_name="reward_id")

    class Meta:
        model = Redemption
        fields = ()
