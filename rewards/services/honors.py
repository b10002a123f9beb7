"""Honors and benefits: awarding badges (by hand, idempotent; automatically by rule, set-based)
and editing a tier's benefits.

An award is one row per (member, badge): ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` writes
it at most once whatever the concurrency, and only the insert that wrote it records the
``badge.awarded`` event. Automatic awards are decided for a set of members with one query per
kind of rule (first post from the daily rollups, check-in streaks, tiers reached, certifications
held), never one per member.
"""

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max

from core.actors import Actor, system_actor
from core.db import chunked, require_transaction
from core.events import DomainEvent, domain_events_record
from core.exceptions import InvalidInputError
from core.read_cache import member_reads_changed
from members.exceptions import MemberErasedError
from members.models import Member, MemberDailyActivity
from rewards.models import Badge, BadgeKind, Benefit, BenefitKind, CheckIn, MemberBadge
from tiers.models import Tier, TierChange
from tiers.selectors import certifications_held

FIRST_POST = "first_post"
CHECKIN_STREAK = "checkin_streak"
REACHED_TIER = "reached_tier"
CERTIFICATION = "certification"
RULE_KINDS = (FIRST_POST, CHECKIN_STREAK, REACHED_TIER, CERTIFICATION)
BADGE_AWARDED_EVENT = "badge.awarded"
AUTOMATIC_ACTOR = system_actor("badges")
# Rows per INSERT statement: 5 parameters each stays far below SQLite's variable limit.
_INSERT_BATCH = 500


# --- Rules (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadgeRule:
    """A parsed automatic rule: ``kind`` with its tier or certification code, or streak days."""

    kind: str
    code: str = ""
    days: int = 0


def badge_rule_parse(rule: str) -> BadgeRule:
    """Read ``first_post``, ``checkin_streak_<days>``, ``reached_tier:<tier>`` or
    ``certification:<code>``.

    :raises ValueError: for anything else.
    """
    if rule == FIRST_POST:
        return BadgeRule(FIRST_POST)
    prefix = f"{CHECKIN_STREAK}_"
    if rule.startswith(prefix) and rule[len(prefix) :].isdigit():
        days = int(rule[len(prefix) :])
        if days >= 1:
            return BadgeRule(CHECKIN_STREAK, days=days)
    kind, separator, code = rule.partition(":")
    if separator and kind in (REACHED_TIER, CERTIFICATION) and code and code.strip() == code:
        return BadgeRule(kind, code=code)
    raise ValueError(
        f"Unknown badge rule {rule!r}: use first_post, checkin_streak_<days>, "
        "reached_tier:<tier code> or certification:<code>."
    )


# --- Awards -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadgeAwardResult:
    award: MemberBadge
    created: bool


def badge_award(
    *, member: Member, code: str, actor: Actor, at: datetime, reason: str = ""
) -> BadgeAwardResult:
    """Award an active badge (manual or automatic) to a member. Idempotent: a badge already held
    is returned as it is (``created`` false) and nothing is recorded again.

    :raises InvalidInputError: no active badge with this code.
    :raises MemberErasedError: the member is erased.
    """
    badge = Badge.objects.filter(pk=code, is_active=True).first()
    if badge is None:
        raise InvalidInputError(
            f"No active badge {code!r}.",
            errors=[{"attr": "badge", "code": "unknown", "detail": code}],
        )
    if member.is_erased:
        raise MemberErasedError("An erased member cannot be awarded a badge.")
    with transaction.atomic():
        written = _awards_insert(
            [(member.pk, badge.code, reason.strip()[:500])], awarded_by=actor.label, at=at
        )
        if written:
            domain_events_record(
                events=[_awarded_event(member.pk, member.external_id, badge, at)], at=at
            )
    award = MemberBadge.objects.select_related("badge").get(member=member, badge=badge)
    return BadgeAwardResult(award=award, created=bool(written))


def _automatic_rules(*, rule_kinds: Collection[str] | None) -> list[tuple[Badge, BadgeRule]]:
    """The active automatic badges (of ``rule_kinds``, default all) with their parsed rules."""
    rules: list[tuple[Badge, BadgeRule]] = []
    for badge in Badge.objects.filter(kind=BadgeKind.AUTOMATIC, is_active=True).order_by("code"):
        try:
            rule = badge_rule_parse(badge.rule)
        except ValueError:  # the admin validates rules; a bad one awards nothing
            continue
        if rule_kinds is None or rule.kind in rule_kinds:
            rules.append((badge, rule))
    return rules


def reached_tier_badges() -> list[tuple[Badge, int]]:
    """The active ``reached_tier`` badges and the rank each asks for (tiers that exist): what
    the population job's SQL awards alongside its tier changes."""
    ranks = dict(Tier.objects.values_list("code", "rank"))
    return [
        (badge, ranks[rule.code])
        for badge, rule in _automatic_rules(rule_kinds=(REACHED_TIER,))
        if rule.code in ranks
    ]


