"""HTTP interface of benefits and honors: the benefit catalog by tier, badges, a member's badges
and awarding one, and the public honors wall."""

from uuid import UUID

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.actors import Actor
from core.api.authentication import actor_for_user
from core.api.idempotency import run_idempotent
from core.models import Scope
from members.selectors import member_get_for_actor
from rewards import selectors
from rewards.api.serializers import (
    BadgeAwardInputSerializer,
    BadgeSerializer,
    BenefitTierSerializer,
    HonorsWallEntrySerializer,
    HonorsWallQuerySerializer,
    MemberBadgeSerializer,
)
from rewards.services import honors


def actor_of(request: Request) -> Actor:
    return actor_for_user(request.user)


class BenefitListView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": []}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(
        responses=BenefitTierSerializer(many=True),
        description=(
            "The benefit catalog: every tier, lowest first, with the benefits attached to it. "
            "The points multiplier shown is the one the earning rules apply."
        ),
    )
    def get(self, request: Request) -> Response:
        body = [
            {"code": tier.code, "name": tier.name, "rank": tier.rank, "benefits": rows}
            for tier, rows in selectors.benefit_catalog()
        ]
        return Response(BenefitTierSerializer(body, many=True).data)


class BadgeListView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": []}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(responses=BadgeSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(BadgeSerializer(selectors.badge_list(), many=True).data)


class MemberBadgesView(APIView):
    member_access = ("GET",)
    operator_permissions = {
        "GET": ["rewards.view_memberbadge"],
        "POST": ["rewards.award_badge"],
    }
    partner_scopes = {"GET": Scope.MEMBERS_READ, "POST": Scope.MEMBERS_WRITE}

    @extend_schema(responses=MemberBadgeSerializer(many=True))
    def get(self, request: Request, member_id: UUID) -> Response:
        member = member_get_for_actor(
            actor=actor_of(request), member_id=member_id, with_identities=False
        )
        badges = selectors.member_badges_list(member=member)
        return Response(MemberBadgeSerializer(badges, many=True).data)

    @extend_schema(
        request=BadgeAwardInputSerializer,
        responses={201: MemberBadgeSerializer, 200: MemberBadgeSerializer},
        description=(
            "Award a badge (manual or automatic) to the member: 201 when new, 200 with the "
            "award as it was when the member holds it already (nothing changes)."
        ),
    )
    def post(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
        data = BadgeAwardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            result = honors.badge_award(
                member=member,
                code=data.validated_data["badge"],
                reason=data.validated_data["reason"],
                actor=actor,
                at=timezone.now(),
            )
            return Response(
                MemberBadgeSerializer(result.award).data,
                status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
            )

        return run_idempotent(request, effect)


class HonorsWallView(APIView):
    """Public recognition: anyone may read it, anonymous clients within their per-address rate
    limit. Only members who opted in appear, by display name alone."""

    permission_classes = (AllowAny,)

    @extend_schema(
        parameters=[HonorsWallQuerySerializer],
        responses=HonorsWallEntrySerializer(many=True),
        description=(
            "The latest honors (badges and titles) of members who opted in to public "
            "recognition, newest first: display name, badge and when. No member ids or other "
            "personal data. Public: no credentials needed (anonymous clients are rate limited "
            "per address)."
        ),
    )
    def get(self, request: Request) -> Response:
        query = HonorsWallQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        entries = selectors.honors_wall(at=timezone.now(), limit=query.validated_data["limit"])
        return Response(HonorsWallEntrySerializer(entries, many=True).data)
