"""HTTP interface of the tier engine: the ladder, a member's tier, history and promotions,
nominations, rule versions, population reassessments and simulations. Each handler parses its
input, calls the tier services or selectors and renders the result."""

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.actors import Actor
from core.api.authentication import actor_for_user
from core.api.idempotency import run_idempotent
from core.api.pagination import CreatedCursorPagination
from core.api.serializers import EmptyInputSerializer
from core.exceptions import NotFoundError
from core.models import Job, Scope
from core.read_cache import member_document
from members.models import Member
from members.selectors import member_get_for_actor
from rewards.selectors import rung_extras
from rewards.services.earning import business_date_of
from tiers.api.filters import NominationFilter
from tiers.api.serializers import (
    MemberTierQuerySerializer,
    MemberTierSerializer,
    NominationCreateSerializer,
    NominationReviewSerializer,
    NominationSerializer,
    TierChangeSerializer,
    TierLadderSerializer,
    TierPromotionSerializer,
    TierReassessmentCreateSerializer,
    TierReassessmentSerializer,
    TierRuleSetCreateSerializer,
    TierRuleSetPublicationSerializer,
    TierRuleSetSerializer,
    TierRuleSetUpdateSerializer,
    TierSimulationResultSerializer,
    TierSimulationSerializer,
    tier_rules_from,
)
from tiers.models import Nomination, RuleSet, TierChange
from tiers.selectors import (
    ladder_list,
    nomination_get_for_actor,
    nomination_list,
    reassessment_get,
    reassessment_list,
    reassessment_report,
    rule_set_get,
    rule_set_list,
    rules_compile,
    rules_in_force,
    tier_held_on,
    tier_history_list,
)
from tiers.services.assessment import member_tier_standing
from tiers.services.promotions import (
    nomination_create,
    nomination_review,
    nomination_withdraw,
    tier_promote,
)
from tiers.services.reassessment import reassessment_request, tier_simulation_run
from tiers.services.rules import (
    rule_set_delete,
    rule_set_draft_create,
    rule_set_draft_update,
    rule_set_publish,
)


class MemberReadAccess:
    """A member's tier is read like the member: the member themselves, operators who may view
    members, partners with members:read."""

    member_access = ("GET",)
    operator_permissions: dict[str, Any] = {"GET": ["members.view_member"]}
    partner_scopes: dict[str, Any] = {"GET": Scope.MEMBERS_READ}


def actor_of(request: Request) -> Actor:
    return actor_for_user(request.user)


def _with_location(request: Request, response: Response, url_name: str, kwarg: str) -> Response:
    """Point a 201/202 (first response or replay) at the created resource."""
    if response.status_code in (status.HTTP_201_CREATED, status.HTTP_202_ACCEPTED):
        path = reverse(f"v1:{url_name}", kwargs={kwarg: response.data["id"]})
        response["Location"] = request.build_absolute_uri(path)
    return response


# --- The ladder ---------------------------------------------------------------------------------


class TierListView(APIView):
    member_access = ("GET",)
    operator_permissions = {"GET": []}
    partner_scopes = {"GET": Scope.MEMBERS_READ}

    @extend_schema(
        responses=TierLadderSerializer,
        description=(
            "The whole ladder, lowest rung first, each tier with the rules of the version in "
            "force: nomination-only flag, grace days, entry and maintenance requirements, and "
            "the rung's benefits and honors."
        ),
    )
    def get(self, request: Request) -> Response:
        tiers, rule_set = ladder_list(at=timezone.now())
        rules = rules_compile(rule_set=rule_set, tiers=tiers)
        body = TierLadderSerializer.body(
            tiers=tiers, rule_set=rule_set, rules=rules, extras=rung_extras()
        )
        return Response(TierLadderSerializer(body).data)


# --- A member's tier, history and promotions ----------------------------------------------------

_MEMBER_TIER_DESCRIPTION = (
    "The member's tier now: since when, pin, grace and probation dates, progress to the next "
    "tier (each entry requirement with required and current value) and what it takes to keep "
    "the current tier, under the rule version in force. With `at` (a date, program time zone, "
    "not in the future) it is the tier held at the end of that day from the history: `as_of`, "
    "`tier` and `since` are set and the progress fields are empty. A date before the member "
    "joined is a 400 (`before_joined`)."
)


