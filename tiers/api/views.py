"""The tier ladder, readable by every signed-in client."""

from django.db.models import QuerySet
from rest_framework import generics

from core.models import Scope
from tiers.api.serializers import TierSerializer
from tiers.models import Tier
from tiers.selectors import tier_list


class TierListView(generics.ListAPIView):
    serializer_class = TierSerializer
    pagination_class = None
    member_access = ("GET",)
    operator_permissions = {"GET": []}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    def get_queryset(self) -> QuerySet[Tier]:
        return tier_list()
