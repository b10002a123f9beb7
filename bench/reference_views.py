"""The reference the award endpoint is measured against (SPEC §5 "Performance").

A minimal DRF view doing the ledger's core write and nothing else: in one transaction, move the
account's balance and version forward with ``F()`` and append the matching earn entry. It runs
behind the same authentication, permission and throttle classes as the real API (the project
defaults, and the award endpoint's partner scope), on the same database and the same rows, so what
separates the two is the work the award endpoint adds: the Idempotency-Key record, input
validation, the member lookup, the lot, the outbox event and the re-read of the entry. It writes no
lot, so the ledger audit reports its members under I3 by design; the benchmark gives it members of
its own.
"""

from uuid import UUID

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.authentication import actor_for_user
from core.models import Scope
from members.models import Member
from rewards.models import (
    EntryKind,
    PointsAccount,
    PointsEntry,
    Reason,
    SystemAccount,
    SystemAccountBalance,
)
from rewards.services.ledger import system_account_shard


class ReferenceAwardView(APIView):
    # The award endpoint's access rules, so the permission check costs the same.
    operator_permissions = {"POST": ["rewards.award_points"]}
    partner_scopes = {"POST": Scope.POINTS_AWARD}

    def post(self, request: Request, member_id: UUID) -> Response:
        actor = actor_for_user(request.user)
        points = int(request.data["points"])
        at = timezone.now()
        with transaction.atomic(durable=True):
            # The UPDATE takes the account's row lock, so the version and balance read next are
            # this request's own and stay so until commit.
            updated = PointsAccount.objects.filter(pk=member_id).update(
                available=F("available") + points,
                lifetime_earned=F("lifetime_earned") + points,
                version=F("version") + 1,
                updated_at=at,
            )
            if updated != 1:
                raise NotFound("No points account for this member.")
            version, balance_after = (
                PointsAccount.objects.filter(pk=member_id)
                .annotate(balance=F("available") + F("pending"))
                .values_list("version", "balance")
                .get()
            )
            entry = PointsEntry.objects.create(
                member_id=member_id,
                version=version,
                kind=EntryKind.EARN,
                points=points,
                balance_after=balance_after,
                reason=Reason.PARTNER if actor.is_partner else Reason.MANUAL,
                actor=actor.label,
                counter_account=SystemAccount.ISSUANCE,
                created_at=at,
            )
            # The double-entry side (ledger invariant I5): the issuance account gives the points.
            SystemAccountBalance.objects.filter(
                account=SystemAccount.ISSUANCE, shard=system_account_shard(member_id)
            ).update(balance=F("balance") - points)
        return Response(
            {"id": entry.pk, "balance_after": balance_after}, status=status.HTTP_201_CREATED
        )


class ReferenceMeView(APIView):
    """The reference the read endpoints are measured against: the signed-in member's row, read
    with one ORM query behind the same authentication, permission and throttle classes as
    ``GET me/``, and returned as a handful of fields. What separates ``me/`` from it is the
    tier progress, balance, benefits, badges and certifications."""

    member_access = ("GET",)

    def get(self, request: Request) -> Response:
        actor = actor_for_user(request.user)
        row = (
            Member.objects.filter(pk=actor.member_id)
            .values("id", "external_id", "display_name", "tier_id", "joined_at")
            .first()
        )
        if row is None:
            raise NotFound("No such member.")
        return Response(row)
