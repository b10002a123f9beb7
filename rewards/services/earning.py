"""Earning rules applied to activity, and the daily check-in.

One definition decides the points of an event (``earning_decide``: rule, tier multiplier floored,
minimum tier, hourly velocity, daily cap). ``events_award_batch`` applies it to a batch of events
set-based (a fixed number of queries for 1 or 1,000 events); ``award_for_event`` is the same path
for one event. Both run inside the caller's transaction, so an event is never counted without its
points or the other way round, and both hold the members' account locks while they read the
counters the limits need, so caps and velocity are exact under concurrency.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F

from core.actors import Actor
from core.db import InArray, is_postgres, require_transaction
from core.read_cache import member_reads_changed
from members.models import ActivityEvent, Member
from rewards.locks import points_accounts_lock
from rewards.models import (
    CheckIn,
    DailyEarning,
    EarningRule,
    EntryKind,
    PointsAccount,
    PointsEntry,
    Reason,
)
from rewards.services.honors import CHECKIN_STREAK, badges_award_automatic
from rewards.services.ledger import AwardSpec, credits_post

CHECKIN_EVENT = "checkin"
PURCHASE_EVENT = "purchase"
# Ingested events are referenced ``event:<source>:<event id>``; other awards for activity (the
# daily check-in) are referenced ``<event type>:...``.
EVENT_REFERENCE_PREFIX = "event:"


class AwardOutcome(StrEnum):
    AWARDED = "awarded"
    CAPPED = "capped"  # the daily cap left nothing
    VELOCITY_LIMITED = "velocity_limited"
    BELOW_MIN_TIER = "below_min_tier"
    NO_RULE = "no_rule"
    ZERO_POINTS = "zero_points"
    DUPLICATE = "duplicate"


# Outcomes decided by the rule and the tier alone: no lock and no counter is needed for them.
_STATIC_OUTCOMES = frozenset(
    {AwardOutcome.NO_RULE, AwardOutcome.BELOW_MIN_TIER, AwardOutcome.ZERO_POINTS}
)


@dataclass(frozen=True, slots=True)
class EventAward:
    outcome: AwardOutcome
    points: int = 0
    entry_id: int | None = None  # the entry that posted the points


@dataclass(frozen=True, slots=True)
class EarningDecision:
    outcome: AwardOutcome
    points: int = 0


@dataclass(frozen=True, slots=True)
class EventForAward:
    """One event to apply the earning rules to. ``reference`` names it uniquely."""

    member_id: UUID
    event_type: str
    reference: str
    occurred_at: datetime
    amount: Decimal | None = None


def business_date_of(at: datetime) -> date:
    """The calendar day in the program's time zone (Asia/Shanghai by default)."""
    return at.astimezone(ZoneInfo(settings.LOYALTY_BUSINESS_TIME_ZONE)).date()


def event_points(*, rule: EarningRule, multiplier: Decimal, amount: Decimal | None) -> int:
    """Points for one event before the cap: per event or per whole currency unit, times the
    tier's multiplier, floored to whole points."""
    base = rule.points * (math.floor(amount) if rule.per_currency_unit and amount else 1)
    if rule.per_currency_unit and not amount:
        return 0
    return math.floor(Decimal(base) * multiplier)


