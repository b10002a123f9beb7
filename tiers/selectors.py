"""Reads of the tier ladder, rule versions, tier history, nominations and reassessment jobs."""

from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from core.actors import Actor
from core.exceptions import NotFoundError
from core.models import Job
from core.read_cache import shared_document
from members.models import Member
from rewards.models import CertificationGrant
from tiers.evaluation import Requirement, Rules, TierPolicy
from tiers.models import (
    Nomination,
    RequirementPurpose,
    RuleSet,
    RuleSetStatus,
    Tier,
    TierChange,
    TierRequirement,
    TierRule,
)

REASSESSMENT_JOB = "tier_reassessment"


def tier_list() -> QuerySet[Tier]:
    """The ladder, lowest rung first."""
    return Tier.objects.order_by("rank")


# --- Rule versions ------------------------------------------------------------------------------


def rule_set_in_force(*, at: datetime) -> RuleSet | None:
    """The published version with the latest effective time not after ``at``."""
    return (
        RuleSet.objects.filter(status=RuleSetStatus.PUBLISHED, effective_at__lte=at)
        .order_by("-effective_at")
        .first()
    )


def rule_set_list() -> QuerySet[RuleSet]:
    return RuleSet.objects.prefetch_related(
        Prefetch("tier_rules", queryset=TierRule.objects.select_related("tier")),
        Prefetch("requirements", queryset=TierRequirement.objects.select_related("tier")),
    ).order_by("-version")


def rule_set_get(*, rule_set_id: int) -> RuleSet:
    try:
        return rule_set_list().get(pk=rule_set_id)
    except (RuleSet.DoesNotExist, ValueError, TypeError):
        raise NotFoundError("No tier rule set with this id.") from None


def rules_compile(*, rule_set: RuleSet | None, tiers: list[Tier] | None = None) -> Rules:
    """The pure-evaluation form of a rule version over the whole ladder.

    A tier the version has no rule for (added to the ladder after it was published) counts as
    nomination-only with no requirements: no automatic promotion into it, no demotion out of it.
    Without any version (a database before the seeding migration) every tier is like that.
    """
    tiers = tiers if tiers is not None else list(tier_list())
    tier_rules: dict[str, TierRule] = {}
    requirements: dict[tuple[str, str], list[Requirement]] = defaultdict(list)
    if rule_set is not None:
        tier_rules = {rule.tier_id: rule for rule in rule_set.tier_rules.all()}
        for row in rule_set.requirements.all():
            requirements[(row.tier_id, row.purpose)].append(
                Requirement(
                    metric=row.metric,
                    window_days=row.window_days,
                    minimum=row.minimum,
                    certification=row.certification,
                )
            )
    policies = []
    for tier in tiers:
        rule = tier_rules.get(tier.code)
        policies.append(
            TierPolicy(
                code=tier.code,
                rank=tier.rank,
                nomination_only=rule.nomination_only if rule else tier.rank > 0,
                grace_days=rule.grace_days if rule else 0,
                entry=tuple(requirements[(tier.code, RequirementPurpose.ENTRY)]),
                maintenance=tuple(requirements[(tier.code, RequirementPurpose.MAINTENANCE)]),
            )
        )
    return Rules(
        tiers=tuple(policies),
        rule_set_id=rule_set.pk if rule_set else None,
        version=rule_set.version if rule_set else None,
    )


def rules_in_force(*, at: datetime) -> Rules:
    """The compiled rule version in force at ``at``. The version in force now is shared by every
    read (``core.read_cache``; publishing or editing the catalog replaces it); another time is
    compiled afresh."""
    rules, start, end = shared_document(
        kind="rules-in-force", build=lambda: _rules_in_force_span(at=timezone.now())
    )
    if (start is None or start <= at) and (end is None or at < end):
        return rules
    return _rules_in_force_span(at=at)[0]


def _rules_in_force_span(*, at: datetime) -> tuple[Rules, datetime | None, datetime | None]:
    """The rules in force at ``at`` and the span they stay in force over: from their version's
    effective time to the next published version's (``None``: unbounded)."""
    rule_set = rule_set_in_force(at=at)
    start = rule_set.effective_at if rule_set is not None else None
    end = (
        RuleSet.objects.filter(status=RuleSetStatus.PUBLISHED, effective_at__gt=at)
        .order_by("effective_at")
        .values_list("effective_at", flat=True)
        .first()
    )
    if rule_set is not None:
        rule_set = rule_set_get(rule_set_id=rule_set.pk)
    return rules_compile(rule_set=rule_set), start, end