def _member_tier_response(
    request: Request, member_id: UUID, get_member: Callable[[], Member]
) -> Response:
    """The tier now (the cached document: ``core.read_cache``) or held at the end of ``at``.
    ``get_member`` raises 404 for a member the actor may not see; it runs before any cached
    document is shown to an actor whose sight is limited to themselves."""
    day = None
    if request.query_params:  # most reads ask for the tier now: no parameters to parse
        query = MemberTierQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        day = query.validated_data.get("at")
    actor = actor_of(request)
    if day is None:
        if actor.is_member and actor.member_id != member_id:
            get_member()

        def build() -> dict[str, Any]:
            member, now = get_member(), timezone.now()
            standing = member_tier_standing(member=member, rules=rules_in_force(at=now), at=now)
            return dict(MemberTierSerializer(MemberTierSerializer.body(standing)).data)

        return Response(member_document(kind="tier", member_id=member_id, build=build))
    member = get_member()
    if day > business_date_of(timezone.now()):
        raise ValidationError({"at": ["Must not be in the future."]}, code="in_future")
    held = tier_held_on(member=member, day=day)
    if held is None:
        raise ValidationError(
            {"at": ["The member had not joined by the end of this day."]}, code="before_joined"
        )
    body = MemberTierSerializer.held_body(member=member, day=day, tier=held[0], since=held[1])
    return Response(MemberTierSerializer(body).data)


class MemberTierView(MemberReadAccess, APIView):
    @extend_schema(
        parameters=[MemberTierQuerySerializer],
        responses=MemberTierSerializer,
        description=_MEMBER_TIER_DESCRIPTION,
    )
    def get(self, request: Request, member_id: UUID) -> Response:
        return _member_tier_response(
            request,
            member_id,
            lambda: member_get_for_actor(
                actor=actor_of(request), member_id=member_id, with_identities=False
            ),
        )


class MeTierView(APIView):
    member_access = ("GET",)

    @extend_schema(
        parameters=[MemberTierQuerySerializer],
        responses=MemberTierSerializer,
        description="The signed-in member's own tier. " + _MEMBER_TIER_DESCRIPTION,
    )
    def get(self, request: Request) -> Response:
        actor = actor_of(request)
        return _member_tier_response(
            request,
            actor.member_id,  # type: ignore[arg-type]
            lambda: member_get_for_actor(
                actor=actor,
                member_id=actor.member_id,  # type: ignore[arg-type]
                with_identities=False,
            ),
        )


class MemberTierHistoryView(MemberReadAccess, generics.ListAPIView):
    """Every change of the member's tier, newest first, with why."""

    serializer_class = TierChangeSerializer

    def get_queryset(self) -> QuerySet[TierChange]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no member
            return TierChange.objects.none()
        member = member_get_for_actor(
            actor=actor_of(self.request), member_id=self.kwargs["member_id"], with_identities=False
        )
        return tier_history_list(member=member)


class MemberPromotionView(APIView):
    operator_permissions = {"POST": ["tiers.promote_member"]}

    @extend_schema(
        request=TierPromotionSerializer,
        responses={201: TierChangeSerializer},
        description=(
            "An operator sets the member's tier, up or down, with a reason; `pin_days` pins it: "
            "reassessment never demotes below a pinned tier until the pin ends. 409 while the "
            "member is on a nomination's probation, or when the tier is already held and no pin "
            "is given."
        ),
    )
    def post(self, request: Request, member_id: UUID) -> Response:
        actor = actor_of(request)
        member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
        data = TierPromotionSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            change = tier_promote(
                member=member, actor=actor, at=timezone.now(), **data.validated_data
            )
            return Response(TierChangeSerializer(change).data, status=status.HTTP_201_CREATED)

        return run_idempotent(request, effect)


# --- Nominations --------------------------------------------------------------------------------


def _nomination_response(actor: Actor, nomination_id: int, status_code: int = 200) -> Response:
    """Re-read through the selector (with the member) before rendering."""
    nomination = nomination_get_for_actor(actor=actor, nomination_id=nomination_id)
    return Response(NominationSerializer(nomination).data, status=status_code)


def _nominee(actor: Actor, member_id: UUID) -> Member:
    try:
        member = member_get_for_actor(actor=actor, member_id=member_id, with_identities=False)
    except NotFoundError:
        member = None
    if member is None or member.is_erased:
        raise ValidationError({"member": ["No member with this id."]}, code="unknown_member")
    return member


class NominationListCreateView(generics.ListAPIView):
    serializer_class = NominationSerializer
    filterset_class = NominationFilter
    operator_permissions = {"GET": ["tiers.view_nomination"], "POST": ["tiers.add_nomination"]}
    # A partner nominates with members:write and sees only the nominations it made.
    partner_scopes = {"GET": Scope.MEMBERS_WRITE, "POST": Scope.MEMBERS_WRITE}

    def get_queryset(self) -> QuerySet[Nomination]:
        if getattr(self, "swagger_fake_view", False):
            return Nomination.objects.none()
        return nomination_list(actor=actor_of(self.request))

    @extend_schema(
        request=NominationCreateSerializer,
        responses={201: NominationSerializer},
        description=(
            "Nominate a member into a nomination-only tier above theirs, with evidence. One open "
            "nomination per member (409 `nomination_open`)."
        ),
    )
    def post(self, request: Request) -> Response:
        actor = actor_of(request)
        data = NominationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        member = _nominee(actor, fields.pop("member"))

        def effect() -> Response:
            nomination = nomination_create(member=member, actor=actor, at=timezone.now(), **fields)
            return _nomination_response(actor, nomination.pk, status.HTTP_201_CREATED)

        response = run_idempotent(request, effect)
        return _with_location(request, response, "nomination-detail", "nomination_id")


