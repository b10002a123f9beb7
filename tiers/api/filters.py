"""Query filters of the nomination list."""

import django_filters

from tiers.models import Nomination, NominationStatus


class NominationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=NominationStatus.choices)
    member = django_filters.UUIDFilter(field_name="member_id", help_text="The member's id.")
    tier = django_filters.CharFilter(field_name="tier_id", max_length=32)

    class Meta:
        model = Nomination
        fields = ()