def earning_decide(
    *,
    rule: EarningRule | None,
    tier_rank: int,
    min_tier_rank: int | None,
    multiplier: Decimal,
    amount: Decimal | None,
    max_points: int,
    earned_today: int = 0,
    awarded_last_hour: int = 0,
) -> EarningDecision:
    """The points one event earns (pure): the rule's points times the multiplier (floored, at
    most ``max_points``), nothing below the rule's minimum tier, nothing once the member had
    ``hourly_limit`` awards of the type in the last hour, and clamped to what is left of the daily
    cap given ``earned_today`` (points of this rule on the event's business day)."""
    if rule is None:
        return EarningDecision(AwardOutcome.NO_RULE)
    if min_tier_rank is not None and tier_rank < min_tier_rank:
        return EarningDecision(AwardOutcome.BELOW_MIN_TIER)
    points = min(event_points(rule=rule, multiplier=multiplier, amount=amount), max_points)
    if points <= 0:
        return EarningDecision(AwardOutcome.ZERO_POINTS)
    if rule.hourly_limit is not None and awarded_last_hour >= rule.hourly_limit:
        return EarningDecision(AwardOutcome.VELOCITY_LIMITED)
    if rule.daily_cap is not None:
        points = min(points, rule.daily_cap - earned_today)
        if points <= 0:
            return EarningDecision(AwardOutcome.CAPPED)
    return EarningDecision(AwardOutcome.AWARDED, points)


def award_for_event(
    *,
    member: Member,
    event_type: str,
    reference: str,
    actor: Actor,
    at: datetime,
    amount: Decimal | None = None,
) -> EventAward:
    """Apply the earning rule of ``event_type`` to one event of the member, happening at ``at``.

    ``reference`` names the event uniquely (e.g. ``checkin:<member>:<date>``): a second award for
    the same reference is ``duplicate`` and posts nothing. Daily caps clamp the last award to what
    is left of the cap. Must run inside the caller's transaction (the event and its points commit
    together).
    """
    require_transaction()
    item = EventForAward(member.pk, event_type, reference, occurred_at=at, amount=amount)
    return events_award_batch(items=[item], actor=actor, at=at)[0]


def events_award_batch(
    *,
    items: Sequence[EventForAward],
    actor: Actor,
    at: datetime,
    accounts: Mapping[UUID, PointsAccount] | None = None,
) -> list[EventAward]:
    """Apply the earning rules to many events received at ``at``, set-based.

    Each member's events are decided in ``occurred_at`` order; daily caps count per business day
    of the event, velocity per hour of receipt (awards of the type received in the last hour).
    Points are credited as lots expiring after the rule's lifetime, pending for its
    ``pending_days``. ``accounts`` are the members' accounts when the caller has locked them
    already (``rewards.locks.points_accounts_lock``); otherwise they are locked here. A fixed
    number of queries whatever the batch size. Must run inside the caller's transaction.
    """
    require_transaction()
    results: list[EventAward | None] = [None] * len(items)
    rules = {
        rule.event_type: rule
        for rule in EarningRule.objects.filter(
            event_type__in={item.event_type for item in items}, is_active=True
        ).select_related("min_tier")
    }
    tiers = {
        member_id: (rank, multiplier)
        for member_id, rank, multiplier in Member.objects.filter(
            InArray(F("pk"), [item.member_id for item in items])
        ).values_list("pk", "tier__rank", "tier__points_multiplier")
    }
    max_points = settings.LOYALTY_POINTS_MAX_AWARD

    def decide(item: EventForAward, earned_today: int = 0, last_hour: int = 0) -> EarningDecision:
        rule = rules.get(item.event_type)
        rank, multiplier = tiers[item.member_id]
        return earning_decide(
            rule=rule,
            tier_rank=rank,
            min_tier_rank=rule.min_tier.rank if rule and rule.min_tier else None,
            multiplier=multiplier,
            amount=item.amount,
            max_points=max_points,
            earned_today=earned_today,
            awarded_last_hour=last_hour,
        )

    eligible: list[int] = []
    for position, item in enumerate(items):
        decision = decide(item)
        if decision.outcome in _STATIC_OUTCOMES:
            results[position] = EventAward(decision.outcome)
        else:
            eligible.append(position)
    if not eligible:
        return [result for result in results if result is not None]

    member_ids = sorted({items[position].member_id for position in eligible})
    if accounts is None:
        # The account locks serialise each member's awards: counters read below stay exact.
        accounts = points_accounts_lock(member_ids=member_ids, at=at)
    references = [items[position].reference for position in eligible]
    awarded_before = set(
        PointsEntry.objects.filter(kind=EntryKind.EARN)
        .filter(InArray(F("reference"), references))
        .values_list("reference", flat=True)
    )
    limited_types = {
        item.event_type
        for item in (items[position] for position in eligible)
        if rules[item.event_type].hourly_limit is not None
    }
    last_hour = _recent_award_counts(
        member_ids=member_ids, event_types=limited_types, since=at - timedelta(hours=1)
    )
    daily = _daily_earnings(
        member_ids=member_ids,
        event_types={items[position].event_type for position in eligible},
        business_dates={business_date_of(items[position].occurred_at) for position in eligible},
    )

    credits: list[tuple[int, AwardSpec]] = []  # (position, spec), posted together below
    touched_days: set[tuple[UUID, str, date]] = set()
    for position in sorted(eligible, key=lambda p: (items[p].occurred_at, p)):
        item = items[position]
        if item.reference in awarded_before:
            results[position] = EventAward(AwardOutcome.DUPLICATE)
            continue
        day = (item.member_id, item.event_type, business_date_of(item.occurred_at))
        hour = (item.member_id, item.event_type)
        decision = decide(item, earned_today=daily[day][0], last_hour=last_hour[hour])
        if decision.outcome is not AwardOutcome.AWARDED:
            results[position] = EventAward(decision.outcome)
            continue
        awarded_before.add(item.reference)
        rule = rules[item.event_type]
        spec = AwardSpec(
            member_id=item.member_id,
            points=decision.points,
            reason=_reason_for(item.event_type),
            reference=item.reference,
            expires_at=at + timedelta(days=rule.expiry_days or settings.LOYALTY_POINTS_EXPIRY_DAYS),
            pending_until=at + timedelta(days=rule.pending_days) if rule.pending_days else None,
        )
        credits.append((position, spec))
        points_so_far, awards_so_far = daily[day]
        daily[day] = (points_so_far + decision.points, awards_so_far + 1)
        last_hour[hour] += 1
        touched_days.add(day)

    if credits:
        posted = credits_post(
            accounts=accounts, specs=[spec for _, spec in credits], actor=actor, at=at
        )
        for (position, spec), (entry_id, _) in zip(credits, posted, strict=True):
            results[position] = EventAward(AwardOutcome.AWARDED, spec.points, entry_id)
        _daily_earnings_save({day: daily[day] for day in touched_days})
    return [result for result in results if result is not None]


