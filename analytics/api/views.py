"""HTTP interface of the analytics: each view validates its query, calls one selector and renders
the result. Operators need ``analytics.view_analytics``; partners the ``analytics:read`` scope;
members may not call them."""

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.api.serializers import (
    AnalyticsFunnelQuerySerializer,
    AnalyticsFunnelSerializer,
    AnalyticsHealthSerializer,
    AnalyticsPointsFlowSerializer,
    AnalyticsRetentionQuerySerializer,
    AnalyticsRetentionSerializer,
    AnalyticsTierDistributionSerializer,
    AnalyticsTierMovementSerializer,
    AnalyticsWeeksQuerySerializer,
)
from analytics.selectors import (
    funnel,
    health,
    points_flow_weekly,
    retention,
    tier_distribution,
    tier_movement_weekly,
)
from core.api.serializers import StrictInputSerializer
from core.models import Scope
from rewards.services.earning import business_date_of

_DEFINITIONS = " Definitions: README, Analytics."


class AnalyticsAccess:
    operator_permissions: dict[str, Any] = {"GET": ["analytics.view_analytics"]}
    partner_scopes: dict[str, Any] = {"GET": Scope.ANALYTICS_READ}
    member_access: tuple[str, ...] = ()


def _query(serializer_class: type[StrictInputSerializer], request: Request, **context: Any) -> Any:
    query = serializer_class(data=request.query_params, context=context)
    query.is_valid(raise_exception=True)
    return query.validated_data


class AnalyticsTierDistributionView(AnalyticsAccess, APIView):
    @extend_schema(
        responses=AnalyticsTierDistributionSerializer,
        description="Members (not erased) per current tier, with their share, the share a "
        "healthy community expects and the gap." + _DEFINITIONS,
    )
    def get(self, request: Request) -> Response:
        _query(StrictInputSerializer, request)
        result = tier_distribution(at=timezone.now())
        return Response(AnalyticsTierDistributionSerializer(result).data)


class AnalyticsFunnelView(AnalyticsAccess, APIView):
    @extend_schema(
        parameters=[AnalyticsFunnelQuerySerializer],
        responses=AnalyticsFunnelSerializer,
        description="The nested funnel registered -> first interaction -> regular participation "
        "-> paid conversion -> KOC of the members who joined in the date range (program time "
        "zone, inclusive; default the last 90 days), with step conversion and the share lost "
        "within 72 hours of the first interaction. A reversed or too long range is a 400."
        + _DEFINITIONS,
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        params = _query(AnalyticsFunnelQuerySerializer, request, today=business_date_of(now))
        result = funnel(at=now, **params)
        return Response(AnalyticsFunnelSerializer(result).data)


class AnalyticsRetentionView(AnalyticsAccess, APIView):
    @extend_schema(
        parameters=[AnalyticsRetentionQuerySerializer],
        responses=AnalyticsRetentionSerializer,
        description="Weekly cohort retention: for each join week (Monday, program time zone), "
        "the share of the cohort active in each later week begun so far." + _DEFINITIONS,
    )
    def get(self, request: Request) -> Response:
        params = _query(AnalyticsRetentionQuerySerializer, request)
        result = retention(at=timezone.now(), **params)
        return Response(AnalyticsRetentionSerializer(result).data)


class AnalyticsHealthView(AnalyticsAccess, APIView):
    @extend_schema(
        responses=AnalyticsHealthSerializer,
        description="The community health index of the last complete week: post density and its "
        "week-over-week change, shares per day, silent and dormant counts, members silent 30 "
        "days, and the alerts whose thresholds are crossed." + _DEFINITIONS,
    )
    def get(self, request: Request) -> Response:
        _query(StrictInputSerializer, request)
        result = health(at=timezone.now())
        return Response(AnalyticsHealthSerializer(result).data)


class AnalyticsTierMovementView(AnalyticsAccess, APIView):
    @extend_schema(
        parameters=[AnalyticsWeeksQuerySerializer],
        responses=AnalyticsTierMovementSerializer(many=True),
        description="Promotions and demotions per week, oldest first." + _DEFINITIONS,
    )
    def get(self, request: Request) -> Response:
        params = _query(AnalyticsWeeksQuerySerializer, request)
        result = tier_movement_weekly(at=timezone.now(), **params)
        return Response(AnalyticsTierMovementSerializer(result, many=True).data)


class AnalyticsPointsFlowView(AnalyticsAccess, APIView):
    @extend_schema(
        parameters=[AnalyticsWeeksQuerySerializer],
        responses=AnalyticsPointsFlowSerializer(many=True),
        description="Points issued (earned), redeemed and expired per week, oldest first."
        + _DEFINITIONS,
    )
    def get(self, request: Request) -> Response:
        params = _query(AnalyticsWeeksQuerySerializer, request)
        result = points_flow_weekly(at=timezone.now(), **params)
        return Response(AnalyticsPointsFlowSerializer(result, many=True).data)
