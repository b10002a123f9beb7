"""HTTP interface of the points ledger and the daily check-in."""

from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
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
    AwardBatchResponseSerializer,
    AwardBatchSerializer,
    CertificationGrantInputSerializer,
    CertificationGrantSerializer,
    CertificationRevokeInputSerializer,
    CertificationSerializer,
    CheckInSerializer,
    PointsAwardSerializer,
    PointsBalanceSerializer,
    PointsDeductionSerializer,
    PointsEntrySerializer,
    PointsReversalSerializer,
)
from rewards.filters import PointsEntryFilter
from rewards.models import PointsEntry, Reason
from rewards.services import certifications, earning, ledger


def actor_of(request: Request) -> Actor:
    return actor_for_user(request.user)


def _entry_response(entry_id: int, status_code: int = status.HTTP_201_CREATED) -> Response:
    entry = selectors.points_entries_list_by_ids(entry_ids=[entry_id])[0]
    return Response(PointsEntrySerializer(entry).data, status=status_code)


def _balance_response(member_id: UUID) -> Response:
    balance = selectors.points_balance_get(member_id=member_id, at=timezone.now())
    return Response(PointsBalanceSerializer(balance).data)


class MemberPointsView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": ["rewards.view_pointsentry"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(responses=PointsBalanceSerializer)
    def get(self, request: Request, member_id: UUID) -> Response:
        member = member_get_for_actor(
            actor=actor_of(request), member_id=member_id, with_identities=False
        )
        return _balance_response(member.pk)