class NominationDetailView(APIView):
    operator_permissions = {"GET": ["tiers.view_nomination"]}
    partner_scopes = {"GET": Scope.MEMBERS_WRITE}

    @extend_schema(responses=NominationSerializer)
    def get(self, request: Request, nomination_id: int) -> Response:
        return _nomination_response(actor_of(request), nomination_id)


class NominationReviewView(APIView):
    operator_permissions = {"POST": ["tiers.change_nomination"]}

    @extend_schema(
        request=NominationReviewSerializer,
        responses=NominationSerializer,
        description=(
            "Approve (the member moves into the tier at once, on probation; the reassessment "
            "job confirms or rolls it back when the probation ends) or reject a pending "
            "nomination. 409 when it is not pending."
        ),
    )
    def post(self, request: Request, nomination_id: int) -> Response:
        actor = actor_of(request)
        nomination = nomination_get_for_actor(actor=actor, nomination_id=nomination_id)
        data = NominationReviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            nomination_review(
                nomination=nomination,
                approve=data.validated_data["decision"] == "approve",
                note=data.validated_data["note"],
                probation_days=data.validated_data["probation_days"],
                actor=actor,
                at=timezone.now(),
            )
            return _nomination_response(actor, nomination.pk)

        return run_idempotent(request, effect)


class NominationWithdrawalView(APIView):
    operator_permissions = {"POST": ["tiers.change_nomination"]}
    partner_scopes = {"POST": Scope.MEMBERS_WRITE}

    @extend_schema(
        request=EmptyInputSerializer,
        responses=NominationSerializer,
        description=(
            "Withdraw a nomination awaiting review: its nominator (a partner, its own only) or "
            "an operator. 409 when it is not pending."
        ),
    )
    def post(self, request: Request, nomination_id: int) -> Response:
        actor = actor_of(request)
        nomination = nomination_get_for_actor(actor=actor, nomination_id=nomination_id)
        EmptyInputSerializer(data=request.data).is_valid(raise_exception=True)

        def effect() -> Response:
            nomination_withdraw(nomination=nomination, actor=actor, at=timezone.now())
            return _nomination_response(actor, nomination.pk)

        return run_idempotent(request, effect)


# --- Rule versions ------------------------------------------------------------------------------


class RuleSetCursorPagination(CreatedCursorPagination):
    ordering = ("-version",)


class TierRuleSetListCreateView(generics.ListAPIView):
    serializer_class = TierRuleSetSerializer
    pagination_class = RuleSetCursorPagination
    operator_permissions = {"GET": ["tiers.view_ruleset"], "POST": ["tiers.add_ruleset"]}

    def get_queryset(self) -> QuerySet[RuleSet]:
        return rule_set_list()

    @extend_schema(
        request=TierRuleSetCreateSerializer,
        responses={201: TierRuleSetSerializer},
        description=(
            "Draft a new rule version: a copy of `based_on` (default: the version in force), or "
            "the rules given in `tiers`. Invalid rules are a 400 listing every problem (unknown "
            "metric or tier, negative minimum, window out of range, maintenance stricter than "
            "entry, a tier without a rule)."
        ),
    )
    def post(self, request: Request) -> Response:
        actor = actor_of(request)
        data = TierRuleSetCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        tiers = fields.pop("tiers", None)
        tier_rules = tier_rules_from(tiers) if tiers is not None else None

        def effect() -> Response:
            rule_set = rule_set_draft_create(
                actor=actor, at=timezone.now(), tier_rules=tier_rules, **fields
            )
            return Response(TierRuleSetSerializer(rule_set).data, status=status.HTTP_201_CREATED)

        response = run_idempotent(request, effect)
        return _with_location(request, response, "tier-rule-set-detail", "rule_set_id")


