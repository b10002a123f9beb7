"""HTTP interface of the points ledger and the daily check-in."""

from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
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
    MeRedemptionInputSerializer,
    PointsAwardSerializer,
    PointsBalanceSerializer,
    PointsDeductionSerializer,
    PointsEntrySerializer,
    PointsReversalSerializer,
    RedemptionCreateInputSerializer,
    RedemptionSerializer,
    RedemptionUpdateInputSerializer,
    RewardInputSerializer,
    RewardSerializer,
    award_batch_items_parse,
    award_parse,
)
from rewards.filters import PointsEntryFilter, RedemptionFilter
from rewards.models import PointsEntry, Reason, Redemption, RedemptionStatus, Reward
from rewards.services import catalog, certifications, earning, ledger


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
        fields = award_parse(request.data)
        if fields is None:  # something to coerce or to report: the serializer does it
            data = PointsAwardSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            fields = dict(data.validated_data)
        fields.setdefault("reason", Reason.PARTNER if actor.is_partner else Reason.MANUAL)

        def effect() -> Response:
            # Operators and partners, the only callers, may see every member: the service is
            # given the id and reads the member only when its hot path cannot serve (404, 409).
            entry = ledger.points_award(member=member_id, actor=actor, at=timezone.now(), **fields)
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
        items = award_batch_items_parse(request.data)
        if items is None:  # something to coerce or to report: the serializer does it
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
                    "entry_id": result.entry_id,
                    "balance_after": result.balance_after,
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


# --- Rewards catalog -----------------------------------------------------------------------------


def _catalog_context(view: generics.GenericAPIView) -> dict[str, Any]:
    """The time of the request and, for a member, their side of every reward's terms: read once
    per request, so ``redeemable``/``reasons`` cost no query per row."""
    at = timezone.now()
    if getattr(view, "swagger_fake_view", False):
        return {"at": at}
    actor = actor_of(view.request)
    if not actor.is_member:
        return {"at": at}
    return {
        "at": at,
        "redeemer": selectors.redeemer_state_get(member_id=actor.member_id, at=at),  # type: ignore[arg-type]
    }


def _reward_response(actor: Actor, reward_id: int, status_code: int) -> Response:
    at = timezone.now()
    reward = selectors.reward_get_for_actor(actor=actor, reward_id=reward_id, at=at)
    return Response(RewardSerializer(reward, context={"at": at}).data, status=status_code)


def _redemption_response(actor: Actor, redemption_id: UUID, status_code: int) -> Response:
    redemption = selectors.redemption_get_for_actor(actor=actor, redemption_id=redemption_id)
    return Response(RedemptionSerializer(redemption).data, status=status_code)


def _redeem(request: Request, actor: Actor, member_id: UUID, reward_id: int) -> Response:
    member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
    reward = selectors.reward_get(reward_id=reward_id)

    def effect() -> Response:
        redemption = catalog.redemption_create(
            member=member, reward=reward, actor=actor, at=timezone.now()
        )
        return _redemption_response(actor, redemption.pk, status.HTTP_201_CREATED)

    return run_idempotent(request, effect)


class RewardListView(generics.ListAPIView):
    serializer_class = RewardSerializer
    member_access = ("GET",)
    operator_permissions = {"GET": [], "POST": ["rewards.add_reward"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    def get_queryset(self) -> QuerySet[Reward]:
        if getattr(self, "swagger_fake_view", False):
            return Reward.objects.none()
        return selectors.reward_list_for_actor(actor=actor_of(self.request), at=timezone.now())

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), **_catalog_context(self)}

    @extend_schema(
        description=(
            "The catalog. Members see the active rewards not yet ended, each with `redeemable` "
            "and the `reasons` it is not (inactive, window, tier, benefit, limit, stock, "
            "points); operators and partners see every reward."
        )
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=RewardInputSerializer, responses={201: RewardSerializer})
    def post(self, request: Request) -> Response:
        actor = actor_of(request)
        data = RewardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            reward = catalog.reward_create(actor=actor, at=timezone.now(), **data.validated_data)
            return _reward_response(actor, reward.pk, status.HTTP_201_CREATED)

        return run_idempotent(request, effect)


class RewardDetailView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": [], "PATCH": ["rewards.change_reward"]}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(responses=RewardSerializer)
    def get(self, request: Request, reward_id: int) -> Response:
        actor = actor_of(request)
        at = timezone.now()
        reward = selectors.reward_get_for_actor(actor=actor, reward_id=reward_id, at=at)
        context: dict[str, Any] = {"at": at}
        if actor.is_member:
            context["redeemer"] = selectors.redeemer_state_get(member_id=actor.member_id, at=at)  # type: ignore[arg-type]
        return Response(RewardSerializer(reward, context=context).data)

    @extend_schema(request=RewardInputSerializer(partial=True), responses=RewardSerializer)
    def patch(self, request: Request, reward_id: int) -> Response:
        actor = actor_of(request)
        reward = selectors.reward_get(reward_id=reward_id)
        data = RewardInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            catalog.reward_update(
                reward=reward, actor=actor, at=timezone.now(), **data.validated_data
            )
            return _reward_response(actor, reward.pk, status.HTTP_200_OK)

        return run_idempotent(request, effect)