def badges_award_automatic(
    *, member_ids: Collection[UUID], at: datetime, rule_kinds: Collection[str] | None = None
) -> int:
    """Award every active automatic badge (of ``rule_kinds``, default all) that these members
    qualify for and do not hold yet; erased members are left out. Set-based: one query per kind
    of rule in use, one for the badges held, one insert per 500 awards. Runs in the caller's
    transaction. Returns the number of new awards."""
    require_transaction()
    if not member_ids:
        return 0
    rules = _automatic_rules(rule_kinds=rule_kinds)
    if not rules:
        return 0
    members = {
        member_id: (external_id, rank)
        for member_id, external_id, rank in Member.objects.filter(
            pk__in=list(member_ids), erased_at__isnull=True
        ).values_list("pk", "external_id", "tier__rank")
    }
    if not members:
        return 0
    qualified = _qualified(members=members, rules=rules, at=at)
    if not qualified:
        return 0
    held = set(
        MemberBadge.objects.filter(
            member_id__in=list({member_id for member_id, _ in qualified}),
            badge_id__in=[badge.code for badge, _ in rules],
        ).values_list("member_id", "badge_id")
    )
    badges = {badge.code: (badge, rule) for badge, rule in rules}
    rows = [
        (member_id, code, f"rule {badges[code][1].kind}")
        for member_id, code in sorted(qualified - held, key=lambda pair: (str(pair[0]), pair[1]))
    ]
    written = _awards_insert(rows, awarded_by=AUTOMATIC_ACTOR.label, at=at) if rows else []
    if written:
        domain_events_record(
            events=[
                _awarded_event(member_id, members[member_id][0], badges[code][0], at)
                for member_id, code in written
            ],
            at=at,
        )
    return len(written)


def _qualified(
    *,
    members: dict[UUID, tuple[str, int]],
    rules: Sequence[tuple[Badge, BadgeRule]],
    at: datetime,
) -> set[tuple[UUID, str]]:
    """(member, badge) pairs whose rule holds at ``at``: one query per kind of rule."""
    member_ids = list(members)
    kinds = {rule.kind for _, rule in rules}
    posted: set[UUID] = set()
    best_streak: dict[UUID, int] = {}
    best_rank: dict[UUID, int] = {}
    tier_ranks: dict[str, int] = {}
    held: dict[UUID, frozenset[str]] = {}
    if FIRST_POST in kinds:
        posted = set(
            MemberDailyActivity.objects.filter(member_id__in=member_ids, posts__gt=0)
            .order_by()
            .values_list("member_id", flat=True)
            .distinct()
        )
    if CHECKIN_STREAK in kinds:
        best_streak = dict(
            CheckIn.objects.filter(member_id__in=member_ids, created_at__lte=at)
            .order_by()
            .values("member_id")
            .annotate(best=Max("streak"))
            .values_list("member_id", "best")
        )
    if REACHED_TIER in kinds:
        tier_ranks = dict(Tier.objects.values_list("code", "rank"))
        # The highest tier ever held: the current one, or one the history shows.
        best_rank = {member_id: rank for member_id, (_, rank) in members.items()}
        history = (
            TierChange.objects.filter(member_id__in=member_ids, created_at__lte=at)
            .order_by()
            .values("member_id")
            .annotate(best=Max("to_tier__rank"))
            .values_list("member_id", "best")
        )
        for member_id, rank in history:
            best_rank[member_id] = max(best_rank.get(member_id, 0), rank)
    if CERTIFICATION in kinds:
        codes = frozenset(rule.code for _, rule in rules if rule.kind == CERTIFICATION)
        held = certifications_held(member_ids=member_ids, codes=codes, at=at)
    qualified: set[tuple[UUID, str]] = set()
    for badge, rule in rules:
        if rule.kind == FIRST_POST:
            qualified.update((member_id, badge.code) for member_id in posted)
        elif rule.kind == CHECKIN_STREAK:
            qualified.update(
                (member_id, badge.code)
                for member_id, streak in best_streak.items()
                if streak >= rule.days
            )
        elif rule.kind == REACHED_TIER and rule.code in tier_ranks:
            target = tier_ranks[rule.code]
            qualified.update(
                (member_id, badge.code) for member_id, rank in best_rank.items() if rank >= target
            )
        elif rule.kind == CERTIFICATION:
            qualified.update(
                (member_id, badge.code)
                for member_id, codes_held in held.items()
                if rule.code in codes_held
            )
    return qualified


