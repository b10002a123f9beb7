"""Reads of the tier ladder."""

from django.db.models import QuerySet

from tiers.models import Tier


def tier_list() -> QuerySet[Tier]:
    """The ladder, lowest rung first."""
    return Tier.objects.order_by("rank")