class MemberPointsEntriesView(generics.ListAPIView):
    serializer_class = PointsEntrySerializer
    filterset_class = PointsEntryFilter
    member_access = ("GET",)
    operator_permissions = {"GET": ["rewards.view_pointsentry"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    def get_queryset(self) -> QuerySet[PointsEntry]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no member
            return PointsEntry.objects.none()
        member = member_get_for_actor(
            actor=actor_of(self.request), member_id=self.kwargs["member_id"], with_identities=False
        )
        return selectors.points_entries_list(member_id=member.pk)


class MemberPointsAwardView(APIView):
    operator_permissions = {"POST": ["rewards.award_points"]}
    partner_scopes = {"POST": Scope.POINTS_AWARD}

    @extend_schema(request=PointsAwardSerializer, responses={201: PointsEntrySerializer})
    def post(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
        data = PointsAwardSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields.setdefault("reason", Reason.PARTNER if actor.is_partner else Reason.MANUAL)

        def effect() -> Response:
            entry = ledger.points_award(member=member, actor=actor, at=timezone.now(), **fields)
            # The service returns the entry with its lot: nothing to read back (hot path).
            return Response(PointsEntrySerializer(entry).data, status=status.HTTP_201_CREATED)

        return run_idempotent(request, effect)


class MemberPointsDeductionView(APIView):
    operator_permissions = {"POST": ["rewards.deduct_points"]}

    @extend_schema(request=PointsDeductionSerializer, responses={201: PointsEntrySerializer})
    def post(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
        data = PointsDeductionSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            entry = ledger.points_deduct(
                member=member, actor=actor, at=timezone.now(), **data.validated_data
            )
            return _entry_response(entry.pk)

        return run_idempotent(request, effect)


class PointsEntryReversalView(APIView):
    operator_permissions = {"POST": ["rewards.reverse_points"]}
    partner_scopes = {"POST": Scope.POINTS_AWARD}

    @extend_schema(
        request=PointsReversalSerializer,
        responses={201: PointsEntrySerializer},
        description=(
            "Reverse an entry once. Reversing an earn (a refunded purchase, pending or not) takes "
            "the points back even when they were spent, into a negative balance that blocks "
            "spending until repaid. A partner may reverse only entries it created."
        ),
    )
    def post(self, request: Request, entry_id: int) -> Response:
        actor = actor_of(request)
        entry = selectors.points_entry_get_for_actor(actor=actor, entry_id=entry_id)
        data = PointsReversalSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            reversal = ledger.points_reverse(
                entry=entry, actor=actor, at=timezone.now(), **data.validated_data
            )
            return _entry_response(reversal.pk)

        return run_idempotent(request, effect)


class PointsAwardBatchView(APIView):
    operator_permissions = {"POST": ["rewards.award_points"]}
    partner_scopes = {"POST": Scope.POINTS_AWARD}

    @extend_schema(
        request=AwardBatchSerializer,
        responses=AwardBatchResponseSerializer,
        description=(
            "Award up to 1,000 members in one request. The batch is one transaction: every "
            "accepted item lands together, set-based. Per item: accepted (with its entry), "
            "duplicate (its idempotency_key was used before) or rejected (unknown member)."
        ),
    )
    def post(self, request: Request) -> Response:
        actor = actor_of(request)
        data = AwardBatchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        items = data.validated_data["items"]
        default_reason = Reason.PARTNER if actor.is_partner else Reason.MANUAL

        def effect() -> Response:
            results = ledger.points_award_batch_by_external_id(
                items=[
                    ledger.ExternalAward(
                        external_id=item["external_id"],
                        points=item["points"],
                        reason=item.get("reason") or default_reason,
                        note=item["note"],
                        expires_at=item["expires_at"],
                        pending_until=item["pending_until"],
                        idempotency_key=item["idempotency_key"],
                    )
                    for item in items
                ],
                actor=actor,
                at=timezone.now(),
            )
            body = [
                {
                    "external_id": item["external_id"],
                    "status": result.status,
                    "entry_id": result.entry.pk if result.entry else None,
                    "balance_after": result.entry.balance_after if result.entry else None,
                    "errors": result.errors,
                }
                for item, result in zip(items, results, strict=True)
            ]
            return Response({"results": body})

        return run_idempotent(request, effect)


class MePointsView(APIView):
    member_access = ("GET",)

    @extend_schema(responses=PointsBalanceSerializer)
    def get(self, request: Request) -> Response:
        return _balance_response(actor_of(request).member_id)  # type: ignore[arg-type]


class MePointsEntriesView(generics.ListAPIView):
    serializer_class = PointsEntrySerializer
    filterset_class = PointsEntryFilter
    member_access = ("GET",)

    def get_queryset(self) -> QuerySet[PointsEntry]:
        if getattr(self, "swagger_fake_view", False):
            return PointsEntry.objects.none()
        return selectors.points_entries_list(member_id=actor_of(self.request).member_id)  # type: ignore[arg-type]


class MeCheckInView(APIView):
    member_access = ("POST",)

    @extend_schema(
        request=None,
        responses={201: CheckInSerializer, 200: CheckInSerializer},
        description=(
            "Check in for today (program time zone). The first call of the day awards the "
            "check-in points (201); a repeat the same day returns the same check-in (200)."
        ),
    )
    def post(self, request: Request) -> Response:
        actor = actor_of(request)
        member = member_get_for_actor(actor=actor, member_id=actor.member_id, with_identities=False)  # type: ignore[arg-type]

        def effect() -> Response:
            result = earning.checkin_create(member=member, actor=actor, at=timezone.now())
            code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
            return Response(CheckInSerializer(result.check_in).data, status=code)

        return run_idempotent(request, effect)


# --- Certifications ------------------------------------------------------------------------------


class CertificationListView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": []}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(responses=CertificationSerializer(many=True))
    def get(self, request: Request) -> Response:
        rows = selectors.certification_list(at=timezone.now())
        return Response(CertificationSerializer(rows, many=True).data)


class MemberCertificationsView(APIView):
    member_access = ("GET",)
    operator_permissions = {
        "GET": ["rewards.view_certificationgrant"],
        "POST": ["rewards.grant_certification"],
    }
    partner_scopes = {"GET": Scope.MEMBERS_READ, "POST": Scope.MEMBERS_WRITE}

    @extend_schema(responses=CertificationGrantSerializer(many=True))
    def get(self, request: Request, member_id: UUID) -> Response:
        member = member_get_for_actor(
            actor=actor_of(request), member_id=member_id, with_identities=False
        )
        grants = selectors.member_certifications_list(member=member, at=timezone.now())
        return Response(CertificationGrantSerializer(grants, many=True).data)

    @extend_schema(
        request=CertificationGrantInputSerializer,
        responses={201: CertificationGrantSerializer, 200: CertificationGrantSerializer},
        description=(
            "Certify a member (prerequisites must be held). Granting a held certification "
            "again re-certifies it: 200 with the extended validity. The member's tier is "
            "reassessed after the grant."
        ),
    )
    def post(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
        data = CertificationGrantInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data

        def effect() -> Response:
            at = timezone.now()
            result = certifications.certification_grant(
                member=member,
                code=fields["certification"],
                evidence=fields["evidence"],
                expires_at=fields["expires_at"],
                actor=actor,
                at=at,
            )
            grant = selectors.member_certification_get(
                member=member, code=result.grant.certification_id, at=at
            )
            return Response(
                CertificationGrantSerializer(grant).data,
                status=status.HTTP_200_OK if result.renewed else status.HTTP_201_CREATED,
            )

        return run_idempotent(request, effect)


class MemberCertificationView(APIView):
    operator_permissions = {"DELETE": ["rewards.revoke_certification"]}
    partner_scopes = {"DELETE": Scope.MEMBERS_WRITE}

    @extend_schema(
        request=CertificationRevokeInputSerializer,
        responses={200: CertificationGrantSerializer},
        description="Revoke a held certification, with a reason (in the body).",
    )
    def delete(self, request: Request, member_id: UUID, code: str) -> Response:
        actor = actor_of(request)
        member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
        data = CertificationRevokeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            at = timezone.now()
            certifications.certification_revoke(
                member=member, code=code, reason=data.validated_data["reason"], actor=actor, at=at
            )
            grant = selectors.member_certification_get(member=member, code=code, at=at)
            return Response(CertificationGrantSerializer(grant).data)

        return run_idempotent(request, effect)