def ladder_list(*, at: datetime) -> tuple[list[Tier], RuleSet | None]:
    """The ladder with the rule version in force (its rules and requirements prefetched)."""
    rule_set = rule_set_in_force(at=at)
    if rule_set is not None:
        rule_set = rule_set_get(rule_set_id=rule_set.pk)
    return list(tier_list()), rule_set


# --- History ----------------------------------------------------------------------------------


def tier_history_list(*, member: Member) -> QuerySet[TierChange]:
    """The member's tier changes (callers order them; the API newest first)."""
    return TierChange.objects.filter(member=member).select_related("rule_set")


def business_day_end(day: date) -> datetime:
    """The first instant after ``day`` in the program's time zone."""
    zone = ZoneInfo(settings.LOYALTY_BUSINESS_TIME_ZONE)
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def tier_held_on(*, member: Member, day: date) -> tuple[str, datetime | None] | None:
    """The tier the member held at the end of ``day`` (program time zone) and since when, from
    the history; ``None`` before the member joined. Every member starts at the lowest tier."""
    end = business_day_end(day)
    if member.joined_at >= end:
        return None
    change = (
        TierChange.objects.filter(member=member, created_at__lt=end)
        .order_by("-created_at", "-id")
        .values_list("to_tier_id", "created_at")
        .first()
    )
    if change is not None:
        return change[0], change[1]
    lowest = tier_list().values_list("code", flat=True).first()
    return lowest, member.joined_at


# --- Nominations ------------------------------------------------------------------------------


def nomination_list(*, actor: Actor) -> QuerySet[Nomination]:
    """Nominations the actor may see: operators all, a partner the ones it made."""
    queryset = Nomination.objects.select_related("member")
    if actor.is_partner:
        return queryset.filter(nominated_by=actor.label)
    if not actor.is_operator:
        return queryset.none()
    return queryset


def nomination_get_for_actor(*, actor: Actor, nomination_id: int) -> Nomination:
    try:
        return nomination_list(actor=actor).get(pk=nomination_id)
    except (Nomination.DoesNotExist, ValueError, TypeError):
        raise NotFoundError("No nomination with this id.") from None


# --- Reassessment jobs ------------------------------------------------------------------------


def reassessment_list() -> QuerySet[Job]:
    return Job.objects.filter(kind=REASSESSMENT_JOB)


def reassessment_get(*, job_id: UUID | str) -> Job:
    try:
        return reassessment_list().get(pk=job_id)
    except (Job.DoesNotExist, ValueError, TypeError):
        raise NotFoundError("No tier reassessment with this id.") from None


def reassessment_report(*, job: Job) -> dict[str, Any]:
    """The from-to matrix and counts summed over the job's finished chunks (one query)."""
    matrix: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts: dict[str, int] = defaultdict(int)
    for result in job.chunks.filter(status="done").values_list("result", flat=True):
        for from_tier, row in result.get("matrix", {}).items():
            for to_tier, count in row.items():
                matrix[from_tier][to_tier] += count
        for name, count in result.get("counts", {}).items():
            counts[name] += count
    return {
        "matrix": {source: dict(row) for source, row in matrix.items()},
        "counts": dict(counts),
    }


def members_on_probation_due(*, member_ids: list[UUID]) -> dict[UUID, str | None]:
    """The tier each of these members returns to if their probation fails (one query)."""
    return dict(
        Nomination.objects.filter(member_id__in=member_ids, status="probation").values_list(
            "member_id", "from_tier_id"
        )
    )


def open_nomination_exists(*, member: Member) -> bool:
    return Nomination.objects.filter(
        Q(member=member) & Q(status__in=("pending", "probation"))
    ).exists()


def certifications_held(
    *, member_ids: list[UUID], codes: frozenset[str], at: datetime
) -> dict[UUID, frozenset[str]]:
    """Which of ``codes`` each member holds at ``at`` (granted, not expired, not revoked), in one
    query: what tier rules read."""
    held: dict[UUID, set[str]] = defaultdict(set)
    rows = CertificationGrant.objects.filter(
        Q(member_id__in=member_ids, certification_id__in=codes, granted_at__lte=at)
        & (Q(expires_at__isnull=True) | Q(expires_at__gt=at))
        & (Q(revoked_at__isnull=True) | Q(revoked_at__gt=at))
    ).values_list("member_id", "certification_id")
    for member_id, code in rows:
        held[member_id].add(code)
    return {member_id: frozenset(codes_held) for member_id, codes_held in held.items()}