def _recent_award_counts(
    *, member_ids: Sequence[UUID], event_types: set[str], since: datetime
) -> Counter[tuple[UUID, str]]:
    """Awards per (member, event type) received after ``since``: ingested events that earned
    points, plus direct awards for activity (referenced ``<event type>:...``)."""
    counts: Counter[tuple[UUID, str]] = Counter()
    if not event_types:
        return counts
    awarded_events = (
        ActivityEvent.objects.filter(
            InArray(F("member_id"), member_ids),
            type__in=event_types,
            points_awarded__gt=0,
            received_at__gt=since,
        )
        .values_list("member_id", "type")
        .annotate(awards=Count("pk"))
        .order_by()
    )
    for member_id, event_type, awards in awarded_events:
        counts[member_id, event_type] += awards
    direct = PointsEntry.objects.filter(
        InArray(F("member_id"), member_ids),
        kind=EntryKind.EARN,
        reason__in=(Reason.CHECKIN, Reason.EVENT, Reason.PURCHASE),
        created_at__gt=since,
    ).exclude(reference__startswith=EVENT_REFERENCE_PREFIX)
    for member_id, reference in direct.values_list("member_id", "reference"):
        event_type = reference.partition(":")[0]
        if event_type in event_types:
            counts[member_id, event_type] += 1
    return counts