def badges_award_catch_up(
    *, at: datetime, chunk_size: int | None = None, progress: Callable[[int], None] | None = None
) -> int:
    """The daily job: award the automatic badges every member qualifies for (a missed hook, a
    new badge, a first post). Members in primary-key chunks, each chunk its own transaction, so
    a rerun after a crash only redoes what is missing. Returns the number of new awards."""
    chunk_size = chunk_size or settings.LOYALTY_JOB_CHUNK_SIZE
    awarded = 0
    last: UUID | None = None
    while True:
        members = Member.objects.filter(erased_at__isnull=True)
        if last is not None:
            members = members.filter(pk__gt=last)
        member_ids = list(members.order_by("pk").values_list("pk", flat=True)[:chunk_size])
        if not member_ids:
            return awarded
        with transaction.atomic():
            awarded += badges_award_automatic(member_ids=member_ids, at=at)
        last = member_ids[-1]
        if progress:
            progress(len(member_ids))


def _awards_insert(
    rows: Sequence[tuple[UUID, str, str]], *, awarded_by: str, at: datetime
) -> list[tuple[UUID, str]]:
    """Insert (member, badge, reason) awards, skipping those held; returns the ones written.

    ``ON CONFLICT DO NOTHING`` on the (member, badge) constraint makes a concurrent award of the
    same badge wait for the first and then write nothing; ``RETURNING`` says which rows are new,
    so each award's event is recorded by exactly one writer.
    """
    table = connection.ops.quote_name(MemberBadge._meta.db_table)
    member_pk = Member._meta.pk
    assert member_pk is not None  # noqa: S101 - every model has a primary key
    stamp = connection.ops.adapt_datetimefield_value(at)
    written: list[tuple[UUID, str]] = []
    for batch in chunked(rows, _INSERT_BATCH):
        params: list[Any] = []
        for member_id, code, reason in batch:
            params.extend(
                [
                    member_pk.get_db_prep_value(member_id, connection),
                    code,
                    stamp,
                    awarded_by,
                    reason,
                ]
            )
        values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(batch))
        sql = (
            f"INSERT INTO {table} (member_id, badge_id, awarded_at, awarded_by, reason) "  # noqa: S608 - model table name
            f"VALUES {values} ON CONFLICT (member_id, badge_id) DO NOTHING "
            "RETURNING member_id, badge_id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            written.extend(
                (member_pk.to_python(member), code) for member, code in cursor.fetchall()
            )
    member_reads_changed([member_id for member_id, _ in written])
    return written


def _awarded_event(member_id: UUID, external_id: str, badge: Badge, at: datetime) -> DomainEvent:
    return DomainEvent(
        BADGE_AWARDED_EVENT,
        str(member_id),
        {
            "member_id": str(member_id),
            "external_id": external_id,
            "badge": badge.code,
            "name": badge.name,
            "is_title": badge.is_title,
            "awarded_at": at.isoformat(),
        },
        at,
        dedupe_key=f"{member_id}:{badge.code}:{at.isoformat()}",
    )


# --- Benefits ---------------------------------------------------------------------------------


def benefit_save(
    *, benefit: Benefit, points_multiplier: Decimal | None, actor: Actor, at: datetime
) -> Benefit:
    """Create or update a benefit. A points multiplier stores no value of its own: the
    ``points_multiplier`` given is written to its tier, the number the earning rules read, so the
    benefit members see and the points they earn cannot disagree.

    :raises InvalidInputError: a multiplier without its number (or below 1), a number on another
        kind, or hiding a multiplier that still pays more than 1.00.
    """
    is_multiplier = benefit.kind == BenefitKind.POINTS_MULTIPLIER
    if is_multiplier and (points_multiplier is None or points_multiplier < 1):
        raise InvalidInputError(
            "A points multiplier needs the multiplier (1.00 or more).",
            errors=[{"attr": "points_multiplier", "code": "required", "detail": "At least 1."}],
        )
    if not is_multiplier and points_multiplier is not None:
        raise InvalidInputError(
            "Only a points multiplier benefit sets the tier's multiplier.",
            errors=[{"attr": "points_multiplier", "code": "not_allowed", "detail": benefit.kind}],
        )
    if is_multiplier and not benefit.is_active and points_multiplier != 1:
        raise InvalidInputError(
            "Members earn the multiplier whether it is shown or not: set it to 1.00 to end it.",
            errors=[{"attr": "is_active", "code": "multiplier_in_force", "detail": ""}],
        )
    if is_multiplier:
        # The value lives on the tier (the earning hot path reads it there).
        benefit.value = None
        benefit.exclusive_to_tier = True
    with transaction.atomic():
        if is_multiplier:
            Tier.objects.filter(pk=benefit.tier_id).update(points_multiplier=points_multiplier)
        if benefit._state.adding:
            benefit.created_at = at
        benefit.updated_at = at
        benefit.save()
    return benefit