class RewardRedemptionCreateView(APIView):
    member_access = ("POST",)
    operator_permissions = {"POST": ["rewards.redeem_for_member"]}

    @extend_schema(
        request=RedemptionCreateInputSerializer,
        responses={201: RedemptionSerializer},
        description=(
            "Redeem the reward: its points and one item of stock are taken together, never "
            "oversold or overdrawn. A member redeems for themselves; an operator names the "
            "`member`. 409 with code out_of_stock, insufficient_points, limit_reached, "
            "not_available, tier_too_low or benefit_required. Send an Idempotency-Key."
        ),
    )
    def post(self, request: Request, reward_id: int) -> Response:
        actor = actor_of(request)
        data = RedemptionCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        member_id = data.validated_data.get("member")
        if actor.is_member:
            # Naming another member answers 404 below, as any other member's id does.
            member_id = member_id or actor.member_id
        elif member_id is None:
            raise ValidationError({"member": ["Name the member to redeem for."]})
        return _redeem(request, actor, member_id, reward_id)


class MeRewardsView(generics.ListAPIView):
    serializer_class = RewardSerializer
    member_access = ("GET",)

    def get_queryset(self) -> QuerySet[Reward]:
        if getattr(self, "swagger_fake_view", False):
            return Reward.objects.none()
        return selectors.reward_list_for_actor(actor=actor_of(self.request), at=timezone.now())

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), **_catalog_context(self)}

    @extend_schema(
        description="The rewards I can see, each with `redeemable` and the `reasons` it is not."
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class MeRedemptionsView(APIView):
    member_access = ("POST",)

    @extend_schema(
        request=MeRedemptionInputSerializer,
        responses={201: RedemptionSerializer, 404: OpenApiResponse(description="No such reward.")},
        description="Redeem a reward for myself (as POST rewards/{id}/redemptions/).",
    )
    def post(self, request: Request) -> Response:
        actor = actor_of(request)
        data = MeRedemptionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _redeem(request, actor, actor.member_id, data.validated_data["reward"])  # type: ignore[arg-type]


class RedemptionListView(generics.ListAPIView):
    serializer_class = RedemptionSerializer
    filterset_class = RedemptionFilter
    member_access = ("GET",)
    operator_permissions = {"GET": ["rewards.view_redemption"]}

    def get_queryset(self) -> QuerySet[Redemption]:
        if getattr(self, "swagger_fake_view", False):
            return Redemption.objects.none()
        return selectors.redemption_list_for_actor(actor=actor_of(self.request))


class RedemptionDetailView(APIView):
    member_access = ("GET", "PATCH")
    # Any operator reaches PATCH; the permission depends on the status asked for (below).
    operator_permissions = {"GET": ["rewards.view_redemption"], "PATCH": []}

    @extend_schema(responses=RedemptionSerializer)
    def get(self, request: Request, redemption_id: UUID) -> Response:
        return _redemption_response(actor_of(request), redemption_id, status.HTTP_200_OK)

    @extend_schema(
        request=RedemptionUpdateInputSerializer,
        responses={
            200: RedemptionSerializer,
            409: OpenApiResponse(description="already_cancelled, already_fulfilled."),
        },
        description=(
            "Fulfil (operators with rewards.fulfil_redemption) or cancel (operators with "
            "rewards.cancel_redemption, with a reason; a member their own requested "
            "redemption). Cancelling refunds the points and restores the stock exactly once; "
            "a second cancel is 409 already_cancelled."
        ),
    )
    def patch(self, request: Request, redemption_id: UUID) -> Response:
        actor = actor_of(request)
        data = RedemptionUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fulfil = data.validated_data["status"] == RedemptionStatus.FULFILLED
        # Function-level access (what this status needs) before object-level access (whose).
        if actor.is_member and fulfil:
            raise PermissionDenied("Members may only cancel their redemptions.")
        needed = "rewards.fulfil_redemption" if fulfil else "rewards.cancel_redemption"
        if actor.is_operator and not request.user.has_perm(needed):
            raise PermissionDenied()
        redemption = selectors.redemption_get_for_actor(actor=actor, redemption_id=redemption_id)

        def effect() -> Response:
            at = timezone.now()
            if fulfil:
                catalog.redemption_fulfil(redemption=redemption, actor=actor, at=at)
            else:
                catalog.redemption_cancel(
                    redemption=redemption,
                    reason=data.validated_data["reason"],
                    actor=actor,
                    at=at,
                )
            return _redemption_response(actor, redemption.pk, status.HTTP_200_OK)

        return run_idempotent(request, effect)