class TierRuleSetDetailView(APIView):
    operator_permissions = {
        "GET": ["tiers.view_ruleset"],
        "PATCH": ["tiers.change_ruleset"],
        "DELETE": ["tiers.delete_ruleset"],
    }

    @extend_schema(responses=TierRuleSetSerializer)
    def get(self, request: Request, rule_set_id: int) -> Response:
        return Response(TierRuleSetSerializer(rule_set_get(rule_set_id=rule_set_id)).data)

    @extend_schema(
        request=TierRuleSetUpdateSerializer,
        responses=TierRuleSetSerializer,
        description=(
            "Edit a draft: its name, note and (when `tiers` is given) all of its tier rules at "
            "once. 409 `rule_set_published` for a published version."
        ),
    )
    def patch(self, request: Request, rule_set_id: int) -> Response:
        rule_set = rule_set_get(rule_set_id=rule_set_id)
        data = TierRuleSetUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        tiers = fields.pop("tiers", None)
        rule_set = rule_set_draft_update(
            rule_set=rule_set,
            actor=actor_of(request),
            tier_rules=tier_rules_from(tiers) if tiers is not None else None,
            **fields,
        )
        return Response(TierRuleSetSerializer(rule_set).data)

    @extend_schema(
        responses={204: None},
        description="Delete a draft; 409 `rule_set_published` for a published version.",
    )
    def delete(self, request: Request, rule_set_id: int) -> Response:
        rule_set_delete(rule_set=rule_set_get(rule_set_id=rule_set_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TierRuleSetPublicationView(APIView):
    operator_permissions = {"POST": ["tiers.publish_ruleset"]}

    @extend_schema(
        request=TierRuleSetPublicationSerializer,
        responses=TierRuleSetSerializer,
        description=(
            "Publish a draft: from `effective_at` (default now, never in the past) it is the "
            "version in force. The rules are checked again (400 listing every problem); 409 "
            "when it is published already or another version takes effect at the same instant."
        ),
    )
    def post(self, request: Request, rule_set_id: int) -> Response:
        actor = actor_of(request)
        rule_set = rule_set_get(rule_set_id=rule_set_id)
        data = TierRuleSetPublicationSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def effect() -> Response:
            published = rule_set_publish(
                rule_set=rule_set,
                effective_at=data.validated_data["effective_at"],
                actor=actor,
                at=timezone.now(),
            )
            return Response(TierRuleSetSerializer(published).data)

        return run_idempotent(request, effect)


# --- Reassessment and simulation ------------------------------------------------------------------


class TierReassessmentListCreateView(generics.ListAPIView):
    serializer_class = TierReassessmentSerializer
    operator_permissions = {
        "GET": ["tiers.view_tierchange"],
        "POST": ["tiers.run_reassessment"],
    }

    def get_queryset(self) -> QuerySet[Job]:
        return reassessment_list()

    @extend_schema(
        request=TierReassessmentCreateSerializer,
        responses={202: TierReassessmentSerializer},
        description=(
            "Start a reassessment of the whole population now, under the rules in force, as a "
            "background job (chunks shared by the workers). 202 with the job; follow Location "
            "for progress, counts and the from-to matrix. 409 `reassessment_running` while "
            "another one is pending or running."
        ),
    )
    def post(self, request: Request) -> Response:
        actor = actor_of(request)
        TierReassessmentCreateSerializer(data=request.data).is_valid(raise_exception=True)

        def effect() -> Response:
            job, _ = reassessment_request(actor=actor, at=timezone.now())
            return Response(TierReassessmentSerializer(job).data, status=status.HTTP_202_ACCEPTED)

        response = run_idempotent(request, effect)
        return _with_location(request, response, "tier-reassessment-detail", "job_id")


class TierReassessmentDetailView(APIView):
    operator_permissions = {"GET": ["tiers.view_tierchange"]}

    @extend_schema(responses=TierReassessmentSerializer)
    def get(self, request: Request, job_id: UUID) -> Response:
        job = reassessment_get(job_id=job_id)
        context: dict[str, Any] = {"report": reassessment_report(job=job)}
        return Response(TierReassessmentSerializer(job, context=context).data)


class TierSimulationView(APIView):
    operator_permissions = {"POST": ["tiers.view_ruleset"]}

    @extend_schema(
        request=TierSimulationSerializer,
        responses=TierSimulationResultSerializer,
        description=(
            "What would happen if `rule_set` (typically a draft) were in force now: the from-to "
            "matrix over the whole population and sample members per cell, by the "
            "reassessment's own code path. Changes nothing (an Idempotency-Key is accepted and "
            "not needed). One simulation at a time: 409 `simulation_running`."
        ),
    )
    def post(self, request: Request) -> Response:
        data = TierSimulationSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = tier_simulation_run(
            rule_set_id=data.validated_data["rule_set"].pk,
            at=timezone.now(),
            sample_size=data.validated_data["sample_size"],
        )
        return Response(
            TierSimulationResultSerializer(TierSimulationResultSerializer.body(result)).data
        )