def _daily_earnings(
    *, member_ids: Sequence[UUID], event_types: set[str], business_dates: set[date]
) -> defaultdict[tuple[UUID, str, date], tuple[int, int]]:
    """(points, awards) per (member, event type, business day); a missing day is (0, 0)."""
    rows = DailyEarning.objects.filter(
        InArray(F("member_id"), member_ids),
        event_type__in=event_types,
        business_date__in=business_dates,
    ).values_list("member_id", "event_type", "business_date", "points", "awards_count")
    daily: defaultdict[tuple[UUID, str, date], tuple[int, int]] = defaultdict(lambda: (0, 0))
    for member_id, event_type, day, points, awards in rows:
        daily[member_id, event_type, day] = (points, awards)
    return daily


def _daily_earnings_save(totals: dict[tuple[UUID, str, date], tuple[int, int]]) -> None:
    """Write the daily counters' new totals in one upsert (exact: read under the account locks)."""
    if is_postgres():
        keys = list(totals)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {DailyEarning._meta.db_table} (member_id, event_type, "  # noqa: S608 - names from the model
                "business_date, points, awards_count) SELECT * FROM unnest(%b::uuid[], "
                "%b::text[], %b::date[], %b::bigint[], %b::int[]) "
                "ON CONFLICT (member_id, event_type, business_date) DO UPDATE "
                "SET points = EXCLUDED.points, awards_count = EXCLUDED.awards_count",
                [
                    [member_id for member_id, _, _ in keys],
                    [event_type for _, event_type, _ in keys],
                    [day for _, _, day in keys],
                    [totals[key][0] for key in keys],
                    [totals[key][1] for key in keys],
                ],
            )
        return
    DailyEarning.objects.bulk_create(
        [
            DailyEarning(
                member_id=member_id,
                event_type=event_type,
                business_date=day,
                points=points,
                awards_count=awards,
            )
            for (member_id, event_type, day), (points, awards) in totals.items()
        ],
        update_conflicts=True,
        unique_fields=("member", "event_type", "business_date"),
        update_fields=("points", "awards_count"),
    )


def _reason_for(event_type: str) -> str:
    if event_type == CHECKIN_EVENT:
        return Reason.CHECKIN
    if event_type == PURCHASE_EVENT:
        return Reason.PURCHASE
    return Reason.EVENT


@dataclass(frozen=True, slots=True)
class CheckInResult:
    check_in: CheckIn
    created: bool


@transaction.atomic
def checkin_create(*, member: Member, actor: Actor, at: datetime) -> CheckInResult:
    """Check the member in for today (business time zone). A repeat the same day returns the
    same check-in and awards nothing, also under concurrent calls (unique per member and day).
    The check-in counts as an interaction in the member's daily activity and lifecycle."""
    today = business_date_of(at)
    existing = CheckIn.objects.filter(member=member, business_date=today).first()
    if existing is not None:
        return CheckInResult(existing, created=False)
    yesterday = (
        CheckIn.objects.filter(member=member, business_date=today - timedelta(days=1))
        .values_list("streak", flat=True)
        .first()
    )
    try:
        with transaction.atomic():
            check_in = CheckIn.objects.create(
                member=member, business_date=today, streak=(yesterday or 0) + 1, created_at=at
            )
    except IntegrityError:  # a concurrent call for the same day won
        return CheckInResult(CheckIn.objects.get(member=member, business_date=today), created=False)
    member_reads_changed([member.pk])  # the check-in streak is a tier metric
    award = award_for_event(
        member=member,
        event_type=CHECKIN_EVENT,
        reference=f"{CHECKIN_EVENT}:{member.pk}:{today.isoformat()}",
        actor=actor,
        at=at,
    )
    if award.entry_id is not None:
        check_in.points_awarded = award.points
        check_in.entry_id = award.entry_id
        check_in.save(update_fields=("points_awarded", "entry"))
    # Imported here because members.activity imports this module (ingestion earns through it).
    from members.activity import checkin_activity_record

    checkin_activity_record(member_id=member.pk, at=at, points=award.points)
    badges_award_automatic(member_ids=[member.pk], at=at, rule_kinds=(CHECKIN_STREAK,))
    return CheckInResult(check_in, created=True)
